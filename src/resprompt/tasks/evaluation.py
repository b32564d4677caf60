"""Predicting with a prompt on a split's features, and scoring the predictions (nothing else).

Predictions per family (what ``Task.evaluate`` receives):
- encoder: class ids (argmax of the head), or for choice tasks the score of "correct"
  (logit 1 minus logit 0) for each expanded candidate;
- seq2seq: the candidate whose text equals the decoded output (case-insensitive), else -1;
- decoder: the candidate with the highest mean token log-likelihood.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from .features import Feature, collate, merge_single_token_candidates, sorted_batches

if TYPE_CHECKING:
    from ..model import ResidualPromptModel

log = logging.getLogger(__name__)


@torch.no_grad()
def decoder_scores(model: ResidualPromptModel, feats: list[Feature], pad_id: int, batch_size: int,
                   merge: bool = True) -> dict[tuple[int, int], float]:
    """Mean token log-likelihood of every (instance index, candidate) row of a decoder split.

    With ``merge`` the rows of an instance whose candidates are all one token share one forward
    pass (``merge_single_token_candidates``); the scores are the same up to float rounding.
    """
    device = next(model.parameters()).device
    if merge:
        rows, targets = merge_single_token_candidates(feats)
    else:
        rows, targets = list(feats), [None] * len(feats)
    scores: dict[tuple[int, int], float] = {}
    for idx in sorted_batches([len(f.input_ids) for f in rows], batch_size):
        batch = collate([rows[i] for i in idx], pad_id, "decoder")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = model(ids, mask).logits  # [B, T, V]; output j predicts token j + 1 (left padded)
        merged = [r for r, i in enumerate(idx) if targets[i] is not None]
        full = [r for r, i in enumerate(idx) if targets[i] is None]
        if merged:
            last = logits[merged, -1].float().log_softmax(-1)  # [M, V]: after each prefix's last token
            for m, r in enumerate(merged):
                for c, tok in targets[idx[r]]:
                    scores[(rows[idx[r]].index, c)] = last[m, tok].item()
        if full:
            lg, fid = logits[full].float(), ids[full]
            logp = lg[:, :-1].log_softmax(-1).gather(-1, fid[:, 1:].unsqueeze(-1)).squeeze(-1)
            sm = batch["score_mask"][full][:, 1:].to(device).float()
            score = (logp * sm).sum(-1) / sm.sum(-1).clamp(min=1)
            for k, r in enumerate(full):
                scores[(rows[idx[r]].index, rows[idx[r]].candidate)] = score[k].item()
    return scores


def best_candidates(scores: dict[tuple[int, int], float]) -> dict[int, int]:
    """The highest-scoring candidate of each instance (ties go to the first candidate)."""
    best: dict[int, tuple[float, int]] = {}
    for (i, c), s in sorted(scores.items()):
        if i not in best or s > best[i][0]:
            best[i] = (s, c)
    return {i: c for i, (_, c) in best.items()}


@torch.no_grad()
def predict(model: ResidualPromptModel, task, family: str, instances, feats: list[Feature], tokenizer,
            batch_size: int) -> list:
    """Raw predictions in instance order (see the module docstring)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    preds: list = [None] * len(instances)
    if family == "decoder":
        best = best_candidates(decoder_scores(model, feats, pad_id, batch_size))
        model.train(was_training)
        return [best[i] for i in range(len(instances))]
    for idx in sorted_batches([len(f.input_ids) for f in feats], batch_size):
        batch = collate([feats[i] for i in idx], pad_id, family)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if family == "encoder":
            tt = batch.get("token_type_ids")
            logits = model(ids, mask, token_type_ids=None if tt is None else tt.to(device)).logits.float()
            for row, i in enumerate(batch["index"].tolist()):
                preds[i] = (logits[row, 1] - logits[row, 0]).item() if task.choice else int(logits[row].argmax())
        else:
            rows = batch["index"].tolist()
            max_new = 2 + max(len(tokenizer(c)["input_ids"]) for i in rows for c in instances[i].candidates)
            out = model.generate(ids, mask, max_new_tokens=min(max_new, 64), do_sample=False)
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            for i, text in zip(rows, texts):
                cands = [c.strip().lower() for c in instances[i].candidates]
                t = text.strip().lower()
                preds[i] = cands.index(t) if t in cands else -1
    model.train(was_training)
    return preds


def evaluate(model, task, family, instances, feats, tokenizer, batch_size) -> tuple[dict, list]:
    """Scores a prompt: returns (metrics incl. ``score``, predictions)."""
    preds = predict(model, task, family, instances, feats, tokenizer, batch_size)
    return task.evaluate(instances, preds, family), preds
