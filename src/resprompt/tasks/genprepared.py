"""A generative task prepared for one run (a ``TrainTask``): tokenised rows, generation and scoring.

Evaluation generates (greedy, ``task.max_new_tokens``, the task's stop strings) and scores with
``genmetrics``; ``score`` is the task's ``metric``. With ``proxy=True`` the evaluations during
training score the mean log-likelihood of the target tokens instead (one teacher-forced forward
per batch, no decoding); the trainer then calls ``evaluate_full`` (generation) at each new best and
at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import torch

from ..generation.config import GenerationConfig
from ..generation.decode import decode_texts, end_ids, generate_ids
from .features import sorted_batches
from .generative import GenerativeTask, GenInstance
from .genfeatures import GenFeature, collate_generative, generation_features, train_features
from .genmetrics import generation_scores


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


@torch.no_grad()
def generate_texts(model, tokenizer, feats: Sequence[GenFeature], family: str, batch_size: int,
                   config: GenerationConfig) -> list[str]:
    """Generated text of every row, in row order (batches of similar length)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    texts: list[str] = [""] * len(feats)
    for idx in sorted_batches([len(f.input_ids) for f in feats], batch_size):
        batch = collate_generative([feats[i] for i in idx], pad_id_of(tokenizer), family)
        new = generate_ids(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), config=config,
                           tokenizer=tokenizer)
        for i, text in zip(idx, decode_texts(new, tokenizer, config, end_ids(model, tokenizer))):
            texts[i] = text.strip()
    model.train(was)
    return texts


@torch.no_grad()
def target_loglik(model, feats: Sequence[GenFeature], family: str, pad_id: int, batch_size: int) -> float:
    """Mean over rows of the mean log-likelihood of their target tokens (teacher forcing)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    per_row = []
    for idx in sorted_batches([len(f.input_ids) for f in feats], batch_size):
        batch = collate_generative([feats[i] for i in idx], pad_id, family)
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        logits = model(ids, mask, labels=labels).logits.float()  # decoder [B, T, V]; seq2seq [B, L, V]
        if family == "decoder":  # output j predicts token j + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        scored = labels != -100
        logp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        per_row += ((logp * scored).sum(-1) / scored.sum(-1).clamp(min=1)).tolist()
    model.train(was)
    return fmean(per_row)


def score_instances(model, tokenizer, family: str, instances: Sequence[GenInstance], max_len: int, batch_size: int,
                    config: GenerationConfig) -> tuple[dict[str, float] | None, list[str]]:
    """Generates for ``instances`` (``eval`` / ``predict``): (metrics, or None without targets; texts)."""
    feats = generation_features(instances, tokenizer, family, max_len, config.max_new_tokens)
    texts = generate_texts(model, tokenizer, feats, family, batch_size, config)
    if any(i.target is None for i in instances):
        return None, texts
    return generation_scores(texts, [i.target for i in instances]), texts


@dataclass
class GenerativePreparedTask:
    """Both splits of a ``GenerativeTask`` tokenised for one backbone family.

    Args:
        max_len: tokens per row (input + target for training rows). max_target: target tokens allowed.
        proxy: evaluate with ``target_loglik`` during training (see the module docstring).
    """

    task: GenerativeTask
    family: str
    tokenizer: Any
    train: list[GenInstance]
    evaluation: list[GenInstance]
    max_len: int
    max_target: int = 64
    proxy: bool = False
    train_source: str = ""
    eval_source: str = ""
    train_features: list[GenFeature] = field(init=False)
    eval_rows: list[GenFeature] = field(init=False)
    eval_inputs: list[GenFeature] = field(init=False)

    def __post_init__(self) -> None:
        self.proxy = self.proxy or self.task.metric == "loglik"  # selection on loglik: generate at best / end
        self.train_features = train_features(self.train, self.tokenizer, self.family, self.max_len, self.max_target)
        labelled = all(i.target is not None for i in self.evaluation)
        self.eval_rows = (train_features(self.evaluation, self.tokenizer, self.family, self.max_len, self.max_target)
                          if labelled else [])
        self.eval_inputs = generation_features(self.evaluation, self.tokenizer, self.family, self.max_len,
                                               self.task.max_new_tokens)

    @property
    def name(self) -> str:
        return self.task.name

    def lengths(self) -> list[int]:
        return [len(f.input_ids) for f in self.train_features]

    def collate(self, items: Sequence[GenFeature], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        batch = collate_generative(items, pad_id_of(self.tokenizer), self.family, pad_to)
        batch.pop("index")
        return batch

    def loglik(self, model, batch_size: int) -> dict[str, float]:
        return {"loglik": target_loglik(model, self.eval_rows, self.family, pad_id_of(self.tokenizer), batch_size)}

    def predict(self, model, batch_size: int, config: GenerationConfig | None = None) -> list[str]:
        return generate_texts(model, self.tokenizer, self.eval_inputs, self.family, batch_size,
                              config or self.task.generation_config())

    def evaluate_full(self, model, batch_size: int) -> dict[str, float]:
        """Generates for the evaluation split and scores; ``score`` = the task's metric."""
        texts = self.predict(model, batch_size)
        metrics = generation_scores(texts, [i.target for i in self.evaluation])
        if self.task.metric == "accuracy" and "accuracy" not in metrics:
            from .genmetrics import accuracy

            metrics["accuracy"] = accuracy(texts, [i.target for i in self.evaluation])
        if self.eval_rows:
            metrics.update(self.loglik(model, batch_size))
        metrics["score"] = metrics[self.task.metric]
        return metrics

    def evaluate(self, model, batch_size: int) -> dict[str, float]:
        if self.proxy:
            metrics = self.loglik(model, batch_size)
            return {**metrics, "score": metrics["loglik"], "n": float(len(self.eval_rows))}
        return self.evaluate_full(model, batch_size)

    def metadata(self) -> dict[str, Any]:
        return self.task.metadata()
