"""Tokenising generative instances: training rows (input + target) and generation rows (input only).

- decoder: [BOS] + input + target + EOS; labels are -100 on the input and BOS (and, once the model
  inserts it, on the prompt slots and the padding). The input is cut from the left when the row is
  too long, never the target. Source and target are tokenised separately; where neither side has
  whitespace at the join, one space is put before the target (``"Answer:"`` + ``"Paris"`` is
  trained as ``"Answer: Paris"``), as a reader would write it.
- chat (decoder): the tokenizer's chat template renders the turns; the labels cover each
  assistant turn's text and end-of-turn tokens, found by rendering the conversation up to that
  turn with and without it (``add_generation_prompt``); a template that does not render a
  conversation as a prefix of its continuation is refused.
- seq2seq: the tokenised input (with the tokenizer's EOS) is the encoder's; the target + EOS are
  the decoder's labels.

A target of more than ``max_target`` tokens (EOS included) is an error naming file:line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .generative import GenInstance
from .records import DataError


@dataclass
class GenFeature:
    """input_ids: the row; labels: decoder, aligned to input_ids (-100 off the target); seq2seq, the
    target ids (None for generation rows); index: the instance."""

    input_ids: list[int]
    labels: list[int] | None
    index: int


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []


def _eos(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token to end a target with")
    return tokenizer.eos_token_id


def _join_space(source: str, target: str) -> str:
    return target if (not source or source[-1].isspace() or target[:1].isspace()) else " " + target


def _check_target(n: int, limit: int, inst: GenInstance) -> None:
    if n > limit:
        raise DataError(f"{inst.where}: target has {n} tokens (EOS included), more than max-target-length={limit}")


def _check_room(room: int, n_target: int, max_len: int, inst: GenInstance) -> None:
    if room < 1:
        raise DataError(f"{inst.where}: the {n_target}-token target leaves no room for the input within "
                        f"max-length={max_len}")


def _check_input(ids: list[int], inst: GenInstance) -> None:
    """A decoder row needs a token before the prompt's answer: an input that tokenises to nothing, with no BOS,
    would leave the prompt no real token to stand beside."""
    if not ids:
        raise DataError(f"{inst.where}: the input tokenizes to no tokens (and the tokenizer has no BOS)")


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def check_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"--chat: the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '')}) "
                        "has no chat template")


def _chat_train_row(tokenizer, inst: GenInstance, max_len: int, max_target: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels covering the assistant turns."""
    turns = inst.history
    full = _render(tokenizer, turns, False)
    spans = []
    for i, m in enumerate(turns):
        if m["role"] != "assistant":
            continue
        start = len(_render(tokenizer, turns[:i], True))
        end = len(_render(tokenizer, turns[: i + 1], False))
        if not full.startswith(_render(tokenizer, turns[: i + 1], False)):
            raise DataError(f"{inst.where}: the chat template does not render the conversation up to turn {i} "
                            "as a prefix of the whole one; resprompt cannot find the assistant turns")
        spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for tok, (a, b) in zip(ids, enc["offset_mapping"]):  # a token overlapping an answer is labelled
        labels.append(tok if any(a < e and b > s for s, e in spans) else -100)
    n_target = sum(1 for x in labels if x != -100)
    last_start = spans[-1][0]
    last = sum(1 for tok, (a, _) in zip(ids, enc["offset_mapping"]) if a >= last_start)
    _check_target(last, max_target, inst)
    if len(ids) > max_len:  # cut from the left, keeping a leading BOS where the template starts with one
        keep = 1 if ids[:1] == _bos(tokenizer) else 0
        _check_room(max_len - keep - last, last, max_len, inst)  # never cut into the answer
        ids, labels = ids[:keep] + ids[-(max_len - keep):], labels[:keep] + labels[-(max_len - keep):]
    if n_target == 0:
        raise DataError(f"{inst.where}: the chat template left no assistant token to train on")
    return ids, labels


