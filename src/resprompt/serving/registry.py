"""PromptRegistry: one backbone, many folded prompts, and predictions for any mix of them.

Each prompt is a ``ResidualPromptModel`` on the shared backbone (its own head, its folded prompt)
with its task. ``predict([(name, record), ...])`` returns one prediction per pair, the rows of all
prompts batched together (for classification: one backbone forward per ``max_batch_size`` rows).

Dispatch by task kind is explicit and in one place: ``HANDLERS`` maps the kind a prompt's task
metadata declares (``"classification"``) to the handler that checks the prompt at load, turns its
records into rows and runs rows of that kind. A prompt whose kind has no handler is refused at
load with that reason (``PromptSkipped``). Generative prompts (kind ``"generation"``, decoder or
seq2seq backbones) are served by ``generate.GenerationHandler``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..formats import read_prompt
from .classify import ClassificationHandler
from .config import RegistryOptions
from .generate import GenerationHandler
from .prompts import (
    LoadedPrompt,
    PromptSkipped,
    UnknownPrompt,
    check_name,
    stamp,
    task_kind,
    task_metadata,
)

log = logging.getLogger(__name__)


class Handler(Protocol):
    """What serving one task kind takes."""

    kind: str

    def task_for(self, meta: dict, where: str) -> Any:
        """The task of a prompt from its metadata (PromptSkipped if it cannot serve it)."""

    def check(self, prompt: LoadedPrompt) -> None:
        """PromptSkipped if this loaded prompt cannot be served."""

    def prepare(self, prompt: LoadedPrompt, record: dict, where: str, options: RegistryOptions) -> Any:
        """One record as a row (DataError naming ``where`` for a bad record)."""

    def run(self, rows: Sequence[Any], options: RegistryOptions) -> list[dict]:
        """Predictions for rows of this kind (any mix of prompts), in order."""


HANDLERS: dict[str, Handler] = {"classification": ClassificationHandler(), "generation": GenerationHandler()}


@dataclass
class ScanReport:
    """What a scan of the prompts folder did."""

    served: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # folder name -> reason


class PromptRegistry:
    """A backbone and the prompts served on it.

    Args:
        backbone, tokenizer: as ``backbones.load_backbone`` returns them (the backbone is set to eval
            mode and never written to).
        options: ``RegistryOptions``.
    """

    def __init__(self, backbone, tokenizer, options: RegistryOptions | None = None) -> None:
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.options = options or RegistryOptions()
        self.prompts_dir: Path | None = None
        self._prompts: dict[str, LoadedPrompt] = {}  # replaced whole, never mutated: readers need no lock
        self._lock = threading.Lock()  # one writer at a time (scan, add, remove)

    @classmethod
    def load(cls, model: str, prompts_dir: str | Path | None = None, options: RegistryOptions | None = None,
             device="cpu", dtype=None) -> PromptRegistry:
        """Loads the backbone ``model`` (BackboneError if it cannot) in ``dtype`` (None: as the checkpoint
        loads) onto ``device``, and the prompts in ``prompts_dir`` (their prompts and heads follow it)."""
        from ..backbones import load_backbone
        from ..devices import place

        backbone, tokenizer, _ = load_backbone(model, head="auto")
        registry = cls(place(backbone, device, dtype), tokenizer, options)
        if prompts_dir is not None:
            registry.scan(prompts_dir)
        return registry

    # ------------------------------------------------------------------ the loaded set
    def names(self) -> list[str]:
        return sorted(self._prompts)

    def get(self, name: str) -> LoadedPrompt:
        """The loaded prompt called ``name``; UnknownPrompt otherwise (names are never paths)."""
        found = self._prompts.get(name) if isinstance(name, str) else None
        if found is None:
            raise UnknownPrompt(name)
        return found

    def info(self) -> list[dict]:
        prompts = self._prompts
        return [prompts[n].info() for n in sorted(prompts)]

    def add(self, name: str, path: str | Path, task: dict | None = None) -> LoadedPrompt:
        """Loads the prompt at ``path`` as ``name`` (``task``: its task metadata, if the folder has none)."""
        with self._lock:
            prompt = self._load(name, Path(path), task)
            self._prompts = {**self._prompts, name: prompt}
        log.info("serving prompt %r from %s", name, path)
        return prompt

    def remove(self, name: str) -> None:
        with self._lock:
            self.get(name)
            self._prompts = {k: v for k, v in self._prompts.items() if k != name}

    def scan(self, folder: str | Path | None = None) -> ScanReport:
        """(Re)reads the prompts folder: one prompt per sub-folder, named after it.

        New folders are loaded, changed ones reloaded, vanished ones dropped; a folder that cannot be
        served is skipped with its reason logged (and dropped if it was served). Prompts added from
        elsewhere with ``add`` stay. NotADirectoryError if the folder is missing.
        """
        folder = Path(folder) if folder is not None else self.prompts_dir
        if folder is None or not folder.is_dir():
            raise NotADirectoryError(f"prompts folder {folder} not found")
        report = ScanReport()
        with self._lock:
            self.prompts_dir = folder
            current, found = self._prompts, {}
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found.update(self._scan_one(child, current.get(child.name), report))
            kept = {n: p for n, p in current.items() if p.path.parent != folder and n not in found}
            report.removed = sorted(n for n in current if n not in found and n not in kept)
            self._prompts = {**kept, **found}
            report.served = sorted(self._prompts)
        log.info("prompts folder %s: serving %d prompt(s), %d skipped", folder, len(report.served),
                 len(report.skipped))
        return report

    def _scan_one(self, child: Path, old: LoadedPrompt | None, report: ScanReport) -> dict[str, LoadedPrompt]:
        """One folder of a scan; any error skips this folder alone (logged), the others keep loading."""
        try:
            st = stamp(child)
            if old is not None and old.path == child and old.stamp == st:
                return {child.name: old}
            prompt = self._load(child.name, child, stamp_=st)
        except PromptSkipped as e:
            report.skipped[child.name] = str(e)
            log.error("prompt folder %s skipped: %s", child, e)
            return {}
        except Exception as e:  # noqa: BLE001 (unreadable folder, out of memory building a prefix, a bug)
            report.skipped[child.name] = f"{child}: {type(e).__name__}: {e}"
            log.exception("prompt folder %s skipped", child)
            return {}
        (report.reloaded if old is not None else report.added).append(child.name)
        log.info("serving prompt %r from %s", child.name, child)
        return {child.name: prompt}

    def _load(self, name: str, folder: Path, task: dict | None = None, stamp_: tuple | None = None) -> LoadedPrompt:
        """One prompt folder as a LoadedPrompt; PromptSkipped with the reason otherwise."""
        from ..model import ResidualPromptModel

        check_name(name)
        try:
            saved = read_prompt(folder)
            meta = task_metadata(saved, folder, task)
            kind = task_kind(meta)
            handler = HANDLERS.get(kind)
            if handler is None:
                raise PromptSkipped(f"{folder}: task kind {kind!r} is not served (served kinds: "
                                    f"{', '.join(sorted(HANDLERS))})")
            task_obj = handler.task_for(meta, str(folder))
            model = ResidualPromptModel.from_pretrained(self.backbone, folder, tokenizer=self.tokenizer,
                                                        allow_mismatch=self.options.allow_backbone_mismatch)
            prompt = LoadedPrompt(name, folder, saved.format, kind, task_obj, model.eval(),
                                  stamp(folder) if stamp_ is None else stamp_)
            handler.check(prompt)  # KV prefixes are built here: a failure skips this prompt alone
        except PromptSkipped:
            raise
        except (ValueError, OSError, RuntimeError) as e:  # PromptFileError, HeadError, DataError, bad files
            raise PromptSkipped(str(e)) from None
        return prompt

    # ------------------------------------------------------------------ predicting
    def prepare(self, prompt: LoadedPrompt | str, record: dict, where: str = "inputs[0]"):
        """One record of one prompt as a row of its kind (UnknownPrompt, DataError)."""
        prompt = self.get(prompt) if isinstance(prompt, str) else prompt
        return HANDLERS[prompt.kind].prepare(prompt, record, where, self.options)

    def run(self, rows: Sequence) -> list[dict]:
        """Predictions for prepared rows (any mix of prompts and kinds), in order."""
        out: list[dict | None] = [None] * len(rows)
        by_kind: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_kind.setdefault(row.prompt.kind, []).append(i)
        for kind, idx in by_kind.items():
            for i, prediction in zip(idx, HANDLERS[kind].run([rows[i] for i in idx], self.options)):
                out[i] = prediction
        return out

    def predict(self, pairs: Sequence[tuple]) -> list[dict]:
        """One prediction per (prompt name, record) pair; the first bad pair's error is raised."""
        results = self.predict_each(pairs)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results

    def predict_each(self, pairs: Sequence[tuple]) -> list[dict | BaseException]:
        """As ``predict``, with each bad pair's error in its place; pairs may be (prompt, record, where)."""
        out: list[Any] = [None] * len(pairs)
        rows, idx = [], []
        for i, pair in enumerate(pairs):
            prompt, record, where = pair if len(pair) == 3 else (*pair, f"inputs[{i}]")
            try:
                rows.append(self.prepare(prompt, record, where))
                idx.append(i)
            except Exception as e:  # noqa: BLE001 (a bad record fails its own pair only)
                out[i] = e
        if rows:
            try:
                predictions = self.run(rows)
            except Exception as e:  # noqa: BLE001 (reported to every pair of the batch)
                log.exception("forward over %d rows failed", len(rows))
                predictions = [e] * len(rows)
            for i, p in zip(idx, predictions):
                out[i] = p
        return out
