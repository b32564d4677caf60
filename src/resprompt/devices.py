"""Where, and in what precision, a loaded backbone runs for ``eval``, ``predict`` and ``serve``.

``--device``: ``auto`` (the first CUDA device, else Apple's MPS, else the CPU), ``cpu``, ``cuda``,
``cuda:N`` or ``mps``; a device torch cannot see is refused, never silently replaced by the CPU.
``--dtype``: ``auto`` (as the checkpoint loads), ``float32``, ``bfloat16`` or ``float16``. Folded
prompts stay float32 and are cast to the embedding's dtype where they enter the backbone.
Training places the model through Accelerate instead (``--mixed-precision``).
"""

from __future__ import annotations

import logging
import re

import torch

from .io import FINGERPRINT_ATTR, embedding_fingerprint
from .training.runconfig import ConfigError

log = logging.getLogger(__name__)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str, where: str = "--device") -> torch.device:
    """The torch device ``spec`` names (ConfigError when torch cannot see it)."""
    text = str(spec).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise ConfigError(f"{where} mps: torch sees no MPS device here; use {where} cpu or auto")
        return torch.device("mps")
    found = re.fullmatch(r"cuda(?::(\d+))?", text)
    if found is None:
        raise ConfigError(f"{where} must be {DEVICE_CHOICES}, got {spec!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{where} {spec}: torch sees no CUDA device (torch.cuda.is_available() is False; "
                          f"this torch is {torch.__version__}); use {where} cpu or auto")
    index, count = int(found.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{where} {spec}: there are {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def resolve_dtype(spec: str, where: str = "--dtype") -> torch.dtype | None:
    """The torch dtype ``spec`` names; None for ``auto`` (keep what the checkpoint loads as)."""
    text = str(spec).strip().lower()
    if text not in DTYPES:
        raise ConfigError(f"{where} must be one of {', '.join(DTYPES)}, got {spec!r}")
    return DTYPES[text]


def place(backbone, device: torch.device | str, dtype: torch.dtype | None = None):
    """``backbone`` moved to ``device`` and cast to ``dtype`` (None: left as loaded), its embedding
    fingerprint taken first: prompts check the weights as the checkpoint holds them, not as rounded."""
    device, embed = torch.device(device), backbone.get_input_embeddings()
    if dtype is not None and dtype != embed.weight.dtype:
        setattr(embed, FINGERPRINT_ATTR, embedding_fingerprint(embed))
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        log.warning("--dtype %s on the CPU: 16-bit matrix products run much slower there than float32 "
                    "(it saves memory only)", str(dtype).removeprefix("torch."))
    backbone = backbone.to(device=device, dtype=dtype)
    if dtype is not None:
        _keep_fp32(backbone, dtype)
    return backbone


def _keep_fp32(backbone, dtype: torch.dtype) -> None:
    """Modules the architecture keeps in float32 (T5's feed-forward output overflows in float16), as
    ``from_pretrained(dtype=...)`` keeps them."""
    names = set(getattr(backbone, "_keep_in_fp32_modules_strict", None) or ())
    if dtype == torch.float16:
        names |= set(getattr(backbone, "_keep_in_fp32_modules", None) or ())
    if not names:
        return
    for name, module in backbone.named_modules():
        if any(part in names for part in name.split(".")):
            module.float()


def model_device(model) -> torch.device:
    """Where a (prompted) model's inputs go: its backbone's input embeddings, else its first parameter."""
    backbone = getattr(model, "backbone", model)
    embed = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    if embed is not None:
        return embed.weight.device
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
