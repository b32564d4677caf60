"""Saving and loading prompts: folded (for inference), trainable (to resume), PEFT adapters.

A folded prompt folder holds ``prompt.safetensors`` (key ``prompt`` [n, d] plus ``head.*`` for
a trained classification head) and ``resprompt_config.json`` (n, d, the method config, library
version, backbone name, hidden and vocab size, a fingerprint of the input embeddings).

The PEFT export writes PEFT's PROMPT_TUNING layout (``adapter_config.json`` +
``adapter_model.safetensors`` with ``prompt_embeddings`` and the head as PEFT stores
``modules_to_save``), which stock ``peft.PeftModel.from_pretrained`` loads. PEFT always puts the
prompt before all tokens: our logits and PEFT's agree only for ``placement='prefix'``. For the
default encoder placement (after [CLS]) PEFT would run the prompt before [CLS], a different input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from . import __version__
from .config import ResidualPromptConfig
from .io import (
    FORMAT_VERSION,
    META_FILE,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    PROMPT_FILE,
    TRAINABLE_FILE,
    PromptFileError,
    atomic_dir,
    embedding_fingerprint,
    read_json,
    read_safetensors,
    write_json,
)

if TYPE_CHECKING:
    from .model import ResidualPromptModel

log = logging.getLogger(__name__)


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in d.items()}


def backbone_meta(model: ResidualPromptModel) -> dict:
    """What identifies the backbone a prompt was trained on."""
    bb = model.backbone
    emb = bb.get_input_embeddings()
    return {
        "backbone": getattr(bb.config, "_name_or_path", "") or getattr(bb, "name_or_path", ""),
        "backbone_class": type(bb).__name__,
        "model_type": getattr(bb.config, "model_type", None),
        "family": model.family,
        "hidden_size": int(emb.weight.shape[1]),
        "vocab_size": int(emb.weight.shape[0]),
        "embedding_fingerprint": embedding_fingerprint(emb),
    }


def _meta(model: ResidualPromptModel, kind: str) -> dict:
    return {
        "format": f"resprompt-{kind}",
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "num_tokens": model.num_tokens,
        "placement": model.placement_mode,
        "head": model.head_name,
        "config": model.config.to_dict(),
        **backbone_meta(model),
    }


def save_folded(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    tensors = {"prompt": model.fold()}
    tensors.update({f"head.{k}": v for k, v in model.head_state().items()})
    with atomic_dir(path) as tmp:
        save_file(_tensors(tensors), str(tmp / PROMPT_FILE))
        write_json(tmp / META_FILE, _meta(model, "folded"))


def check_backbone(meta: dict, model_meta: dict, where: Path, allow_mismatch: bool) -> None:
    """Refuses a prompt trained on another backbone (hidden size always; vocab and fingerprint unless allowed).

    A PEFT adapter records neither, so only its hidden size is checked.
    """
    if meta.get("hidden_size") != model_meta["hidden_size"]:
        raise PromptFileError(
            f"{where}: prompt was trained on a backbone with hidden size {meta.get('hidden_size')} "
            f"({meta.get('backbone') or 'unknown'}), this backbone has {model_meta['hidden_size']}"
        )
    for key in ("vocab_size", "embedding_fingerprint"):
        if key in meta and meta[key] != model_meta[key] and not allow_mismatch:
            raise PromptFileError(
                f"{where}: {key} {meta.get(key)!r} of the prompt's backbone ({meta.get('backbone') or 'unknown'}) "
                f"differs from this backbone's {model_meta[key]!r} ({model_meta['backbone'] or 'unknown'}); "
                "pass allow_mismatch=True (CLI: --allow-backbone-mismatch) to load it anyway"
            )


def _load_head(model: ResidualPromptModel, head: dict[str, torch.Tensor], where: Path) -> None:
    if not head:
        return
    if model.head_name is None:
        raise PromptFileError(f"{where}: holds a trained head ({', '.join(sorted(head))}) but the backbone has none")
    target = getattr(model.backbone, model.head_name)
    prefix = model.head_name + "."
    state = {}
    for k, v in head.items():
        if not k.startswith(prefix):
            raise PromptFileError(f"{where}: head weight {k!r} does not belong to head {model.head_name!r}")
        state[k[len(prefix):]] = v
    expected = target.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise PromptFileError(f"{where}: head weight {prefix + k!r} missing")
        if state[k].shape != v.shape:
            raise PromptFileError(
                f"{where}: head weight {prefix + k!r} has shape {tuple(state[k].shape)}, the backbone's has "
                f"{tuple(v.shape)} (different number of labels?)"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PromptFileError(f"{where}: unexpected head weights {extra}")
    target.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_folded(cls, backbone, path, tokenizer=None, allow_mismatch: bool = False) -> ResidualPromptModel:
    path = Path(path)
    if not path.is_dir():
        raise PromptFileError(f"{path}: prompt folder not found")
    if (path / META_FILE).is_file():
        meta = read_json(path / META_FILE)
        if meta.get("format") != "resprompt-folded":
            raise PromptFileError(f"{path / META_FILE}: format={meta.get('format')!r}, expected 'resprompt-folded'")
        tensors = read_safetensors(path / PROMPT_FILE)
        try:
            config = ResidualPromptConfig.from_dict({**meta["config"], "init": "uniform", "init_path": None})
        except (KeyError, TypeError, ValueError) as e:
            raise PromptFileError(f"{path / META_FILE}: bad 'config' ({e})") from None
        head = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        prompt = tensors.get("prompt")
    elif (path / PEFT_CONFIG).is_file():
        meta, config, prompt, head = _read_peft(path)
    else:
        raise PromptFileError(f"{path}: neither a resprompt prompt ({META_FILE}) nor a PEFT adapter ({PEFT_CONFIG})")
    if prompt is None or prompt.dim() != 2:
        raise PromptFileError(f"{path}: no 2-D prompt tensor in the weights file")
    model = cls(backbone, config, tokenizer=tokenizer, _init=prompt.float())
    check_backbone({**meta, "hidden_size": prompt.shape[1]}, backbone_meta(model), path, allow_mismatch)
    _load_head(model, head, path)
    model.set_folded_prompt(prompt)
    model.eval()
    return model


# ------------------------------------------------------------------------------------ PEFT
def save_peft(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    """Writes a PEFT PROMPT_TUNING adapter of the folded prompt (and head as ``modules_to_save``)."""
    cfg = model.backbone.config
    meta = {**backbone_meta(model), "placement": model.placement_mode, "head": model.head_name,
            "num_layers": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None),
            "num_attention_heads": getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None)}
    write_peft(model.fold(), model.head_state(), meta, path)


def write_peft(prompt: torch.Tensor, head: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
    """Writes PEFT's PROMPT_TUNING layout from a folded prompt [n, d], head weights and backbone metadata."""
    from peft import PromptTuningConfig

    if meta.get("placement") != "prefix":
        log.warning(
            "PEFT places the prompt before all tokens; this prompt was trained with placement=%s, so "
            "PEFT's outputs will differ from ours", meta.get("placement"),
        )
    family = meta.get("family")
    if family == "seq2seq":
        task_type = "SEQ_2_SEQ_LM"
    elif meta.get("head"):
        task_type = "SEQ_CLS"
    else:
        task_type = "CAUSAL_LM" if family == "decoder" else "FEATURE_EXTRACTION"
    peft_config = PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=int(prompt.shape[0]),
        token_dim=int(prompt.shape[1]),
        num_transformer_submodules=1,  # encoder only: with 2, PEFT also prompts the decoder
        num_attention_heads=meta.get("num_attention_heads"),
        num_layers=meta.get("num_layers"),
        base_model_name_or_path=meta.get("backbone") or None,
        modules_to_save=[meta["head"]] if meta.get("head") and task_type == "SEQ_CLS" else None,
        inference_mode=True,
    )
    tensors = {"prompt_embeddings": prompt}
    tensors.update({f"base_model.{k}": v for k, v in head.items()})
    with atomic_dir(path) as tmp:
        peft_config.save_pretrained(str(tmp))
        save_file(_tensors(tensors), str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})


