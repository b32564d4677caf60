"""Prompt files: one reader for every format, the writers, and the trainable state for resuming.

``read_prompt(path)`` reads any saved prompt (a resprompt folder, a stock PEFT prompt-tuning
adapter, or a run folder, whose ``best/`` it reads) into a ``SavedPrompt``: the folded prompt
[n, d], the head weights, the prompt config, the task metadata and what identifies the backbone.
Loading (``ResidualPromptModel.from_pretrained``), ``init='saved'``, export and the CLI all use it.

A resprompt folder holds ``prompt.safetensors`` (``prompt`` [n, d] plus ``head.<module>.<param>``)
and ``resprompt_config.json`` (n, d, the method config, placement, task metadata, library version,
backbone name, hidden and vocab size, a fingerprint of the input embeddings).

The PEFT export writes PEFT's PROMPT_TUNING layout (``adapter_config.json`` +
``adapter_model.safetensors`` with ``prompt_embeddings`` and the head as PEFT stores
``modules_to_save``: ``base_model.<module>.<param>``), which stock ``peft.PeftModel.from_pretrained``
loads. PEFT always puts the prompt before all tokens: our logits and PEFT's agree only for
``placement='prefix'``. A PEFT seq2seq adapter made with ``num_transformer_submodules=2`` (PEFT's
default for T5) stores [2n, d]: the first n rows prompt the encoder, the other n the decoder during
PEFT's teacher-forced training only (PEFT's ``generate`` uses the first n alone), so we read the
first n and say so in the log.

Every save replaces the folder's prompt files as a whole (``PROMPT_FILES``): a folder never holds
two prompts of different formats.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from .compat import backbone_meta, check_backbone, claims, detected_family, peft_task_type
from .io import (
    FORMAT_VERSION,
    META_FILE,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    PROMPT_FILE,
    TRAINABLE_FILE,
    PromptFileError,
    atomic_dir,
    read_json,
    read_safetensors,
    write_json,
)
from .prompt.config import ResidualPromptConfig
from .version import __version__

if TYPE_CHECKING:
    from .model import ResidualPromptModel

log = logging.getLogger(__name__)

# A PEFT adapter records no task: this file beside its adapter_config.json gives the task metadata (as our
# prompts record it, e.g. {"name": "RTE"}), read by predict, eval and serve alike.
TASK_FILE = "resprompt_task.json"

# The npy export's metadata: its own name, so that an npy folder never passes for a resprompt prompt.
NPY_META = "prompt_npy.json"

# Every file a saved prompt may consist of, in any format: a save drops them all first.
PROMPT_FILES = (PROMPT_FILE, META_FILE, PEFT_CONFIG, PEFT_WEIGHTS, TASK_FILE, "prompt.npy", "head.*.npy", NPY_META)


@dataclass
class SavedPrompt:
    """A prompt as read from disk. ``prompt`` [n, d]; ``head`` keyed ``<module>.<param>``."""

    path: Path
    format: str  # "resprompt" or "peft"
    prompt: torch.Tensor
    config: ResidualPromptConfig
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    task: dict | None = None
    backbone: dict = field(default_factory=dict)  # backbone, hidden_size, vocab_size, embedding_fingerprint
    placement: str | None = None


def _tensors(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in d.items()}


def prompt_folder(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/best`` for a run folder."""
    path = Path(path)
    if not (path / META_FILE).is_file() and not (path / PEFT_CONFIG).is_file() and (path / "best").is_dir():
        return path / "best"
    return path


