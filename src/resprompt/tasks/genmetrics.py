"""Scores of generated text against reference text (pure functions; no torch).

- ``exact_match`` and ``token_f1``: after SQuAD's normalisation (lowercase, no punctuation, no
  articles a/an/the, whitespace collapsed: ``metrics.normalize_answer``); a row with several
  references takes its best. A text that normalises to nothing (the answer "A" of a multiple-choice
  task, ".") is compared lowercased with whitespace collapsed instead, so an empty or unrelated
  prediction never matches it.
- ``rouge_l``: ROUGE-L F-measure from Google's ``rouge-score`` package, best over references, with
  ``WordTokenizer``: lowercase runs of letters and digits of any script, each CJK character a token
  of its own. On ASCII text its tokens are the package's default ones; the default drops every
  other letter, so Cyrillic or Chinese text scored 0 even when matched exactly.
- ``accuracy``: exact string equality after stripping; reported only when the references come from
  a small set (``small_target_set``), i.e. the task is classification written as text.

Every score is a float in [0, 1], averaged over rows; empty inputs or unequal lengths raise
``ValueError``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from .metrics import PUNCTUATION, normalize_answer

METRICS = ("exact_match", "f1", "rouge_l", "accuracy")
SMALL_SET = 10  # at most this many distinct references, each used at least twice on average


def _refs(references: Sequence) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _check(predictions: Sequence[str], references: Sequence) -> list[list[str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score")
    refs = _refs(references)
    if any(not r for r in refs):
        raise ValueError("a row has no reference")
    return refs


def _normal(text: str) -> str:
    """SQuAD's normal form; where that is empty (an article-only answer, "A."), the same without dropping
    articles; where that is empty too (".", "?"), the lowercased text with whitespace collapsed."""
    return (normalize_answer(text) or " ".join("".join(ch for ch in text.lower() if ch not in PUNCTUATION).split())
            or " ".join(text.lower().split()))


def token_f1_one(prediction: str, reference: str) -> float:
    """SQuAD token F1 of one pair (both empty after ``_normal``: 1.0)."""
    p, r = _normal(prediction).split(), _normal(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(predictions: Sequence[str], references: Sequence) -> float:
    refs = _check(predictions, references)
    return fmean(max(float(_normal(p) == _normal(r)) for r in rs) for p, rs in zip(predictions, refs))


def token_f1(predictions: Sequence[str], references: Sequence) -> float:
    refs = _check(predictions, references)
    return fmean(max(token_f1_one(p, r) for r in rs) for p, rs in zip(predictions, refs))


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_WORD = re.compile(r"[^\W_]+")


class WordTokenizer:
    """ROUGE tokens: lowercase letter/digit runs of any script; CJK characters one token each."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(_CJK.sub(r" \g<0> ", text.lower()))


def rouge_l(predictions: Sequence[str], references: Sequence) -> float:
    from rouge_score import rouge_scorer

    refs = _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=WordTokenizer())
    return fmean(max(scorer.score(r, p)["rougeL"].fmeasure for r in rs) for p, rs in zip(predictions, refs))


def accuracy(predictions: Sequence[str], references: Sequence) -> float:
    refs = _check(predictions, references)
    return fmean(float(any(p.strip() == r.strip() for r in rs)) for p, rs in zip(predictions, refs))


def small_target_set(references: Sequence) -> bool:
    """True when every row has one reference, drawn from at most ``SMALL_SET`` distinct strings that
    repeat (fewer distinct values than half the rows): the texts are labels."""
    refs = _refs(references)
    if not refs or any(len(r) != 1 for r in refs):
        return False
    distinct = {r[0].strip() for r in refs}
    return len(distinct) <= SMALL_SET and len(distinct) * 2 <= len(refs)


def generation_scores(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """``exact_match``, ``f1``, ``rouge_l`` and (for a small target set) ``accuracy``; plus ``n``."""
    out = {"exact_match": exact_match(predictions, references), "f1": token_f1(predictions, references),
           "rouge_l": rouge_l(predictions, references)}
    if small_target_set(references):
        out["accuracy"] = accuracy(predictions, references)
    out["n"] = float(len(predictions))
    return out
