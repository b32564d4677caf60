"""A task prepared for one run: its data tokenised for one backbone, how to batch it, how to score a prompt.

``TrainTask`` is what the training loop needs of a task; ``PreparedTask`` implements it for the
label-set tasks (SuperGLUE, a user's classification data). A generative task implements the same
five members and trains with the same loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .evaluation import evaluate
from .features import Feature, collate, featurize


class TrainTask(Protocol):
    """What ``training.trainer`` uses of a task.

    - ``name``: shown in logs and results.
    - ``train_features``: one item per training row; ``lengths()`` gives their token counts.
    - ``collate(items, pad_to)``: a batch dict with at least ``input_ids`` and ``attention_mask``
      [B, T] and ``labels``; extra keys the model takes (``token_type_ids``) pass through.
    - ``evaluate(model, batch_size)``: metrics of the current prompt, including ``score`` (higher is
      better: the selection criterion).
    - ``metadata()``: JSON-able description saved with every prompt (labels, verbalisers, ...).
    """

    name: str
    train_features: Sequence

    def lengths(self) -> list[int]: ...

    def collate(self, items: Sequence, pad_to: int | None = None) -> dict[str, torch.Tensor]: ...

    def evaluate(self, model, batch_size: int) -> dict[str, float]: ...

    def metadata(self) -> dict[str, Any]: ...


@dataclass
class PreparedTask:
    """A label-set task (``tasks.superglue.Task``) tokenised for one backbone family.

    Args:
        task: the task definition. family: encoder / seq2seq / decoder. tokenizer: the backbone's.
        train, evaluation: instances of the two splits. max_len: text tokens per row.
        train_source, eval_source: where the records came from (for the run's config.json).
    """

    task: Any
    family: str
    tokenizer: Any
    train: list
    evaluation: list
    max_len: int
    train_source: str = ""
    eval_source: str = ""
    train_features: list[Feature] = field(init=False)
    eval_features: list[Feature] = field(init=False)

    def __post_init__(self) -> None:
        self.train_features = featurize(self.train, self.tokenizer, self.family, self.max_len, train=True)
        self.eval_features = featurize(self.evaluation, self.tokenizer, self.family, self.max_len, train=False)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def lengths(self) -> list[int]:
        return [len(f.input_ids) for f in self.train_features]

    def collate(self, items: Sequence[Feature], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        return collate(items, self.pad_id, self.family, pad_to)

    def evaluate(self, model, batch_size: int) -> dict[str, float]:
        return evaluate(model, self.task, self.family, self.evaluation, self.eval_features, self.tokenizer,
                        batch_size)[0]

    def metadata(self) -> dict[str, Any]:
        return self.task.metadata()