# ------------------------------------------------------------------------------------ reading
def read_prompt(path: str | os.PathLike) -> SavedPrompt:
    """Reads a saved prompt of any format; ``PromptFileError`` naming the file on any problem."""
    path = prompt_folder(path)
    if not path.is_dir():
        raise PromptFileError(f"{path}: prompt folder not found")
    ours, peft_ = (path / META_FILE).is_file(), (path / PEFT_CONFIG).is_file()
    if ours and peft_:
        raise PromptFileError(f"{path}: holds both a resprompt prompt ({META_FILE}) and a PEFT adapter "
                              f"({PEFT_CONFIG}); keep one")
    if ours:
        if (path / TASK_FILE).is_file():
            raise PromptFileError(f"{path}: the prompt records its task and {TASK_FILE} gives one too; keep one")
        saved = _read_resprompt(path)
    elif peft_:
        saved = _read_peft(path)
    else:
        raise PromptFileError(f"{path}: neither a resprompt prompt ({META_FILE}) nor a PEFT adapter ({PEFT_CONFIG})")
    if saved.prompt.dim() != 2 or saved.prompt.shape[0] != saved.config.num_tokens:
        raise PromptFileError(f"{path}: prompt tensor has shape {tuple(saved.prompt.shape)}, expected "
                              f"({saved.config.num_tokens}, d)")
    bad = _non_finite(saved.prompt, saved.head)
    if bad:
        raise PromptFileError(f"{path}: {bad} holds non-finite values (NaN or inf)")
    return saved


