"""From task instances to padded tensors, per backbone family.

Each instance is tokenized once into plain lists (``Feature``); batches are padded
dynamically to their own longest row (right padding; left for decoders) by ``collate``.

- encoder: ``text_a`` [+ ``text_b``] with the tokenizer's special tokens, truncated
  longest-first to ``max_len``; label = class id.
- seq2seq: ``source`` -> ``candidates[label]`` as the target (teacher forcing); evaluation
  decodes with ``generate`` and maps the text back to a candidate. A source too long loses its
  middle (``keep_ends``): T5-style sources hold the task prefix and short fields (a question, an
  answer) at either end of a long passage.
- decoder: ``source`` + ``candidate`` continuation; the loss covers the candidate tokens only;
  evaluation scores every candidate by its mean token log-likelihood. The source is cut from the
  left when too long, so the question at its end survives. When every candidate of an instance is
  one token, ``merge_single_token_candidates`` folds its rows into one forward pass.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .records import DataError


@dataclass
class Feature:
    input_ids: list[int]
    label: int = -1  # class id (encoder); candidate index (generative); -1 unknown
    token_type_ids: list[int] | None = None
    target_ids: list[int] | None = None  # seq2seq target / decoder: mask of scored tokens as ids
    score_mask: list[int] | None = None  # decoder: 1 on candidate tokens
    index: int = 0  # which instance (decoder candidates of one instance share it)
    candidate: int = 0  # which candidate this row scores (decoder evaluation)
    extra: dict = field(default_factory=dict)


def keep_ends(ids: list[int], max_len: int) -> list[int]:
    """``ids`` cut to ``max_len`` tokens by dropping the middle: the first ``max_len // 2`` and the rest
    from the end (the EOS included) are kept."""
    if len(ids) <= max_len:
        return list(ids)
    head = max_len // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_len - head):])


def _decoder_pair(tok, source: str, cand: str, max_len: int, bos: list[int]) -> tuple[list[int], list[int]]:
    src = tok(source, add_special_tokens=False)["input_ids"]
    cand_ids = tok(cand, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
    room = max_len - len(bos) - len(cand_ids)
    if room < 1:
        cand_ids = cand_ids[: max(1, max_len - len(bos) - 1)]
        room = max_len - len(bos) - len(cand_ids)
    src = src[-room:]
    ids = bos + src + cand_ids
    return ids, [0] * (len(bos) + len(src)) + [1] * len(cand_ids)


def featurize(instances: Sequence, tokenizer, family: str, max_len: int, train: bool) -> list[Feature]:
    """Tokenizes instances once.

    Args:
        instances: ``tasks.Instance`` objects.
        train: decoder instances expand to their gold candidate only when True, to every
            candidate when False (for scoring).
    Returns:
        a list of ``Feature``; for decoder evaluation one per (instance, candidate).
    """
    feats: list[Feature] = []
    if train and family != "encoder":
        missing = next((ex for ex in instances if ex.label is None), None)
        if missing is not None:  # ReCoRD: answers that match no entity leave no candidate to train towards
            raise DataError(f"{missing.meta.get('where', missing.uid)}: no gold candidate to train towards (answers "
                            f"{missing.meta.get('answers')} match none of the entities); fix the record or leave it out")
    if family == "encoder":
        for i, ex in enumerate(instances):
            enc = tokenizer(ex.text_a, ex.text_b, truncation=True, max_length=max_len)
            feats.append(Feature(enc["input_ids"], -1 if ex.label is None else ex.label,
                                 enc.get("token_type_ids"), index=i))
    elif family == "seq2seq":
        for i, ex in enumerate(instances):
            src = keep_ends(tokenizer(ex.source)["input_ids"], max_len)
            label = -1 if ex.label is None else ex.label
            tgt = tokenizer(ex.candidates[label], truncation=True, max_length=64)["input_ids"] if label >= 0 else None
            feats.append(Feature(src, label, target_ids=tgt, index=i))
    else:
        bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
        for i, ex in enumerate(instances):
            label = -1 if ex.label is None else ex.label
            cands = [label] if train else range(len(ex.candidates))
            for c in cands:
                ids, mask = _decoder_pair(tokenizer, ex.source, ex.candidates[c], max_len, bos)
                feats.append(Feature(ids, label, score_mask=mask, index=i, candidate=c))
    return feats


def collate(feats: Sequence[Feature], pad_id: int, family: str, pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pads a list of features to the batch's longest row (or to ``pad_to`` tokens).

    Returns:
        input_ids, attention_mask [B, T]; token_type_ids [B, T] (encoders that use them);
        labels [B] (encoder), [B, L] (seq2seq targets, -100 padded), [B, T] (decoder LM labels,
        -100 off the candidate); score_mask [B, T] (decoder); index, candidate, class_label [B].
    """
    t = max(max(len(f.input_ids) for f in feats), pad_to or 0)
    b = len(feats)
    left = family == "decoder"
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    if feats[0].token_type_ids is not None:
        out["token_type_ids"] = torch.zeros((b, t), dtype=torch.long)
    if family == "decoder":
        out["score_mask"] = torch.zeros((b, t), dtype=torch.long)
    for i, f in enumerate(feats):
        n = len(f.input_ids)
        sl = slice(t - n, t) if left else slice(0, n)
        ids[i, sl] = torch.tensor(f.input_ids)
        mask[i, sl] = 1
        if "token_type_ids" in out:
            out["token_type_ids"][i, sl] = torch.tensor(f.token_type_ids)
        if family == "decoder":
            out["score_mask"][i, sl] = torch.tensor(f.score_mask)
    out.update(input_ids=ids, attention_mask=mask)
    out["class_label"] = torch.tensor([f.label for f in feats])
    out["index"] = torch.tensor([f.index for f in feats])
    out["candidate"] = torch.tensor([f.candidate for f in feats])
    if family == "encoder":
        out["labels"] = out["class_label"].clamp(min=0)
    elif family == "seq2seq" and all(f.target_ids is not None for f in feats):
        lt = max(len(f.target_ids) for f in feats)
        labels = torch.full((b, lt), -100, dtype=torch.long)
        for i, f in enumerate(feats):
            labels[i, : len(f.target_ids)] = torch.tensor(f.target_ids)
        out["labels"] = labels
    elif family == "decoder":
        out["labels"] = ids.masked_fill(out["score_mask"] == 0, -100)
    return out


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int, mega: int = 50) -> list[int]:
    """A shuffled order in which each batch holds rows of similar length.

    The order is a pure function of (lengths, batch_size, seed): shuffle, cut into megabatches of
    ``mega * batch_size`` rows, sort each by length (longest first), cut into batches, shuffle
    the batches. Padding then stays small without giving up randomness.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    size = mega * batch_size
    batches = []
    for s in range(0, len(idx), size):
        chunk = sorted(idx[s: s + size], key=lambda i: -lengths[i])
        batches += [chunk[j: j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for bt in batches for i in bt]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Evaluation batches: rows sorted by length, so padding is minimal (order restored by index)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for s in range(0, len(order), batch_size):
        yield order[s: s + batch_size]


def merge_single_token_candidates(feats: Sequence[Feature]) -> tuple[list[Feature], list[list[tuple[int, int]] | None]]:
    """Folds the scoring rows of a decoder instance into one row when every candidate is one token.

    Rows of one instance that share ``input_ids[:-1]`` and each score only their last token need
    one forward pass: candidate c's mean log-likelihood is log p(token_c | prefix), read at the
    prefix's last position. So k candidates cost one row instead of k.

    Args:
        feats: decoder evaluation features, one per (instance, candidate), as ``featurize`` makes.
    Returns:
        (rows, targets): ``rows`` holds, in first-appearance order of the instances, one prefix row
        per merged instance (its ``input_ids`` = the shared prefix, ``score_mask`` all 0) and the
        original rows of the others; ``targets[r]`` is [(candidate, token id), ...] for a merged
        row and None for an original one.
    """
    groups: dict[int, list[Feature]] = {}
    for f in feats:
        groups.setdefault(f.index, []).append(f)
    rows: list[Feature] = []
    targets: list[list[tuple[int, int]] | None] = []
    for index, group in groups.items():
        prefix = group[0].input_ids[:-1]
        mergeable = len(prefix) > 0 and all(
            f.input_ids[:-1] == prefix and f.score_mask is not None and sum(f.score_mask) == 1
            and f.score_mask[-1] == 1 for f in group)
        if mergeable:
            rows.append(Feature(list(prefix), group[0].label, score_mask=[0] * len(prefix), index=index,
                                candidate=-1))
            targets.append([(f.candidate, f.input_ids[-1]) for f in group])
        else:
            rows += group
            targets += [None] * len(group)
    return rows, targets
