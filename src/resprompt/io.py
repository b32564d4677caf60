"""Files: atomic writes, JSON and safetensors readers, backbone fingerprints.

Only safetensors and JSON are ever read; nothing is unpickled. A folder is written under a
temporary name beside its destination and renamed into place, so a crash never leaves a
half-written prompt where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from . import faults

PROMPT_FILE = "prompt.safetensors"
META_FILE = "resprompt_config.json"
TRAINABLE_FILE = "trainable.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
FORMAT_VERSION = 1
COMPLETE = ".complete"  # inside a temporary folder: its content is whole


class PromptFileError(ValueError):
    """A saved prompt is missing, corrupt or does not fit the backbone."""


class DiskFullError(OSError):
    """A write ran out of disk space; what was being written was removed, the previous copy kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def _disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT from the OS, or safetensors' wrapping of it (``code: 28, kind: StorageFull``)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, SafetensorError) and ("StorageFull" in text or "code: 28" in text)


def _disk_full_error(path: Path, kept: str) -> DiskFullError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f}"
    except OSError:
        free = "?"
    return DiskFullError(errno.ENOSPC, f"disk full while writing {path} ({free} MB free); {kept}: free some "
                                       "space and run again")


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _target(path: str | os.PathLike) -> Path:
    """``path``, or where it points when it is a symlink (the folder a write through it replaces)."""
    path = Path(path)
    return path.resolve() if path.is_symlink() else path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, drop: Iterable[str] = ()) -> Iterator[Path]:
    """Yields a fresh temporary folder; on success it replaces ``path`` in one rename.

    Files already in ``path`` are kept (copied first), so saving a prompt into a run folder does not
    delete the run's other files, except those named in ``drop`` (e.g. every prompt file, so that a
    save replaces the folder's prompt as a whole, whichever format was there before). A symlink is
    written through (its target is replaced, the link kept); a ``path`` that is a file is refused
    (``ValueError``) before anything is written.
    """
    given, path = path, _target(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{given} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        if path.is_dir():
            shutil.copytree(path, tmp, dirs_exist_ok=True)
            (tmp / COMPLETE).unlink(missing_ok=True)
            for name in drop:
                for old in tmp.glob(name):
                    _remove(old)
        yield tmp
        (tmp / COMPLETE).touch()  # from here on tmp is a whole copy: recover_dir may promote it
        faults.point("atomic-write")
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        faults.point("swap")  # the one instant with no `path`: recover_dir finds tmp or old
        os.replace(tmp, path)
        (path / COMPLETE).unlink(missing_ok=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e):
            raise _disk_full_error(path, "nothing was replaced") from None
        raise


def recover_dir(path: str | os.PathLike) -> list[str]:
    """Undoes what a crash during ``atomic_dir(path)`` left: returns what it did, one line each.

    If ``path`` is missing (a kill between the two renames of a swap), the newest complete
    temporary copy becomes ``path``, else the previous copy (``.old-*``) goes back. Every other
    leftover ``.<name>.tmp-*`` / ``.<name>.old-*`` is deleted.
    """
    path = _target(path)
    parent, name = path.parent, path.name
    if not parent.is_dir():
        return []

    def newest(pattern):
        return sorted(parent.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)

    tmps, olds = newest(f".{name}.tmp-*"), newest(f".{name}.old-*")
    done = []
    if not path.exists():
        complete = [t for t in tmps if (t / COMPLETE).is_file()]
        source = complete[0] if complete else (olds[0] if olds else None)
        if source is not None:
            os.replace(source, path)
            done.append(f"restored {path} from {source.name}")
    for leftover in tmps + olds:
        if leftover.exists():
            _remove(leftover)
            done.append(f"removed {leftover}")
    if path.is_dir():
        (path / COMPLETE).unlink(missing_ok=True)
    return done


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Writes JSON atomically (temporary file + rename)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes a text file atomically (temporary file + rename); a failed write leaves the old file, no temp."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise _disk_full_error(path, "the previous file was kept") from None
        raise


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptFileError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise PromptFileError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise PromptFileError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PromptFileError(f"{path}: not a readable safetensors file ({e})") from None


def embedding_rms(embedding: nn.Embedding) -> float:
    """Root mean square of the word-embedding entries (the per-coordinate scale of a token vector)."""
    return float(embedding.weight.detach().float().pow(2).mean().sqrt())


FINGERPRINT_ATTR = "resprompt_fingerprint"


def embedding_fingerprint(embedding: nn.Embedding, rows: int = 64) -> str:
    """A short hash identifying an input-embedding matrix.

    Hashes the shape and ``rows`` evenly spaced rows rounded to bfloat16, so the same weights
    loaded in fp32 or bf16 agree while another checkpoint almost surely differs. A backbone cast to
    another precision after loading (``devices.place``; float16 would round differently) keeps the
    fingerprint of the weights as loaded, in ``embedding.resprompt_fingerprint``.
    """
    remembered = getattr(embedding, FINGERPRINT_ATTR, None)
    if remembered is not None and rows == 64:
        return remembered
    w = embedding.weight.detach()
    v, d = w.shape
    idx = torch.linspace(0, v - 1, steps=min(rows, v)).round().long()
    sample = w[idx.to(w.device)].to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()
    h = hashlib.sha256(f"{v}x{d}".encode())
    h.update(sample)
    return h.hexdigest()[:32]