def _non_finite(prompt: torch.Tensor, head: dict[str, torch.Tensor]) -> str | None:
    """``the prompt`` or ``head weight '<key>'``: the first tensor holding NaN or inf, else None."""
    named = {"the prompt": prompt, **{f"head weight {k!r}": v for k, v in head.items()}}
    return next((name for name, t in named.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)


def _refuse_non_finite(prompt: torch.Tensor, head: dict[str, torch.Tensor], path) -> None:
    """ValueError before anything is written when the prompt or a head weight holds NaN or inf."""
    bad = _non_finite(prompt, head)
    if bad:
        raise ValueError(f"{path}: {bad} holds non-finite values (NaN or inf); nothing written")


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# the backbone fields a prompt records, and their JSON types (null: not recorded)
BACKBONE_FIELDS = {"backbone": str, "backbone_class": str, "model_type": str, "family": str, "hidden_size": int,
                   "vocab_size": int, "embedding_fingerprint": str}


def _check_dtypes(where: Path, tensors: dict[str, torch.Tensor]) -> None:
    """PromptFileError naming the key of a tensor that is not floating point (ints would truncate weights)."""
    for key, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            raise PromptFileError(f"{where}: tensor {key!r} has dtype {str(t.dtype).removeprefix('torch.')}, "
                                  "expected float16, bfloat16, float32 or float64")


def _check_task(task, where: Path) -> dict | None:
    """The saved task metadata, its fields of the types eval / predict / serving read; PromptFileError else."""
    if task is None:
        return None
    if not isinstance(task, dict):
        raise PromptFileError(f"{where}: 'task' is {type(task).__name__}, expected an object")
    for key, kind in (("name", str), ("kind", str)):
        if key in task and not isinstance(task[key], kind):
            raise PromptFileError(f"{where}: task.{key}={task[key]!r}, expected a string")
    labels = task.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        raise PromptFileError(f"{where}: task.labels={labels!r}, expected a list of strings")
    return task


def _backbone_fields(meta: dict, where: Path) -> dict:
    """The recorded backbone fields (null ones left out); PromptFileError on another type."""
    out = {}
    for key, kind in BACKBONE_FIELDS.items():
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PromptFileError(f"{where}: {key}={value!r}, expected {'a string' if kind is str else 'an integer'}")
        out[key] = value
    return out


def _read_resprompt(path: Path) -> SavedPrompt:
    meta = read_json(path / META_FILE)
    if meta.get("format") != "resprompt-folded":
        raise PromptFileError(f"{path / META_FILE}: format={meta.get('format')!r}, expected 'resprompt-folded'")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise PromptFileError(f"{path / META_FILE}: format_version={version!r}; this resprompt reads versions 1 to "
                              f"{FORMAT_VERSION} (a newer resprompt wrote it? upgrade)")
    tensors = read_safetensors(path / PROMPT_FILE)
    if "prompt" not in tensors:
        raise PromptFileError(f"{path / PROMPT_FILE}: no 'prompt' tensor")
    _check_dtypes(path / PROMPT_FILE, tensors)
    if tensors["prompt"].dim() != 2:
        raise PromptFileError(f"{path / PROMPT_FILE}: prompt tensor has shape {tuple(tensors['prompt'].shape)}, "
                              "expected (num_tokens, d)")
    try:
        # prompts saved before the readout option was read with the architecture's own ("native")
        config = ResidualPromptConfig.from_dict({"pooling": "native", **meta["config"], "init": "uniform",
                                                 "init_path": None})
    except (KeyError, TypeError, ValueError) as e:
        raise PromptFileError(f"{path / META_FILE}: bad 'config' ({e})") from None
    task = _check_task(meta.get("task"), path / META_FILE)
    backbone = _backbone_fields(meta, path / META_FILE)
    prompt = tensors["prompt"]
    for key, size in (("num_tokens", prompt.shape[0]), ("hidden_size", prompt.shape[-1])):
        if key in meta and meta[key] != size:
            raise PromptFileError(f"{path / META_FILE}: {key}={meta[key]!r} but the prompt tensor in "
                                  f"{PROMPT_FILE} has shape {tuple(prompt.shape)}")
    head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    if meta.get("head") and not head:
        raise PromptFileError(f"{path / PROMPT_FILE}: no head weights, though {META_FILE} says the prompt "
                              f"was trained with head {meta['head']!r}")
    return SavedPrompt(path, "resprompt", prompt.float(), config, head, task, backbone, meta.get("placement"))


def _read_peft(path: Path) -> SavedPrompt:
    cfg = read_json(path / PEFT_CONFIG)
    if cfg.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(
            f"{path / PEFT_CONFIG}: peft_type={cfg.get('peft_type')!r}, only PROMPT_TUNING adapters can be loaded"
        )
    tensors = read_safetensors(path / PEFT_WEIGHTS)
    _check_dtypes(path / PEFT_WEIGHTS, tensors)
    prompt = tensors.get("prompt_embeddings")
    if prompt is None or prompt.dim() != 2:
        raise PromptFileError(f"{path / PEFT_WEIGHTS}: no 2-D 'prompt_embeddings' tensor")
    n, subs = cfg.get("num_virtual_tokens"), cfg.get("num_transformer_submodules") or 1
    if not isinstance(n, int) or n < 1 or not isinstance(subs, int) or prompt.shape[0] != n * subs:
        raise PromptFileError(f"{path}: prompt_embeddings has {prompt.shape[0]} rows but the config says "
                              f"num_virtual_tokens={n!r} x num_transformer_submodules={subs!r}")
    if subs > 1:
        log.warning("%s: PEFT adapter with num_transformer_submodules=%d: using its first %d rows (the encoder "
                    "prompt, which PEFT's generate also uses); the decoder rows are dropped", path, subs, n)
    head = {}
    for k, v in tensors.items():
        if k.startswith("base_model."):
            name = k[len("base_model."):].replace(".modules_to_save.default", "").replace(".original_module", "")
            head[name.removeprefix("model.")] = v
    config = ResidualPromptConfig(num_tokens=n, reparam="none", placement="prefix", pooling="native")  # as PEFT runs it
    backbone = {"backbone": cfg.get("base_model_name_or_path"), "hidden_size": int(prompt.shape[1]),
                **({"task_type": cfg["task_type"]} if isinstance(cfg.get("task_type"), str) else {})}
    task = _check_task(read_json(path / TASK_FILE), path / TASK_FILE) if (path / TASK_FILE).is_file() else None
    return SavedPrompt(path, "peft", prompt[:n].float(), config, head, task, backbone, "prefix")


def load_folded(cls, backbone, path, tokenizer=None, allow_mismatch: bool = False,
                family: str | None = None) -> ResidualPromptModel:
    """A ready-to-use model of ``cls`` with the prompt at ``path`` folded in, on ``backbone``.

    It runs as ``family`` if given, else as the family it was saved with, else as detected (``compat``).
    """
    from .backbones import check_family, detect_family
    from .heads import HeadError

    saved = read_prompt(path)
    own = check_family(family) or detected_family(backbone)  # what this backbone is: the caller's word, else detection
    check_backbone(saved.backbone, backbone_meta(backbone, own), saved.path, allow_mismatch)
    family = family or claims(saved.backbone).get("family") or own or detect_family(backbone)  # the last raises
    model = cls(backbone, saved.config, tokenizer=tokenizer, family=family, task=saved.task, _folded=saved.prompt)
    if len(model.head) and not saved.head:
        raise PromptFileError(f"{saved.path}: holds no head weights, but {type(backbone).__name__} is a task model "
                              f"whose head ({model.head_name}) the prompt must bring; load it onto a bare or LM "
                              "backbone, or save the prompt with its head")
    try:
        model.load_head_state(saved.head, str(saved.path))
    except HeadError as e:
        raise PromptFileError(str(e)) from None
    model.eval()
    return model


# ------------------------------------------------------------------------------------ writing
def _config_dict(model: ResidualPromptModel) -> dict:
    """The prompt config as saved: ``pooling`` as resolved on this backbone (``auto`` -> ``mean`` ...); ``native``
    where the backbone's own first-position head reads a prompt slot (placement ``prefix``), which ``cls``
    (the first text token) would not reproduce on load."""
    slot = model._native_readout and model.pooling == "cls" and model.placement_mode == "prefix"
    return {**model.config.to_dict(), "pooling": "native" if slot else model.pooling or model.config.pooling}


def _meta(model: ResidualPromptModel, kind: str) -> dict:
    return {
        "format": f"resprompt-{kind}",
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "num_tokens": model.num_tokens,
        "placement": model.placement_mode,
        "head": model.head_name,
        "task": model.task,
        "config": _config_dict(model),
        "pooling_native": model._native_readout,  # what PEFT's own forward would read (export warns otherwise)
        **backbone_meta(model.backbone, model.family),
    }


def save_folded(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    write_folded(model.fold(), model.head_state(), _meta(model, "folded"), path)


def write_folded(prompt: torch.Tensor, head: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
    """Writes the resprompt layout: ``prompt`` [n, d] and ``head.<module>.<param>``, plus the metadata JSON."""
    _refuse_non_finite(prompt, head, path)
    tensors = {"prompt": prompt, **{f"head.{k}": v for k, v in head.items()}}
    with atomic_dir(path, drop=PROMPT_FILES) as tmp:
        save_file(_tensors(tensors), str(tmp / PROMPT_FILE))
        write_json(tmp / META_FILE, meta)


def save_peft(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    """Writes a PEFT PROMPT_TUNING adapter of the folded prompt (and head as ``modules_to_save``)."""
    cfg = model.backbone.config
    meta = {**backbone_meta(model.backbone, model.family), "placement": model.placement_mode, "head": model.head_name,
            "pooling": model.pooling, "pooling_native": model._native_readout, "task": model.task,
            "num_layers": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None),
            "num_attention_heads": getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None)}
    write_peft(model.fold(), model.head_state(), meta, path)


def write_peft(prompt: torch.Tensor, head: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> None:
    """Writes PEFT's PROMPT_TUNING layout from a folded prompt [n, d], head weights and backbone metadata."""
    from peft import PromptTuningConfig

    _refuse_non_finite(prompt, head, path)
    pooling = meta.get("pooling") or (meta.get("config") or {}).get("pooling")
    if meta.get("pooling_native") is False:
        log.warning("PEFT runs the backbone's own forward, which reads its native readout, not this prompt's "
                    "pooling=%s: PEFT's logits will differ from ours", pooling)
    elif meta.get("pooling_native") is None and meta.get("head") and pooling not in (None, "native"):
        log.warning("this prompt (pooling=%s) was saved before resprompt recorded whether that is the backbone's "
                    "native readout; PEFT runs the backbone's own forward, so if it is not, PEFT's logits will "
                    "differ from ours", pooling)
    if meta.get("placement") != "prefix":
        log.warning(
            "PEFT places the prompt before all tokens; this prompt was trained with placement=%s, so "
            "PEFT's outputs will differ from ours", meta.get("placement"),
        )
    task_type = peft_task_type(meta)
    modules = sorted({k.split(".", 1)[0] for k in head})
    peft_config = PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=int(prompt.shape[0]),
        token_dim=int(prompt.shape[1]),
        num_transformer_submodules=1,  # encoder only: with 2, PEFT also prompts the decoder
        num_attention_heads=meta.get("num_attention_heads"),
        num_layers=meta.get("num_layers"),
        base_model_name_or_path=meta.get("backbone") or None,
        modules_to_save=modules if modules and task_type in ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS") else None,
        inference_mode=True,
    )
    tensors = {"prompt_embeddings": prompt}
    tensors.update({f"base_model.{k}": v for k, v in head.items()})
    with atomic_dir(path, drop=PROMPT_FILES) as tmp:
        peft_config.save_pretrained(str(tmp))
        save_file(_tensors(tensors), str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        if meta.get("task"):  # PEFT's config has no place for the task: predict, eval and serve read it here
            write_json(tmp / TASK_FILE, meta["task"])


def export_folder(prompt_dir: str | os.PathLike, fmt: str, output: str | os.PathLike) -> Path:
    """Converts a saved prompt without loading the backbone: ``peft``, ``safetensors`` or ``npy``.

    ``safetensors`` copies the resprompt folder (prompt + metadata); ``npy`` writes ``prompt.npy`` and
    ``head.<key>.npy`` (plain float32 arrays, no pickle) plus the metadata as ``prompt_npy.json``. An
    ``output`` that is (or holds) the prompt folder or the run folder given is refused.
    """
    import numpy as np

    if fmt not in ("peft", "safetensors", "npy"):
        raise ValueError(f"format={fmt!r} is invalid: expected peft, safetensors or npy")
    saved = read_prompt(prompt_dir)
    if saved.format != "resprompt":
        raise PromptFileError(f"{saved.path}: export reads resprompt prompts; this is a {saved.format} adapter")
    src = saved.path
    _refuse_output_over(output, Path(prompt_dir), src)
    meta = read_json(src / META_FILE)
    if fmt == "peft":
        write_peft(saved.prompt, saved.head, meta, output)
    elif fmt == "safetensors":
        write_folded(saved.prompt, saved.head, meta, output)
    else:
        with atomic_dir(output, drop=PROMPT_FILES) as tmp:
            np.save(tmp / "prompt.npy", saved.prompt.float().numpy(), allow_pickle=False)
            for k, v in saved.head.items():
                np.save(tmp / f"head.{k}.npy", v.float().numpy(), allow_pickle=False)
            write_json(tmp / NPY_META, {**meta, "format": "resprompt-npy"})
    return Path(output)


def _refuse_output_over(output: str | os.PathLike, *sources: Path) -> None:
    """ValueError when ``output`` is one of the folders being exported from, or holds one."""
    out = Path(output).resolve()
    for src in sources:
        if out == src.resolve() or out in src.resolve().parents:
            raise ValueError(f"{output}: is or holds the prompt folder being exported ({src}); choose another "
                             "output folder")


def import_peft_prompt(path: str | os.PathLike) -> torch.Tensor:
    """The prompt [n, d] of a PEFT prompt-tuning adapter (or any saved prompt), e.g. to start training from it."""
    return read_prompt(path).prompt


# ------------------------------------------------------------------------------ trainable
def _trainable_keys(model: ResidualPromptModel) -> list[str]:
    return [k for k in model.state_dict() if k.startswith(("prompt_encoder.", "head."))]


def save_trainable(model: ResidualPromptModel, path: str | os.PathLike) -> None:
    if model.is_folded:
        raise ValueError("a folded model has no trainable state to save: use save_pretrained")
    own = model.state_dict()
    state = {k: own[k] for k in _trainable_keys(model)}
    with atomic_dir(path) as tmp:
        save_file(_tensors(state), str(tmp / TRAINABLE_FILE))
        write_json(tmp / META_FILE, _meta(model, "trainable"))


def load_trainable(model: ResidualPromptModel, path: str | os.PathLike, allow_mismatch: bool = False) -> None:
    path = Path(path)
    meta = read_json(path / META_FILE)
    if meta.get("format") != "resprompt-trainable":
        raise PromptFileError(f"{path / META_FILE}: format={meta.get('format')!r}, expected 'resprompt-trainable'")
    if meta.get("config") != _config_dict(model):
        raise PromptFileError(f"{path / META_FILE}: prompt config differs from the model's: {meta.get('config')}")
    check_backbone(meta, backbone_meta(model.backbone, model.family), path, allow_mismatch)
    state = read_safetensors(path / TRAINABLE_FILE)
    expected = set(_trainable_keys(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise PromptFileError(f"{path / TRAINABLE_FILE}: keys differ (missing {missing}, unexpected {extra})")
    own = model.state_dict()
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise PromptFileError(f"{path / TRAINABLE_FILE}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
