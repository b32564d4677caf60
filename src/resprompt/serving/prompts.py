"""A served prompt: one folder read into a model with its own head, its task and its task kind.

A folder holds a resprompt prompt or a stock PEFT prompt-tuning adapter (``formats.read_prompt``
reads both). The task comes from the prompt's saved metadata (``Task.metadata``); a PEFT adapter
records none, so its folder may hold ``resprompt_task.json`` with that metadata (``{"name": "RTE"}``,
or a custom task's ``name`` / ``labels`` / ``text_fields`` / ``custom: true``). A folder that cannot
be served raises ``PromptSkipped`` whose message is the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formats import TASK_FILE, SavedPrompt, prompt_folder
from ..tasks.superglue import COPATask

if TYPE_CHECKING:
    from ..model import ResidualPromptModel

COPA_CHOICES = ("choice1", "choice2")  # what a served COPA prediction names: the record's two fields
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PromptSkipped(ValueError):
    """A prompt that cannot be served; the message says why."""


class UnknownPrompt(KeyError):
    """A prompt name that is not in the loaded set."""

    def __str__(self) -> str:
        return f"unknown prompt {self.args[0]!r}; GET /v1/prompts lists the served prompts"


@dataclass(frozen=True)
class LoadedPrompt:
    """A prompt ready to serve: ``model`` (folded prompt [n, d] + own head) on the shared backbone."""

    name: str
    path: Path
    format: str  # "resprompt" or "peft"
    kind: str  # the task kind ("classification"): which handler serves it
    task: Any  # a tasks.superglue.Task (or, later, a generative task)
    model: ResidualPromptModel
    stamp: tuple = ()  # the folder's files when loaded: a rescan reloads only changed folders

    def info(self) -> dict:
        backbone = getattr(self.model.backbone.config, "_name_or_path", "") or type(self.model.backbone).__name__
        labels = list(served_labels(self.task))
        return {"name": self.name, "kind": self.kind, "task": self.task.name, "labels": labels,
                "n": self.model.num_tokens, "num_tokens": self.model.num_tokens, "backbone": backbone, "format": self.format,
                "placement": self.model.placement_mode, "pooling": self.model.pooling}


def served_labels(task) -> tuple[str, ...]:
    """The names a prediction's label and scores use: the task's labels; COPA's two choice fields (its
    task labels are the binary classes of one choice); none for a generation task."""
    if isinstance(task, COPATask):
        return COPA_CHOICES
    return tuple(getattr(task, "labels", None) or ())


def check_name(name: str) -> None:
    """Prompt names are folder names of letters, digits, ``.``, ``_``, ``-`` (never a path)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise PromptSkipped(f"prompt name {name!r} is invalid: use letters, digits, '.', '_' and '-' "
                            "(starting with a letter or digit, at most 128 characters)")


def task_metadata(saved: SavedPrompt, folder: Path, given: dict | None = None) -> dict:
    """The task metadata to serve ``saved`` with: ``given``, else the prompt's own (a PEFT adapter's from
    ``formats.TASK_FILE`` beside it)."""
    if given is not None:
        return given
    if saved.task is None:
        raise PromptSkipped(f"{folder}: the prompt records no task ({saved.format} format); add {TASK_FILE} "
                            'with its task metadata, e.g. {"name": "RTE"}')
    return saved.task


def task_kind(meta: dict) -> str:
    """The task kind a prompt's metadata declares (prompts saved before kinds existed: classification)."""
    kind = meta.get("kind", "classification")
    if not isinstance(kind, str):
        raise PromptSkipped(f"task metadata kind={kind!r} is not a string")
    return kind


def stamp(folder: Path) -> tuple:
    """(file, size, mtime) of the files a prompt is read from: changes when the prompt is rewritten."""
    files = []
    for base in {folder, prompt_folder(folder)}:
        if base.is_dir():
            files += [p for p in base.iterdir() if p.is_file()]
    out = []
    for p in sorted(files):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)
