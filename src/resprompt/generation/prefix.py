"""A decoder prompt as a KV prefix: its keys and values computed once, reused by every request.

A folded decoder prompt is constant, and so is everything before it in a row: with the
``after_bos`` placement a row reads [BOS, p_1 .. p_n, text...], with ``prefix`` [p_1 .. p_n, text...].
Causal attention means those first slots never see the text, so their keys and values are the
same for every request. ``PromptPrefix.build`` runs them through the backbone once; a request then
feeds only its text, at positions that continue after the prefix, and greedy outputs equal those of
recomputing the prompt every time (tests/test_generation.py).

``BatchPrefix`` stacks the prefixes of a batch's rows (one prompt per row, lengths may differ):
each row's prefix is left padded to the longest one, the pad slots masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .decode import cache_kwarg, output_cache

if TYPE_CHECKING:
    from ..model import ResidualPromptModel


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values), each [B, heads, slots, head_dim], from a transformers cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # legacy tuple of tuples


@dataclass
class PromptPrefix:
    """One prompt's cached slots: ``layers[i]`` = (keys, values) [heads, m, head_dim]; ``bos``: the
    prefix starts with BOS (rows must then not)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    length: int
    bos: bool

    @classmethod
    @torch.no_grad()
    def build(cls, model: ResidualPromptModel, prompt: torch.Tensor | None = None) -> PromptPrefix:
        """The prefix of ``prompt`` ([n, d]; default the model's folded prompt) on the model's backbone."""
        reason = prefix_unsupported(model)
        if reason is not None:
            raise ValueError(reason)
        prompt = model.prompt() if prompt is None else prompt
        if prompt.shape != (model.num_tokens, model.hidden_size):
            raise ValueError(f"prompt has shape {tuple(prompt.shape)}, expected [{model.num_tokens}, {model.hidden_size}]")
        embed = model.backbone.get_input_embeddings()
        bos_id = _bos_id(model)
        parts = [prompt.to(embed.weight.dtype).unsqueeze(0)]
        use_bos = model.placement_mode == "after_bos" and bos_id is not None
        if use_bos:
            parts.insert(0, embed(torch.tensor([[bos_id]], device=embed.weight.device)))
        embeds = torch.cat(parts, dim=1)  # [1, m, d]
        m = embeds.shape[1]
        out = model.run_backbone({"inputs_embeds": embeds, "attention_mask": torch.ones(1, m, dtype=torch.long,
                                                                                         device=embeds.device),
                                  "position_ids": torch.arange(m, device=embeds.device).unsqueeze(0)},
                                 use_cache=True)
        layers = [(k[0].clone(), v[0].clone()) for k, v in _layers(output_cache(out))]
        return cls(layers, m, use_bos)


def _bos_id(model) -> int | None:
    """The BOS a row starts with: the tokenizer's (which adds it); without a tokenizer, the config's."""
    tok = model.tokenizer
    if tok is not None:
        return getattr(tok, "bos_token_id", None)
    return getattr(model.backbone.config, "bos_token_id", None)


def prefix_unsupported(model) -> str | None:
    """Why a KV prefix cannot stand for this model's prompt (None when it can).

    The prefix layout puts each row's padding between its prefix and its text; that is exact under
    full attention only (a sliding window or chunked attention counts cache slots, pads included).
    """
    if model.family != "decoder":
        return "a KV prefix is for decoder backbones"
    if model.placement_mode not in ("after_bos", "prefix"):
        return f"placement {model.placement_mode!r}: a KV prefix needs 'prefix' or 'after_bos'"
    cfg = model.backbone.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    windowed = getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) is not False
    if kinds != {"full_attention"} or windowed or getattr(cfg, "attention_chunk_size", None):
        return f"{type(model.backbone).__name__}: layers other than full attention ({', '.join(sorted(kinds))}" + (
            f", sliding window {cfg.sliding_window}" if windowed else "") + "): recompute the prompt instead"
    return None


@dataclass
class BatchPrefix:
    """The prefixes of a batch's rows, one per row."""

    rows: list[PromptPrefix]

    def cache(self, backbone):
        """(a fresh transformers cache of the rows' prefixes left padded to the longest, mask [B, M])."""
        from transformers import DynamicCache

        width = max(p.length for p in self.rows)
        mask = torch.zeros(len(self.rows), width, dtype=torch.long)
        per_layer = []
        for i in range(len(self.rows[0].layers)):
            ks, vs = [], []
            for r, p in enumerate(self.rows):
                k, v = p.layers[i]
                pad = width - p.length
                ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
                vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
                if i == 0:
                    mask[r, pad:] = 1
            per_layer.append((torch.stack(ks), torch.stack(vs)))
        return DynamicCache(per_layer, config=backbone.config), mask.to(per_layer[0][0].device)

    def inputs(self, model: ResidualPromptModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """What the decoder loop starts from: (text embeds [B, T, d], mask [B, M + T], positions [B, T], cache).

        ``input_ids`` [B, T] are the rows' text after the prefix (no BOS where the prefix holds one),
        left padded; each row's positions continue after its own prefix.
        """
        if len(self.rows) != input_ids.shape[0]:
            raise ValueError(f"{len(self.rows)} prefixes for a batch of {input_ids.shape[0]} rows")
        if bool((attention_mask.sum(-1) == 0).any()):
            raise ValueError("a row has no text after its prefix: a KV-prefix row needs at least one token")
        cache, prefix_mask = self.cache(model.backbone)
        lengths = torch.tensor([p.length for p in self.rows], device=input_ids.device).unsqueeze(1)
        positions = lengths + (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, T]
        embeds = model.backbone.get_input_embeddings()(input_ids)
        mask = torch.cat([prefix_mask.to(attention_mask.device, attention_mask.dtype), attention_mask], dim=1)
        return embeds, mask, positions, cache


__all__ = ["PromptPrefix", "BatchPrefix", "cache_kwarg", "prefix_unsupported"]
