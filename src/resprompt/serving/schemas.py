"""The HTTP API's request and response bodies (pydantic v2), as OpenAPI documents them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    prompt: str = Field(min_length=1, max_length=128, description="Name of a served prompt (GET /v1/prompts).",
                        examples=["rte"])
    inputs: list[dict[str, Any]] = Field(min_length=1, description="Records in the prompt's task format, "
                                         "as `resprompt predict` reads them (labels optional, ignored).",
                                         examples=[[{"premise": "It rained.", "hypothesis": "The street is wet."}]])


class Prediction(BaseModel):
    """Classification prompts give ``label`` and ``scores``; generation prompts give ``text``."""

    label: str | None = Field(None, description="Classification: the label with the highest score.")
    scores: dict[str, float] | None = Field(None, description="Classification: the prompt's head output "
                                            "(logit) for every label.")
    text: str | None = Field(None, description="Generation: the generated text.")


class PredictResponse(BaseModel):
    prompt: str
    predictions: list[Prediction] = Field(description="One per input, in order.")


class PromptInfo(BaseModel):
    name: str
    kind: str = Field(description="Task kind: classification (or generation).")
    task: str
    labels: list[str]
    n: int = Field(description="Prompt length n (soft-prompt tokens).")
    num_tokens: int = Field(description="The same as n (the name of the saved config's field).")
    backbone: str
    format: str = Field(description="resprompt or peft.")
    placement: str
    pooling: str | None = None


class PromptList(BaseModel):
    prompts: list[PromptInfo]


class Health(BaseModel):
    status: str
    prompts: int


class ReloadReport(BaseModel):
    served: list[str]
    added: list[str]
    reloaded: list[str]
    removed: list[str]
    skipped: dict[str, str] = Field(description="Folder name -> why it is not served.")


class Error(BaseModel):
    detail: str = Field(description="What was wrong with the request.")
