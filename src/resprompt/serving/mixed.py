"""One base-model forward over the rows of several encoder prompts, each read out by its own head.

Prompts that share their length n and placement are prompted together by one ``prepare_inputs``
call, each row with its own prompt (``prompts`` [B_g, n, d]), giving [B_g, T_g + n, d]; every such
group is then padded at its end to the longest, L, and the groups are stacked into one [B, L, d]
batch. Padding after the prompted row changes no position a real token or prompt slot has
(absolute position embeddings count from 0) and is masked, so prompts with different lengths n
share the forward and each row's states equal those of its prompt run alone (up to float rounding). The states are then read per prompt as ``ResidualPromptModel`` reads them:

- native readout, linear head over the pooler (BERT): ``classifier(dropout(pooler_output))``;
- native readout, a ``*ClassificationHead`` (RoBERTa, MPNet): the head over the [b_i, L, d] states;
- ``cls`` / ``mean`` (``model._read_out``): ``readout.pool`` over the text tokens, then the head.

A prompt whose head reads something else natively (DistilBERT's two layers) runs its own forward
(``splittable`` is False): still correct, just not shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .. import readout
from ..prompt import placement as pl

if TYPE_CHECKING:
    from ..model import ResidualPromptModel

Batch = dict[str, torch.Tensor]


def splittable(model: ResidualPromptModel) -> bool:
    """Whether this prompt's logits can be computed from a shared base-model forward."""
    style = readout.head_style(model.head)
    if not model._native_readout:
        return style in ("linear", "features")
    return (style == "linear" and model.pooling == "pooler") or style == "features"


def _prompted(parts: Sequence[tuple[ResidualPromptModel, Batch]]) -> Batch:
    """The prompted inputs of parts whose prompts share n and placement, from one ``prepare_inputs`` call
    (their rows stacked, each row with its own prompt: ``prompts`` [B, n, d]), and where the text is.

    Returns inputs_embeds [B, T + n, d], attention_mask / text_mask (1 on text tokens only) [B, T + n],
    token_type_ids [B, T + n] where the tokenizer makes them, first [B] (the first text token's
    position, as ``ResidualPromptModel._read_out`` computes it); rows in the order of ``parts``.
    """
    t = max(b["input_ids"].shape[1] for _, b in parts)
    batch = {key: torch.cat([_pad_end(b[key], t) for _, b in parts]) for key in parts[0][1]}
    prompts = torch.cat([m.prompt().unsqueeze(0).expand(b["input_ids"].shape[0], -1, -1) for m, b in parts])
    model, mask = parts[0][0], batch["attention_mask"]
    inputs = model.prepare_inputs(batch["input_ids"], mask, prompts=prompts, token_type_ids=batch.get("token_type_ids"))
    offsets, n = inputs.pop("_offsets"), model.num_tokens
    first = pl.first_real_index(mask)
    inputs["first"] = torch.where(first < offsets, first, first + n)
    inputs["text_mask"] = pl.insert_constant(mask, 0, offsets, n)
    return inputs


def _pad_end(x: torch.Tensor, length: int) -> torch.Tensor:
    """Pads dim 1 of [b, T] or [b, T, d] with zeros up to ``length``."""
    extra = length - x.shape[1]
    return F.pad(x, (0, 0, 0, extra) if x.dim() == 3 else (0, extra))


def _head_logits(model: ResidualPromptModel, hidden: torch.Tensor, pooled: torch.Tensor | None,
                 part: Batch) -> torch.Tensor:
    """One prompt's logits [b, C] from its rows' last hidden states [b, L, d] and pooler output [b, d]."""
    if model._native_readout and model.pooling == "pooler":
        return readout.apply_head(model.backbone, model.head, pooled)
    if model._native_readout:  # a *ClassificationHead over the states, as the model's own forward
        (module,) = model.head.values()
        return module(hidden)
    x = readout.pool(hidden, part["text_mask"], part["first"], model.pooling)
    return readout.apply_head(model.backbone, model.head, x)


@torch.no_grad()
def encoder_logits(parts: Sequence[tuple[ResidualPromptModel, Batch]]) -> list[torch.Tensor]:
    """Logits of several prompts' batches on one shared encoder backbone.

    Args:
        parts: (model, batch) pairs, all models on the same backbone; each batch as
            ``features.collate`` makes it (input_ids, attention_mask [b_i, T_i], token_type_ids).
    Returns:
        one [b_i, C_i] tensor per part, in order (C_i: that prompt's label count).
    """
    out: list[torch.Tensor | None] = [None] * len(parts)
    shared = [i for i, (m, _) in enumerate(parts) if splittable(m)]
    for i, (model, batch) in enumerate(parts):
        if i not in shared:  # its own forward
            out[i] = model(batch["input_ids"], batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids")).logits
    if shared:
        logits = _shared_forward([parts[i] for i in shared])
        for i, value in zip(shared, logits):
            out[i] = value
    return out


def _shared_forward(parts: Sequence[tuple[ResidualPromptModel, Batch]]) -> list[torch.Tensor]:
    """Parts grouped by (n, placement), prompted per group, stacked with end padding, one body forward."""
    groups: dict[tuple, list[int]] = {}
    for i, (model, _) in enumerate(parts):
        groups.setdefault((model.num_tokens, model.placement_mode), []).append(i)
    order = [i for idx in groups.values() for i in idx]  # parts in stacking order
    prompted = [_prompted([parts[i] for i in idx]) for idx in groups.values()]
    length = max(p["inputs_embeds"].shape[1] for p in prompted)
    inputs = {key: torch.cat([_pad_end(p[key], length) for p in prompted])
              for key in ("inputs_embeds", "attention_mask", "token_type_ids", "text_mask") if key in prompted[0]}
    first = torch.cat([p["first"] for p in prompted])
    text_mask = inputs.pop("text_mask")
    backbone = parts[0][0].backbone
    res = getattr(backbone, backbone.base_model_prefix)(**inputs)
    hidden, pooled = res.last_hidden_state, getattr(res, "pooler_output", None)  # [B, L, d], [B, d]
    logits: list[torch.Tensor | None] = [None] * len(parts)
    start = 0
    for i in order:
        model, batch = parts[i]
        rows = slice(start, start + batch["input_ids"].shape[0])
        part = {"text_mask": text_mask[rows], "first": first[rows]}
        logits[i] = _head_logits(model, hidden[rows], None if pooled is None else pooled[rows], part)
        start = rows.stop
    return logits