def train_features(instances: Sequence[GenInstance], tokenizer, family: str, max_len: int,
                   max_target: int) -> list[GenFeature]:
    """Rows with their targets (training, and the log-likelihood evaluation)."""
    feats = []
    for i, inst in enumerate(instances):
        if inst.target is None:
            raise DataError(f"{inst.where}: no target")
        if inst.history is not None:
            ids, labels = _chat_train_row(tokenizer, inst, max_len, max_target)
            feats.append(GenFeature(ids, labels, i))
        elif family == "seq2seq":
            src = tokenizer(inst.source)["input_ids"][-max_len:]
            tgt = tokenizer(inst.target)["input_ids"]
            _check_target(len(tgt), max_target, inst)
            feats.append(GenFeature(src, tgt, i))
        else:
            bos = _bos(tokenizer)
            src = tokenizer(inst.source, add_special_tokens=False)["input_ids"]
            tgt = tokenizer(_join_space(inst.source, inst.target), add_special_tokens=False)["input_ids"]
            tgt = tgt + [_eos(tokenizer)]
            _check_target(len(tgt), max_target, inst)
            _check_input(bos + src, inst)
            room = max_len - len(bos) - len(tgt)
            _check_room(room, len(tgt), max_len, inst)
            src = src[-room:]
            feats.append(GenFeature(bos + src + tgt, [-100] * (len(bos) + len(src)) + tgt, i))
    return feats


def generation_features(instances: Sequence[GenInstance], tokenizer, family: str, max_len: int,
                        max_new_tokens: int) -> list[GenFeature]:
    """Input rows to generate from; decoders keep room for ``max_new_tokens`` within ``max_len``."""
    feats = []
    room = max_len - (max_new_tokens if family == "decoder" else 0)
    if room < 2:
        raise DataError(f"max-length={max_len} leaves no room for the input beside max-new-tokens={max_new_tokens}")
    for i, inst in enumerate(instances):
        if inst.messages is not None:
            ids = tokenizer(_render(tokenizer, inst.messages, True), add_special_tokens=False)["input_ids"]
            if len(ids) > room and ids[:1] == _bos(tokenizer):
                ids = ids[:1] + ids[1:][-(room - 1):]
        elif family == "seq2seq":
            ids = tokenizer(inst.source)["input_ids"]
        else:
            ids = _bos(tokenizer) + tokenizer(inst.source, add_special_tokens=False)["input_ids"]
            _check_input(ids, inst)
            if len(ids) > room and _bos(tokenizer):
                ids = ids[:1] + ids[1:][-(room - 1):]  # keep BOS, cut the input from the left
        feats.append(GenFeature(ids[-room:], None, i))
    return feats


def collate_generative(feats: Sequence[GenFeature], pad_id: int, family: str,
                       pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pads rows: decoders on the left (labels -100 there), seq2seq on the right (labels [B, L], -100 padded).

    Returns: input_ids, attention_mask [B, T]; labels [B, T] (decoder) or [B, L] (seq2seq) when the
    rows have them; index [B].
    """
    t = max(max(len(f.input_ids) for f in feats), pad_to or 0)
    b, left = len(feats), family == "decoder"
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    has_labels = all(f.labels is not None for f in feats)
    lt = t if left else (max(len(f.labels) for f in feats) if has_labels else 0)
    labels = torch.full((b, lt), -100, dtype=torch.long)
    for i, f in enumerate(feats):
        n = len(f.input_ids)
        sl = slice(t - n, t) if left else slice(0, n)
        ids[i, sl] = torch.tensor(f.input_ids)
        mask[i, sl] = 1
        if has_labels:
            labels[i, sl if left else slice(0, len(f.labels))] = torch.tensor(f.labels)
    out = {"input_ids": ids, "attention_mask": mask, "index": torch.tensor([f.index for f in feats])}
    if has_labels:
        out["labels"] = labels
    return out