def export_folder(prompt_dir: str | os.PathLike, fmt: str, output: str | os.PathLike) -> Path:
    """Converts a saved folded prompt without loading the backbone: ``peft``, ``safetensors`` or ``npy``.

    ``safetensors`` copies the resprompt folder (prompt + metadata); ``npy`` writes ``prompt.npy``
    (a plain float32 array, no pickle) plus the metadata JSON.
    """
    import numpy as np

    src = Path(prompt_dir)
    if (src / "best" / META_FILE).is_file():  # a run folder
        src = src / "best"
    meta = read_json(src / META_FILE)
    if meta.get("format") != "resprompt-folded":
        raise PromptFileError(f"{src / META_FILE}: format={meta.get('format')!r}, expected 'resprompt-folded'")
    tensors = read_safetensors(src / PROMPT_FILE)
    if "prompt" not in tensors:
        raise PromptFileError(f"{src / PROMPT_FILE}: no 'prompt' tensor")
    head = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
    if fmt == "peft":
        write_peft(tensors["prompt"], head, meta, output)
    elif fmt == "safetensors":
        with atomic_dir(output) as tmp:
            save_file(_tensors(tensors), str(tmp / PROMPT_FILE))
            write_json(tmp / META_FILE, meta)
    elif fmt == "npy":
        with atomic_dir(output) as tmp:
            np.save(tmp / "prompt.npy", tensors["prompt"].float().numpy(), allow_pickle=False)
            for k, v in head.items():
                np.save(tmp / f"head.{k}.npy", v.float().numpy(), allow_pickle=False)
            write_json(tmp / META_FILE, meta)
    else:
        raise ValueError(f"format={fmt!r} is invalid: expected peft, safetensors or npy")
    return Path(output)


