"""A generative task on the user's own data: input text -> target text (or a chat's assistant turns).

The input of a record is, in order of precedence:
- ``chat``: the record's ``messages`` field, a list of ``{"role", "content"}`` with roles system,
  user and assistant, rendered by the tokenizer's chat template; the training loss covers the
  assistant turns; evaluation generates the last assistant turn from the turns before it;
- ``template``: a ``str.format`` string whose ``{field}`` placeholders name record fields
  (``"Question: {question}\\nAnswer:"``; ``{{`` and ``}}`` are literal braces);
- ``text_fields``: one field's text, or several as ``field: value`` lines.

The target is the record's ``target_field`` (a non-empty string). ``GenerativeTask.metadata()`` is
saved with every prompt, so eval, predict and serving rebuild the very same task.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from ..generation.config import GenerationConfig
from .genmetrics import METRICS
from .records import DataError, where

ROLES = ("system", "user", "assistant")
SELECTION_METRICS = (*METRICS, "loglik")


@dataclass(frozen=True)
class GenInstance:
    """One record as the model sees it: ``source`` text or chat ``messages`` (without the answer
    turn when ``target`` is the answer), and the ``target`` text (None when unlabelled)."""

    uid: str
    where: str
    source: str | None = None
    messages: tuple[dict, ...] | None = None
    history: tuple[dict, ...] | None = None  # chat: every turn (training covers all assistant turns)
    target: str | None = None


def template_fields(template: str) -> list[str]:
    """The placeholders of a template, in order; refuses positional ``{}`` / ``{0}`` and bad syntax."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise DataError(f"template {template!r}: {e}") from None
    for name in names:
        if not name.isidentifier():
            raise DataError(f"template {template!r}: placeholder {{{name}}} is not a field name "
                            "(use {field}; write {{ and }} for literal braces)")
    return names


