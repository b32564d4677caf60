"""Resumable training checkpoints without pickle.

A checkpoint folder holds the model's trainable state (``ResidualPromptModel.save_trainable``),
``optimizer.safetensors`` (every tensor of the optimizer and scheduler state, flattened to
``state.<param index>.<key>``), the RNG state of torch and ``trainer_state.json`` (the rest:
step, epoch, position in the epoch, best score so far, optimizer hyperparameters, Python and
numpy RNG). The data order needs no state: it is a pure function of (seed, epoch), and the
DataLoader draws from a generator of its own.
The folder is written under a temporary name and renamed, so a kill at any moment leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..io import PromptFileError, atomic_dir, read_json, read_safetensors, write_json

OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("state."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["plain"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    """Every generator training reads, as tensors: torch's CPU (dropout, inits), CUDA's, numpy's key."""
    out = {"rng.torch": torch.get_rng_state(),
           "rng.numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        out.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def save_checkpoint(path, model, optimizer, scheduler, progress: dict) -> None:
    """Writes a complete resumable checkpoint to ``path`` atomically."""
    tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(_rng_tensors())
    py_state = random.getstate()
    np_state = np.random.get_state()
    with atomic_dir(path) as tmp:
        model.save_trainable(tmp / "model")
        save_file(tensors, str(tmp / OPTIM_FILE))
        write_json(tmp / STATE_FILE, {
            "progress": progress,
            "optimizer": optim_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        })


def load_checkpoint(path, model, optimizer, scheduler, allow_mismatch: bool = False) -> dict:
    """Restores model, optimizer, scheduler and RNG state; returns the saved progress dict.

    ``allow_mismatch`` loads the prompt even if the backbone's fingerprint changed since the save.
    """
    path = Path(path)
    state = read_json(path / STATE_FILE)
    tensors = read_safetensors(path / OPTIM_FILE)
    try:
        model.load_trainable(path / "model", allow_mismatch=allow_mismatch)
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available() and any(k.startswith("rng.cuda.") for k in tensors):
            torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())])
        v, internal, gauss = state["rng_python"]
        random.setstate((v, tuple(internal), gauss))
        if "rng_numpy" in state:
            kind, pos, has_gauss, cached = state["rng_numpy"]
            np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    except (KeyError, ValueError, RuntimeError) as e:
        raise PromptFileError(f"{path}: checkpoint does not fit this run ({e})") from None
    return state["progress"]
