"""Classification prompts on a decoder: each label's verbalisation scored by mean token log-likelihood.

A record becomes the rows ``resprompt predict`` scores (``features.featurize``, one row per
candidate, folded into one row when every candidate is one token:
``merge_single_token_candidates``), and the scores are what ``tasks.evaluation.decoder_scores``
computes. Rows of any mix of prompts run together from each prompt's KV prefix (its [BOS +] prompt
keys and values, built once): the rows carry only their text after the prefix. Rows the prefix
cannot serve (no leading BOS where the prefix holds one, a model with windowed attention) run with
the prompt recomputed, grouped by prompt length and placement.

``logits`` of a row are aligned as the model's own (stripped) decoder logits: position j predicts
token j + 1. With a prefix the output at the BOS (the last prompt slot's) is not computed; it
predicts the first text token, which no candidate scores (the candidate follows the source).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..devices import model_device
from ..generation.decode import cache_kwarg
from ..generation.prefix import BatchPrefix, PromptPrefix, prefix_unsupported
from ..tasks.features import Feature, featurize, merge_single_token_candidates


class PrefixCache:
    """Each loaded decoder prompt's KV prefix, built when the prompt loads (the handlers' ``check``) or
    else the first time it is used (None where a prefix cannot stand for the prompt); dropped with the
    prompt's model when a reload replaces it."""

    def __init__(self) -> None:
        self._prefixes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, prompt) -> PromptPrefix | None:
        model = prompt.model
        with self._lock:
            if model not in self._prefixes:
                ok = model.family == "decoder" and prefix_unsupported(model) is None
                self._prefixes[model] = PromptPrefix.build(model) if ok else None
            return self._prefixes[model]

    def items(self):
        return list(self._prefixes.items())


@dataclass(frozen=True)
class DecoderRow:
    """One record of one decoder prompt: its scoring rows and, for merged rows, the candidate tokens."""

    prompt: object  # LoadedPrompt
    rows: tuple[Feature, ...]
    targets: tuple  # per row: [(candidate, token id), ...] for a merged row, None otherwise

    @property
    def length(self) -> int:
        return max(len(f.input_ids) for f in self.rows) + self.prompt.model.num_tokens


def decoder_row(prompt, instance, max_len: int) -> DecoderRow:
    model = prompt.model
    feats = featurize([instance], model.tokenizer, "decoder", max_len, train=False)
    rows, targets = merge_single_token_candidates(feats)
    return DecoderRow(prompt, tuple(rows), tuple(targets))


def pad_rows(rows: list[list[int]], pad: int, left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded into (ids, mask) [B, T], on the left (decoders) or the right."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(t - len(r), t) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


@torch.no_grad()
def prefix_logits(model, rows: list[list[int]], prefixes: list[PromptPrefix], pad: int) -> list[torch.Tensor]:
    """Each row's logits [len(row), V] from its prompt's prefix (row 0's output left NaN: see the docstring)."""
    bos = [int(p.bos) for p in prefixes]
    ids, mask = (x.to(model_device(model)) for x in pad_rows([r[b:] for r, b in zip(rows, bos)], pad))
    embeds, full_mask, positions, cache = BatchPrefix(list(prefixes)).inputs(model, ids, mask)
    out = model.run_backbone({"inputs_embeds": embeds, "attention_mask": full_mask, "position_ids": positions},
                             **{cache_kwarg(model.backbone): cache}, use_cache=True)
    t, logits = ids.shape[1], out.logits  # the backbone's dtype: row_scores takes float32 of what it reads
    result = []
    for i, (row, b) in enumerate(zip(rows, bos)):
        own = logits[i, t - (len(row) - b):]
        result.append(torch.cat([own.new_full((b, own.shape[-1]), float("nan")), own]) if b else own)
    return result


@torch.no_grad()
def recomputed_logits(model, rows: list[list[int]], prompts: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Each row's logits [len(row), V] with its prompt ([B, n, d]) in the input, as ``resprompt predict``."""
    ids, mask = (x.to(model_device(model)) for x in pad_rows(rows, pad))
    logits = model(ids, mask, prompts=prompts.to(ids.device)).logits
    return [logits[i, ids.shape[1] - len(r):] for i, r in enumerate(rows)]


def row_scores(feature: Feature, target, logits: torch.Tensor) -> dict[int, float]:
    """Mean log-likelihood of the row's candidate(s), as ``tasks.evaluation.decoder_scores``."""
    if target is not None:  # merged: every candidate one token after the shared prefix
        last = logits[-1].float().log_softmax(-1)
        values = last[[tok for _, tok in target]].tolist()  # one device copy for all candidates
        return {c: v for (c, _), v in zip(target, values)}
    ids = torch.tensor(feature.input_ids, device=logits.device)
    logp = logits[:-1].float().log_softmax(-1).gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1)
    # selects (a NaN times 0 would stay NaN)
    scored = torch.tensor(feature.score_mask[1:], dtype=torch.bool, device=logits.device)
    return {feature.candidate: float(logp[scored].sum() / scored.sum().clamp(min=1))}


def score_rows(rows: Sequence[DecoderRow], prefix_of, max_batch: int) -> list[dict[int, float]]:
    """Candidate scores of each record, its rows batched with every other record's (any mix of prompts)."""
    flat = [(r, f, t) for r, row in enumerate(rows) for f, t in zip(row.rows, row.targets)]
    groups: dict[tuple, list[int]] = {}
    for k, (r, f, _) in enumerate(flat):
        prompt = rows[r].prompt
        pre = prefix_of(prompt)
        ok = pre is not None and (not pre.bos or f.input_ids[:1] == [prompt.model.tokenizer.bos_token_id]) and (
            len(f.input_ids) > 1 + int(pre.bos))
        key = ("prefix",) if ok else ("prompts", prompt.model.num_tokens, prompt.model.placement_mode)
        groups.setdefault(key, []).append(k)
    scores: list[dict[int, float]] = [{} for _ in rows]
    for key, idx in groups.items():
        for s in range(0, len(idx), max_batch):
            part = idx[s: s + max_batch]
            model = rows[flat[part[0]][0]].prompt.model
            tok = model.tokenizer
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = [flat[k][1].input_ids for k in part]
            if key[0] == "prefix":
                logits = prefix_logits(model, ids, [prefix_of(rows[flat[k][0]].prompt) for k in part], pad)
            else:
                prompts = torch.stack([rows[flat[k][0]].prompt.model.prompt() for k in part])
                logits = recomputed_logits(model, ids, prompts, pad)
            for k, lg in zip(part, logits):
                r, f, t = flat[k]
                scores[r].update(row_scores(f, t, lg))
    return scores


