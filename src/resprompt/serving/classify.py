"""Serving classification prompts: a record -> its rows; rows -> label + per-label scores.

A record becomes model inputs exactly as ``resprompt predict`` makes them: ``task.instances``,
``features.featurize`` (truncated to ``min(max_length, model.max_text_length)``) and
``features.collate``. A prediction is ``{"label": <the best label>, "scores": {label: score}}``.

- encoders: the scores are the prompt's head outputs; rows of any mix of prompts go through one
  backbone forward (``mixed.encoder_logits``), ``max_batch_size`` rows at a time, longest first;
- decoder language models: the scores are each label verbalisation's mean token log-likelihood,
  computed from each prompt's KV prefix (``decoder_scoring``).

Served: tasks that turn one record into one instance (BoolQ, CB, RTE, WiC, WSC, AX-b, AX-g and the
user's own); choice tasks (COPA, ReCoRD) and MultiRC expand a record into several instances and are
refused at load, as are classification prompts on seq2seq backbones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..tasks.features import Feature, collate, featurize
from ..tasks.records import DataError
from ..tasks.superglue import ClassTask, task_from_metadata
from .config import RegistryOptions
from .decoder_scoring import DecoderRow, PrefixCache, decoder_row, score_rows
from .mixed import encoder_logits
from .prompts import LoadedPrompt, PromptSkipped


@dataclass(frozen=True)
class ClassRow:
    """One record of one prompt, tokenised."""

    prompt: LoadedPrompt
    feature: Feature

    @property
    def length(self) -> int:
        return len(self.feature.input_ids) + self.prompt.model.num_tokens


def head_outputs(model) -> int | None:
    """How many outputs the prompt's head has (its last linear layer's), or None."""
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


class ClassificationHandler:
    """Task kind ``classification``: checks at load, prepares records, runs mixed batches."""

    kind = "classification"

    def __init__(self) -> None:
        self.prefix = PrefixCache()  # decoder prompts: prompt -> its KV prefix, built once

    def task_for(self, meta: dict, where: str):
        try:
            task = task_from_metadata(meta, where)
        except DataError as e:
            raise PromptSkipped(str(e)) from None
        if meta.get("labels") is not None and list(meta["labels"]) != list(task.labels):
            raise PromptSkipped(f"{where}: the prompt was trained with labels {meta['labels']}; task {task.name} "
                                f"has labels {list(task.labels)}")
        return task

    def check(self, prompt: LoadedPrompt) -> None:
        model, task = prompt.model, prompt.task
        decoder_lm = model.family == "decoder" and model.head_kind is None
        if not decoder_lm and (model.family != "encoder" or model.head_kind != "ForSequenceClassification"):
            raise PromptSkipped(f"{prompt.path}: classification is served on encoder sequence classifiers and on "
                                f"decoder language models; this backbone is a {model.family} "
                                f"({type(model.backbone).__name__})")
        if not isinstance(task, ClassTask) or task.is_choice:
            raise PromptSkipped(f"{prompt.path}: task {task.name} turns one record into several rows (choices or "
                                "answers); the server answers one label per record and serves one-row tasks only")
        if decoder_lm:
            return  # labels are scored as verbalisations: no head
        outputs = head_outputs(model)
        if outputs != task.num_labels:
            raise PromptSkipped(f"{prompt.path}: the prompt's head has {outputs} outputs but task {task.name} has "
                                f"{task.num_labels} labels {list(task.labels)}")

    def prepare(self, prompt: LoadedPrompt, record: dict, where: str, options: RegistryOptions) -> ClassRow:
        """The record as one row; DataError naming ``where`` for a bad record (or, strict, a long one)."""
        model = prompt.model
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        record = {**record, "__file__": "request", "__line__": where}
        (instance,) = prompt.task.instances([record], model.family, "request")
        max_len = min(options.max_length, model.max_text_length)
        if model.family == "decoder":
            row = decoder_row(prompt, instance, max_len)
            if options.strict_length and decoder_row(prompt, instance, 10**9).length > row.length:
                raise DataError(f"request:{where}: the text is longer than the {max_len} tokens this prompt takes "
                                "(the server runs with --strict-length)")
            return row
        if options.strict_length:
            full = len(model.tokenizer(instance.text_a, instance.text_b)["input_ids"])
            if full > max_len:
                raise DataError(f"request:{where}: the text has {full} tokens, more than the {max_len} this prompt "
                                "takes (the server runs with --strict-length)")
        (feature,) = featurize([instance], model.tokenizer, model.family, max_len, train=False)
        return ClassRow(prompt, feature)

    def run(self, rows: Sequence[ClassRow | DecoderRow], options: RegistryOptions) -> list[dict]:
        """Predictions for ``rows``, in order (encoder rows and decoder rows each batched together)."""
        out: list[dict | None] = [None] * len(rows)
        enc = [i for i, r in enumerate(rows) if isinstance(r, ClassRow)]
        for chunk in _chunks([rows[i] for i in enc], options):
            for k, prediction in zip(chunk, _forward([rows[enc[k]] for k in chunk])):
                out[enc[k]] = prediction
        by: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if isinstance(r, DecoderRow):
                by.setdefault(id(r.prompt) if options.group_by_prompt else 0, []).append(i)
        for group in by.values():
            for i, scores in zip(group, score_rows([rows[i] for i in group], self.prefix, options.max_batch_size)):
                out[i] = _prediction(rows[i].prompt.task.labels, torch.tensor([scores[c] for c in range(len(scores))]))
        return out


def _chunks(rows: Sequence[ClassRow], options: RegistryOptions) -> list[list[int]]:
    """Row indices per forward: longest first, ``max_batch_size`` at a time (per prompt if grouped)."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i].length)
    groups = [order]
    if options.group_by_prompt:
        by_prompt: dict[int, list[int]] = {}
        for i in order:
            by_prompt.setdefault(id(rows[i].prompt), []).append(i)
        groups = list(by_prompt.values())
    size = options.max_batch_size
    return [g[s: s + size] for g in groups for s in range(0, len(g), size)]


def _forward(rows: Sequence[ClassRow]) -> list[dict]:
    """One backbone forward over ``rows`` (any mix of prompts on one backbone)."""
    parts: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        parts.setdefault(id(row.prompt), []).append(i)
    batches = []
    for idx in parts.values():
        model = rows[idx[0]].prompt.model
        pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        batch = collate([rows[i].feature for i in idx], pad, "encoder")
        device = model.backbone.get_input_embeddings().weight.device
        batches.append((model, {k: v.to(device) for k, v in batch.items()
                                if k in ("input_ids", "attention_mask", "token_type_ids")}))
    out: list[dict | None] = [None] * len(rows)
    for idx, logits in zip(parts.values(), encoder_logits(batches)):
        logits = logits.float().cpu()  # one copy per prompt, not one per value
        for row, i in enumerate(idx):
            out[i] = _prediction(rows[i].prompt.task.labels, logits[row])
    return out


def _prediction(labels: Sequence[str], logits) -> dict:
    return {"label": labels[int(logits.argmax())], "scores": {lab: float(v) for lab, v in zip(labels, logits)}}