@dataclass(frozen=True)
class GenerativeTask:
    """The user's text-to-text task. See the module docstring for how the input is built.

    Args:
        metric: the score used to select the best prompt: exact_match, f1, rouge_l, accuracy or loglik.
        max_new_tokens, stop: how evaluation and predict decode (greedy).
    """

    name: str = "custom"
    target_field: str = "target"
    text_fields: tuple[str, ...] = ()
    template: str | None = None
    chat: bool = False
    messages_field: str = "messages"
    metric: str = "exact_match"
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()

    kind = "generation"
    choice = False
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in SELECTION_METRICS:
            raise DataError(f"metric={self.metric!r} is invalid: expected one of {', '.join(SELECTION_METRICS)}")
        if not (self.chat or self.template or self.text_fields):
            raise DataError("a generative task needs --text-fields, --template or --chat")
        if self.template is not None:
            if not isinstance(self.template, str):
                raise DataError(f"template={self.template!r} is invalid: expected a string")
            template_fields(self.template)
        if not isinstance(self.chat, bool):
            raise DataError(f"chat={self.chat!r} is invalid: expected true or false")
        for name in ("target_field", "messages_field", "name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise DataError(f"{name}={getattr(self, name)!r} is invalid: expected a field name")
        fields = self.text_fields
        if isinstance(fields, str) or any(not isinstance(f, str) or not f for f in fields):
            raise DataError(f"text_fields={fields!r} is invalid: expected a list of field names")
        object.__setattr__(self, "text_fields", tuple(fields))
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        try:  # the decoding settings, checked as the decoder will take them
            config = GenerationConfig(max_new_tokens=self.max_new_tokens, stop=tuple(stop))
        except (ValueError, TypeError) as e:
            raise DataError(str(e)) from None
        object.__setattr__(self, "stop", config.stop)

    def generation_config(self) -> GenerationConfig:
        """Greedy decoding with this task's ``max_new_tokens`` and stop strings."""
        return GenerationConfig(max_new_tokens=self.max_new_tokens, stop=self.stop)

    def metadata(self) -> dict:
        return {"name": self.name, "kind": "generation", "custom": True, "target_field": self.target_field,
                "text_fields": list(self.text_fields), "template": self.template, "chat": self.chat,
                "messages_field": self.messages_field, "metric": self.metric,
                "max_new_tokens": self.max_new_tokens, "stop": list(self.stop)}

    # ------------------------------------------------------------------ records -> instances
    def source(self, rec: dict) -> str:
        """The input text of a plain (not chat) record."""
        if self.template is not None:
            values = {}
            for name in template_fields(self.template):
                if name not in rec or rec[name] is None:
                    have = sorted(k for k in rec if not k.startswith("__"))
                    raise DataError(f"{where(rec)}: template placeholder {{{name}}} is not a field of the record "
                                    f"(fields: {', '.join(have)})")
                values[name] = rec[name] if isinstance(rec[name], str) else str(rec[name])
            text = self.template.format_map(values)
            if not text.strip():
                raise DataError(f"{where(rec)}: the template renders an empty input")
            return text
        vals = []
        for f in self.text_fields:
            if f not in rec or rec[f] is None:
                have = sorted(k for k in rec if not k.startswith("__"))
                raise DataError(f"{where(rec)}: field '{f}' missing (fields present: {', '.join(have)})")
            if not isinstance(rec[f], str):
                raise DataError(f"{where(rec)}: field '{f}' has value {rec[f]!r}, expected a string")
            if not rec[f].strip():
                raise DataError(f"{where(rec)}: field '{f}' is empty")
            vals.append(rec[f])
        if len(vals) == 1:
            return vals[0]
        return "\n".join(f"{f}: {v}" for f, v in zip(self.text_fields, vals))

    def _target(self, rec: dict, required: bool) -> str | None:
        if self.target_field not in rec or rec[self.target_field] is None:
            if required:
                have = sorted(k for k in rec if not k.startswith("__"))
                raise DataError(f"{where(rec)}: target field '{self.target_field}' missing "
                                f"(fields present: {', '.join(have)})")
            return None
        value = rec[self.target_field]
        if not isinstance(value, str):
            raise DataError(f"{where(rec)}: target field '{self.target_field}' has value {value!r}, expected a string")
        if not value.strip():
            if not required:  # predicting: a blank target column is no target
                return None
            raise DataError(f"{where(rec)}: target field '{self.target_field}' is empty")
        return value

    def _messages(self, rec: dict) -> tuple[dict, ...]:
        msgs = rec.get(self.messages_field)
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where(rec)}: field '{self.messages_field}' has value {msgs!r}, expected a non-empty "
                            "list of {\"role\", \"content\"} objects")
        out = []
        for i, m in enumerate(msgs):
            loc = f"{where(rec)}: {self.messages_field}[{i}]"
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise DataError(f"{loc}: expected an object with a string 'content', got {m!r}")
            if m.get("role") not in ROLES:
                raise DataError(f"{loc}: role {m.get('role')!r} is invalid: expected one of {', '.join(ROLES)}")
            out.append({"role": m["role"], "content": m["content"]})
        first = next((i for i, m in enumerate(out) if m["role"] != "system"), None)
        if first is not None and out[first]["role"] == "assistant":
            raise DataError(f"{where(rec)}: {self.messages_field}[{first}]: the conversation opens with an assistant "
                            "turn: the first turn after the system turns must be the user's")
        return tuple(out)

    def _chat_instance(self, rec: dict, uid: str, required: bool) -> GenInstance:
        msgs = self._messages(rec)
        if msgs[-1]["role"] == "assistant":
            if not msgs[-1]["content"].strip():
                raise DataError(f"{where(rec)}: {self.messages_field}[{len(msgs) - 1}]: the assistant turn is empty")
            if len(msgs) < 2:
                raise DataError(f"{where(rec)}: {self.messages_field} holds only an assistant turn: nothing to answer")
            return GenInstance(uid, where(rec), messages=msgs[:-1], history=msgs, target=msgs[-1]["content"])
        if required:
            raise DataError(f"{where(rec)}: {self.messages_field} must end with an assistant turn to train on "
                            f"(last role: {msgs[-1]['role']})")
        return GenInstance(uid, where(rec), messages=msgs, history=None, target=None)

    def instances(self, records: Sequence[dict], family: str, source_name: str,
                  require_target: bool = False) -> list[GenInstance]:
        """Instances of ``records``. ``require_target``: every record must have its target (training)."""
        if family == "encoder":
            raise DataError("a generative task needs a decoder or seq2seq backbone (with a language-model head); "
                            "encoders classify: use --label-field")
        if self.chat and family != "decoder":
            raise DataError("--chat needs a decoder backbone with a chat template")
        if not records:
            raise DataError(f"{source_name}: no records")
        out = []
        for pos, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"{source_name}: record {pos} is {type(rec).__name__}, expected an object")
            rec = rec if "__file__" in rec else {**rec, "__file__": source_name, "__line__": pos + 1}
            uid = str(rec.get("idx", rec.get("id", pos)))
            if self.chat:
                out.append(self._chat_instance(rec, uid, require_target))
            else:
                out.append(GenInstance(uid, where(rec), source=self.source(rec),
                                       target=self._target(rec, require_target)))
        labelled = [i.target is not None for i in out]
        if any(labelled) and not all(labelled):
            bad = out[labelled.index(False)]
            raise DataError(f"{bad.where}: no target (other records of {source_name} have one)")
        return out


def generative_task(name: str = "custom", **settings) -> GenerativeTask:
    """A ``GenerativeTask``; settings as its fields (``text_fields`` may be a comma-separated string)."""
    fields = settings.pop("text_fields", ()) or ()
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    return GenerativeTask(name=name, text_fields=tuple(fields), **settings)


def generative_task_from_metadata(meta: dict, where_: str = "prompt") -> GenerativeTask:
    """The task a generative prompt was saved with (``GenerativeTask.metadata``)."""
    keys = ("target_field", "text_fields", "template", "chat", "messages_field", "metric", "max_new_tokens", "stop")
    try:
        return generative_task(meta["name"], **{k: meta[k] for k in keys if k in meta})
    except (KeyError, TypeError) as e:
        raise DataError(f"{where_}: generative task metadata is incomplete ({e})") from None