def _read_peft(path: Path):
    cfg = read_json(path / PEFT_CONFIG)
    if cfg.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(
            f"{path / PEFT_CONFIG}: peft_type={cfg.get('peft_type')!r}, only PROMPT_TUNING adapters can be loaded"
        )
    tensors = read_safetensors(path / PEFT_WEIGHTS)
    prompt = tensors.get("prompt_embeddings")
    if prompt is None:
        raise PromptFileError(f"{path / PEFT_WEIGHTS}: no 'prompt_embeddings' tensor")
    head = {}
    for k, v in tensors.items():
        if k.startswith("base_model."):
            name = k[len("base_model."):].replace(".modules_to_save.default", "").replace(".original_module", "")
            head[name] = v
    config = ResidualPromptConfig(num_tokens=int(prompt.shape[0]), reparam="none", placement="prefix")
    meta = {"backbone": cfg.get("base_model_name_or_path")}
    return meta, config, prompt, head


def import_peft_prompt(path: str | os.PathLike) -> torch.Tensor:
    """The prompt [n, d] of a PEFT prompt-tuning adapter, e.g. to start training from it."""
    return _read_peft(Path(path))[2]


# ------------------------------------------------------------------------------ trainable
def save_trainable(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    if model.is_folded:
        raise ValueError("a folded model has no trainable state to save: use save_pretrained")
    state = {k: v for k, v in model.state_dict().items() if k.startswith("prompt_encoder.")}
    state.update({f"backbone.{k}": v for k, v in model.head_state().items()})
    with atomic_dir(path) as tmp:
        save_file(_tensors(state), str(tmp / TRAINABLE_FILE))
        write_json(tmp / META_FILE, _meta(model, "trainable"))


def load_trainable(model: ResidualPromptModel, path: str | os.PathLike, allow_mismatch: bool = False) -> None:
    path = Path(path)
    meta = read_json(path / META_FILE)
    if meta.get("format") != "resprompt-trainable":
        raise PromptFileError(f"{path / META_FILE}: format={meta.get('format')!r}, expected 'resprompt-trainable'")
    if meta.get("config") != model.config.to_dict():
        raise PromptFileError(f"{path / META_FILE}: prompt config differs from the model's: {meta.get('config')}")
    check_backbone(meta, backbone_meta(model), path, allow_mismatch)
    state = read_safetensors(path / TRAINABLE_FILE)
    expected = {k for k in model.state_dict() if k.startswith("prompt_encoder.")}
    expected |= {f"backbone.{k}" for k in model.head_state()}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise PromptFileError(f"{path / TRAINABLE_FILE}: keys differ (missing {missing}, unexpected {extra})")
    own = model.state_dict()
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise PromptFileError(f"{path / TRAINABLE_FILE}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
