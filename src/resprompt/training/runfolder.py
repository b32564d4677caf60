"""The run folder: checking it before a run, its marker, its config.json, its metrics log.

Layout (``output_dir``): ``resprompt_run.json`` (the marker: only a folder holding it, or a run
folder written before the marker existed, is ever deleted by ``--overwrite``), ``config.json``
(resolved settings, written once; ``--resume`` refuses other settings), ``metrics.jsonl`` (one JSON
line per step and per evaluation), ``best/``, ``checkpoint/``, ``results.json``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path

from ..io import recover_dir, write_json
from ..version import __version__
from .runconfig import ConfigError, TrainConfig

log = logging.getLogger(__name__)
RUN_MARKER = "resprompt_run.json"
# Settings a resumed run may change: they do not touch what is trained or how.
RESUMABLE_CHANGES = frozenset({"resume", "overwrite", "progress", "report_to", "allow_backbone_mismatch",
                               "output_dir"})  # config.json is read from the folder itself, however named


def is_run_folder(out: Path) -> bool:
    """True for a folder this library made (its marker; or a config.json with train and prompt settings)."""
    if (out / RUN_MARKER).is_file():
        return True
    try:
        cfg = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"train", "prompt"} <= set(cfg)


def check_output(cfg: TrainConfig) -> Path:
    """Validates ``output_dir`` for the run (writes nothing); ``check_resume`` follows, lock held."""
    if not cfg.output_dir:
        raise ConfigError("output-dir is required")
    out = Path(cfg.output_dir)
    if out.name in ("", ".", ".."):  # "." / "..": name the folder itself (its lock sits beside it)
        out = out.resolve()
    if cfg.overwrite and not cfg.resume and out.exists() and (
            out.resolve() == Path.cwd().resolve() or out.resolve() in Path.cwd().resolve().parents):
        raise ConfigError(f"--overwrite: output-dir {cfg.output_dir} is the current folder or holds it; refusing "
                          "to delete it: run from elsewhere or pick another --output-dir")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output-dir {out} exists and is not a folder")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"output-dir {out} is not empty: pass --resume to continue it or --overwrite to replace it")
    if non_empty and cfg.overwrite and not cfg.resume and not is_run_folder(out):
        raise ConfigError(f"--overwrite: {out} is not a resprompt run folder (no {RUN_MARKER}); refusing to "
                          "delete it: pick another --output-dir or empty it yourself")
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    probe = parent / f".resprompt-write-test-{time.time_ns()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output-dir {out} is not writable ({e.strerror})") from None
    return out


def check_resume(out: Path) -> None:
    """``--resume``: repairs what a kill during a write left (``recover``), then needs a checkpoint; a folder
    that is not a run folder is refused first, untouched."""
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise ConfigError(f"--resume: {out} is not a resprompt run folder (no {RUN_MARKER}); nothing to resume")
    for line in recover(out):
        log.warning("--resume: %s", line)
    if not (out / "checkpoint").is_dir():
        raise ConfigError(f"--resume: no checkpoint in {out}")


def recover(out: Path) -> list[str]:
    """Makes checkpoint/ and best/ findable after a kill in the middle of a write, and removes the
    hidden leftovers of interrupted writes (folders and JSON files); returns what it did."""
    done = recover_dir(out / "checkpoint") + recover_dir(out / "best")
    for stray in out.glob(".*.tmp-*"):
        if stray.is_file():
            stray.unlink()
            done.append(f"removed {stray}")
    return done


class RunLock:
    """An OS lock on the run folder (``.<name>.resprompt-lock`` beside it, so ``--overwrite`` cannot
    delete it): a second run on the same folder is refused at once; the kernel releases the lock
    when the process ends, kill -9 included."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out.parent / f".{out.name}.resprompt-lock"
        self.fh = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            self.fh = None
            raise ConfigError(f"output-dir {self.out} is in use by {holder} (lock {self.path}): one run per "
                              "folder at a time") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}\n")
        self.fh.flush()
        return self

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def run_settings(cfg: TrainConfig, prompt_cfg) -> dict:
    return {"train": dataclasses.asdict(cfg), "prompt": prompt_cfg.to_dict()}


def setting_defaults(cfg: TrainConfig, prompt_cfg) -> dict:
    """Each field's default, shaped like :func:`run_settings` (fields without a plain default are left out)."""
    def of(obj):
        return {f.name: f.default for f in dataclasses.fields(obj) if f.default is not dataclasses.MISSING}
    return {"train": of(cfg), "prompt": of(prompt_cfg)}


def check_resume_settings(out: Path, settings: dict, defaults: dict | None = None) -> None:
    """Refuses ``--resume`` with settings other than the run's own (the checkpoint holds the old schedule).

    A setting that the run's config.json lacks (the run was made before the option existed) counts as
    unchanged when the new value is the option's default (``defaults``, shaped like ``settings``)."""
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {out / 'config.json'} is unreadable ({e})") from None
    changed = []
    for part in ("train", "prompt"):
        old, new = saved.get(part, {}), settings[part]
        assumed = (defaults or {}).get(part, {})
        for key in sorted(set(old) | set(new)):
            was = old[key] if key in old else assumed.get(key)
            if key not in RESUMABLE_CHANGES and was != new.get(key):
                changed.append(f"{key} {was!r} -> {new.get(key)!r}")
    if changed:
        raise ConfigError(f"--resume: settings differ from {out / 'config.json'}: {'; '.join(changed)} "
                          "(resume with the run's own settings, or start a new run)")


def create(out: Path, cfg: TrainConfig, config: dict) -> None:
    """Makes the run folder (replacing it with ``--overwrite``) and writes the marker and config.json."""
    if cfg.resume:
        return
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_MARKER, {"library_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(out / "config.json", config)


def _record_step(line: str) -> float:
    """The step of a metrics.jsonl line; infinity for a blank line or one a kill cut short (dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return float("inf")


class MetricsLog:
    """``metrics.jsonl`` plus the Accelerate trackers (``--report-to``); writes on the main process only."""

    def __init__(self, out: Path, accelerator, enabled: bool, keep_until: int | None):
        self.path, self.accelerator, self.enabled = out / "metrics.jsonl", accelerator, enabled
        if not enabled:
            return
        if keep_until is not None and self.path.exists():  # resume: drop lines after the checkpoint
            kept = [ln for ln in self.path.read_text().split("\n") if _record_step(ln) <= keep_until]
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, self.path)
        elif keep_until is None:
            self.path.write_text("")

    def __call__(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        scalars = {f"{record['type']}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}
        if self.accelerator.trackers:
            self.accelerator.log(scalars, step=record["step"])
