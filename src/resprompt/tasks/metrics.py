"""SuperGLUE evaluation metrics as pure Python functions (no torch).

Which task uses which metric, following the SuperGLUE benchmark definitions:

* BoolQ, COPA, RTE, WiC, WSC, AX-g (accuracy part): :func:`accuracy`.
* CB: :func:`accuracy` and :func:`f1_macro` over the three classes.
* MultiRC: :func:`multirc_scores` -> ``f1a`` (binary F1 over every answer option pooled)
  and ``em`` (fraction of questions whose answer options are all predicted correctly).
* ReCoRD: :func:`record_scores` -> token-level ``f1`` and ``em`` after SQuAD-style
  :func:`normalize_answer`, max over the gold answers of each query, mean over queries.
* AX-b: :func:`matthews` (Matthews correlation coefficient).
* AX-g: :func:`gender_parity` (fraction of minimal pairs with identical predictions).

Every score is a plain ``float`` in [0, 1] (not a percentage), except :func:`matthews`,
which lies in [-1, 1]. Every function raises ``ValueError`` on empty inputs or on
inputs of different lengths.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

from sklearn.metrics import f1_score, matthews_corrcoef

__all__ = [
    "accuracy",
    "f1_macro",
    "gender_parity",
    "matthews",
    "multirc_scores",
    "normalize_answer",
    "record_scores",
]


def _check(**seqs: Sequence) -> int:
    """Check that the named sequences are non-empty and of one length; return that length."""
    lengths = {name: len(seq) for name, seq in seqs.items()}
    for name, n in lengths.items():
        if n == 0:
            raise ValueError(f"{name} is empty; a metric needs at least one example")
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inputs have different lengths: {detail}")
    return next(iter(lengths.values()))


def accuracy(preds: Sequence[int], golds: Sequence[int]) -> float:
    """Fraction of examples whose prediction equals the gold label."""
    n = _check(preds=preds, golds=golds)
    return float(sum(p == g for p, g in zip(preds, golds, strict=True)) / n)


def f1_macro(preds: Sequence[int], golds: Sequence[int], labels: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 over ``labels`` (CB: three classes).

    A class with no true positives (e.g. never predicted and never gold) scores 0.
    """
    _check(preds=preds, golds=golds)
    if len(labels) == 0:
        raise ValueError("labels is empty; f1_macro needs the label set to average over")
    score = f1_score(
        list(golds), list(preds), labels=list(labels), average="macro", zero_division=0
    )
    return float(score)


def multirc_scores(
    preds: Sequence[int], golds: Sequence[int], question_ids: Sequence[Hashable]
) -> dict[str, float]:
    """MultiRC scores over answer options (one row per option, labels 0/1).

    Returns ``{"f1a": ..., "em": ...}``: ``f1a`` is the F1 of the positive class over all
    answer options pooled (0 when there is no positive prediction or gold); ``em`` is the
    fraction of questions (grouped by ``question_ids``) with every option predicted correctly.
    """
    _check(preds=preds, golds=golds, question_ids=question_ids)
    f1a = f1_score(list(golds), list(preds), labels=[1], average="macro", zero_division=0)
    all_right: dict[Hashable, bool] = defaultdict(lambda: True)
    for p, g, q in zip(preds, golds, question_ids, strict=True):
        all_right[q] = all_right[q] and p == g
    em = sum(all_right.values()) / len(all_right)
    return {"f1a": float(f1a), "em": float(em)}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation and the articles a/an/the,
    collapse runs of whitespace to single spaces (and trim)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _token_f1(pred: str, gold: str) -> float:
    """Token-overlap F1 of two normalised strings (0 when they share no token)."""
    pred_tokens = pred.split()
    gold_tokens = gold.split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def record_scores(
    pred_texts: Sequence[str], gold_answers: Sequence[Sequence[str]]
) -> dict[str, float]:
    """ReCoRD scores: ``{"f1": ..., "em": ...}``.

    Per query, the best token-level F1 and the best exact match (both after
    :func:`normalize_answer`) over that query's gold answers; then the mean over queries.
    """
    n = _check(pred_texts=pred_texts, gold_answers=gold_answers)
    f1_total = 0.0
    em_total = 0.0
    for i, (pred, golds) in enumerate(zip(pred_texts, gold_answers, strict=True)):
        if isinstance(golds, str):
            raise ValueError(f"gold_answers[{i}] is a string; expected a sequence of answers")
        if len(golds) == 0:
            raise ValueError(f"gold_answers[{i}] is empty; every query needs a gold answer")
        norm_pred = normalize_answer(pred)
        norm_golds = [normalize_answer(g) for g in golds]
        f1_total += max(_token_f1(norm_pred, g) for g in norm_golds)
        em_total += max(float(norm_pred == g) for g in norm_golds)
    return {"f1": float(f1_total / n), "em": float(em_total / n)}


def matthews(preds: Sequence[int], golds: Sequence[int]) -> float:
    """Matthews correlation coefficient in [-1, 1] (AX-b); 0.0 where it is undefined."""
    _check(preds=preds, golds=golds)
    with warnings.catch_warnings():
        # sklearn warns when only one label occurs; the result (0.0) is what we want.
        warnings.simplefilter("ignore")
        score = matthews_corrcoef(list(golds), list(preds))
    return float(score)


def gender_parity(preds: Sequence[int], pair_ids: Sequence[Hashable]) -> float:
    """AX-g gender parity: fraction of pairs (the two examples sharing a ``pair_id``)
    whose predictions are identical.

    Raises ``ValueError`` naming the pair id when a pair id does not occur exactly twice.
    """
    _check(preds=preds, pair_ids=pair_ids)
    members: dict[Hashable, list] = defaultdict(list)
    for p, pid in zip(preds, pair_ids, strict=True):
        members[pid].append(p)
    for pid, group in members.items():
        if len(group) != 2:
            raise ValueError(
                f"pair id {pid!r} has {len(group)} member(s); gender parity needs exactly 2"
            )
    same = sum(group[0] == group[1] for group in members.values())
    return float(same / len(members))
