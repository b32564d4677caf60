"""Readouts: which hidden states an encoder's classification head reads.

- ``pooler``: the base model's pooler output (BERT's tanh layer over the first position). For a
  ``placement='prefix'`` prompt that first position is a prompt slot, exactly as PEFT runs it.
- ``cls``: the last hidden state of the first real text token ([CLS] / <s>), wherever the prompt
  sits.
- ``mean``: the mean of the last hidden states of the real text tokens. Prompt slots do not count:
  this is the readout sentence-transformers checkpoints were trained with (over text tokens), and
  leaving the slots out keeps one readout for the prompted model and the head-only probe, so the
  two compare; the prompt still acts on every text state through attention.
- ``native``: the architecture's own readout, as its forward computes it (``pooler`` where the base
  model has a pooler feeding a linear head, as BERT; ``cls`` for RoBERTa / MPNet heads); what
  prompts saved before the readout option existed were trained with.
- ``auto``: what the checkpoint declares in sentence-transformers' ``1_Pooling/config.json``
  (MiniLM and MPNet declare ``mean``), else ``native``; ``native`` too, with a warning, where the
  head cannot read the declared readout (DistilBERT's two layers).

A head is either one linear layer over [B, d] (BERT's ``classifier``, behind the backbone's
dropout) or a classification head over the first position of [B, T, d] (RoBERTa, MPNet: we pass
it [B, 1, d]); other heads (DistilBERT's two layers) support only their own readout.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from .heads import HeadError
from .prompt.config import POOLINGS

log = logging.getLogger(__name__)


def declared_pooling(backbone) -> str | None:
    """``cls`` / ``mean`` as the checkpoint's ``1_Pooling/config.json`` declares it, or None."""
    name = getattr(backbone.config, "_name_or_path", "") or ""
    path = Path(name) / "1_Pooling" / "config.json" if name else None
    if path is None or not path.is_file():
        path = _hub_pooling_file(name)
    if path is None:
        return None
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return None


def _hub_pooling_file(name: str) -> str | None:
    if not name or os.path.isdir(name) or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(name, "1_Pooling/config.json")
    except Exception:  # noqa: BLE001 (no such file, no network: the architecture's default applies)
        return None


def head_style(heads: nn.ModuleDict) -> str:
    """``linear`` (one nn.Linear over [B, d]), ``features`` (one head over [B, T, d]) or ``other``."""
    if len(heads) != 1:
        return "other"
    (module,) = heads.values()
    if isinstance(module, nn.Linear):
        return "linear"
    return "features" if type(module).__name__.endswith("ClassificationHead") else "other"


def native_pooling(backbone, heads: nn.ModuleDict) -> str:
    """The readout the architecture's own forward uses."""
    body = getattr(backbone, getattr(backbone, "base_model_prefix", ""), None)
    if head_style(heads) == "linear" and getattr(body, "pooler", None) is not None:
        return "pooler"
    return "cls"


def resolve_pooling(mode: str, backbone, heads: nn.ModuleDict) -> str:
    """``pooler`` / ``cls`` / ``mean`` for ``mode`` on this backbone; HeadError if it cannot read it."""
    if mode not in POOLINGS:
        raise HeadError(f"pooling={mode!r} is invalid: expected one of {', '.join(POOLINGS)}")
    native = native_pooling(backbone, heads)
    resolved = {"auto": declared_pooling(backbone) or native, "native": native}.get(mode, mode)
    if resolved == native:
        return resolved
    if mode == "auto" and (resolved == "pooler" or head_style(heads) == "other"):  # the default must not fail
        log.warning("%s declares pooling %r, which its head (%s) cannot read: pooling 'auto' reads its own (%s)",
                    type(backbone).__name__, resolved, ", ".join(heads), native)
        return native
    if resolved == "pooler":
        raise HeadError(f"pooling='pooler': {type(backbone).__name__} has no pooler feeding its head; use cls or mean")
    if head_style(heads) == "other":
        raise HeadError(f"pooling={resolved!r}: the head of {type(backbone).__name__} ({', '.join(heads)}) reads "
                        f"only its own readout ({native}); use pooling={native!r}")
    return resolved


def reads_natively(mode: str, resolved: str, backbone, heads: nn.ModuleDict, slot_first: bool) -> bool:
    """Whether the backbone's own forward computes readout ``resolved`` (asked for as ``mode``).

    A head over the first position (RoBERTa's, MPNet's, DistilBERT's: native ``cls``) reads a prompt slot
    when one comes first (``slot_first``: placement ``prefix``). ``cls`` means the first text token, so
    the backbone's forward is that readout there only when the architecture's own was asked for
    (``native``, or ``auto`` with nothing declared), as PEFT runs it.
    """
    if resolved != native_pooling(backbone, heads):
        return False
    if resolved != "cls" or not slot_first:
        return True
    return mode == "native" or (mode == "auto" and declared_pooling(backbone) is None)


def pool(hidden: torch.Tensor, text_mask: torch.Tensor, first: torch.Tensor, pooling: str) -> torch.Tensor:
    """The pooled states: ``cls`` takes position ``first`` of each row, ``mean`` averages the text tokens.

    Args:
        hidden: [B, L, d] last hidden states. text_mask: [B, L], 1 on real text tokens (not prompt
            slots, not padding). first: [B] position of each row's first real text token.
    Returns:
        [B, d].
    """
    if pooling == "cls":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if pooling == "mean":
        m = text_mask.float().unsqueeze(-1)  # [B, L, 1]; sums in float32 (bf16 counts stop at 256)
        return ((hidden.float() * m).sum(1) / m.sum(1).clamp(min=1)).to(hidden.dtype)
    raise ValueError(f"pool: pooling={pooling!r} is computed by the backbone itself")


def apply_head(backbone, heads: nn.ModuleDict, pooled: torch.Tensor) -> torch.Tensor:
    """The head's logits [B, C] from pooled states [B, d] (``head_style`` linear or features)."""
    (module,) = heads.values()
    if head_style(heads) == "linear":
        return module(getattr(backbone, "dropout", nn.Identity())(pooled))
    return module(pooled.unsqueeze(1))
