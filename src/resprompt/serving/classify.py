"""Serving classification prompts: a record -> its rows; rows -> label + per-label scores.

A record becomes model inputs exactly as ``resprompt predict`` makes them: ``task.instances``,
``features.featurize`` (truncated to ``min(max_length, model.max_text_length)``) and
``features.collate``. A prediction is ``{"label": <the best label>, "scores": {label: score}}``.

- encoders: the scores are the prompt's head outputs; rows of any mix of prompts go through one
  backbone forward (``mixed.encoder_logits``), ``max_batch_size`` rows at a time, longest first;
- decoder language models: the scores are each label verbalisation's mean token log-likelihood,
  computed from each prompt's KV prefix (``decoder_scoring``).

Served: tasks that turn one record into one instance (BoolQ, CB, RTE, WiC, WSC, AX-b, AX-g and the
user's own), and COPA, whose prediction names a choice (``choice1`` / ``choice2``): on encoders a
record is two rows (premise + question with each choice) scored as ``resprompt predict`` scores them,
logit of "True" minus logit of "False", the rows batched with everyone else's; on decoders each
choice is a candidate continuation. ReCoRD and MultiRC (a variable number of answers per record) are
refused at load, as are classification prompts on seq2seq backbones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import heads
from ..devices import model_device
from ..tasks.features import Feature, collate, featurize
from ..tasks.records import DataError
from ..tasks.superglue import ClassTask, COPATask, task_from_metadata
from .config import RegistryOptions
from .decoder_scoring import DecoderRow, PrefixCache, decoder_row, score_rows
from .mixed import encoder_logits
from .prompts import LoadedPrompt, PromptSkipped, served_labels


@dataclass(frozen=True)
class ClassRow:
    """One record of one prompt, tokenised."""

    prompt: LoadedPrompt
    feature: Feature

    @property
    def length(self) -> int:
        return len(self.feature.input_ids) + self.prompt.model.num_tokens


@dataclass(frozen=True)
class ChoiceRow:
    """One COPA record of an encoder prompt: one row per choice."""

    prompt: LoadedPrompt
    choices: tuple[ClassRow, ...]


def servable(task) -> bool:
    """One-row classification tasks, and COPA (two fixed choices); not ReCoRD or MultiRC (answers vary)."""
    return isinstance(task, COPATask) or (isinstance(task, ClassTask) and not task.is_choice)


def head_outputs(model) -> int | None:
    """How many outputs the prompt's head has (its last linear layer's), or None."""
    return heads.head_outputs(model.head)


class ClassificationHandler:
    """Task kind ``classification``: checks at load, prepares records, runs mixed batches."""

    kind = "classification"

    def __init__(self) -> None:
        self.prefix = PrefixCache()  # decoder prompts: prompt -> its KV prefix, built once

    def task_for(self, meta: dict, where: str):
        try:
            task = task_from_metadata(meta, where)
        except DataError as e:
            raise PromptSkipped(str(e)) from None
        given = meta.get("labels")
        if given is not None and (not isinstance(given, list) or not all(isinstance(x, str) for x in given)):
            raise PromptSkipped(f"{where}: task metadata labels={given!r} is not a list of label names")
        if given is not None and list(given) not in (list(task.labels), list(served_labels(task))):
            raise PromptSkipped(f"{where}: the prompt was trained with labels {given}; task {task.name} "
                                f"has labels {list(task.labels)}")
        return task

    def check(self, prompt: LoadedPrompt) -> None:
        model, task = prompt.model, prompt.task
        decoder_lm = model.family == "decoder" and model.head_kind is None
        if not decoder_lm and (model.family != "encoder" or model.head_kind != "ForSequenceClassification"):
            raise PromptSkipped(f"{prompt.path}: classification is served on encoder sequence classifiers and on "
                                f"decoder language models; this backbone is a {model.family} "
                                f"({type(model.backbone).__name__})")
        if not servable(task):
            raise PromptSkipped(f"{prompt.path}: task {task.name} turns one record into several rows with a "
                                "variable number of answers; the server answers one label per record (COPA and "
                                "one-row tasks only)")
        if decoder_lm:
            self.prefix(prompt)  # the KV prefix, computed once at load instead of on the first request
            return  # labels are scored as verbalisations: no head
        outputs = head_outputs(model)
        if outputs != task.num_labels:
            raise PromptSkipped(f"{prompt.path}: the prompt's head has {outputs} outputs but task {task.name} has "
                                f"{task.num_labels} labels {list(task.labels)}")

    def prepare(self, prompt: LoadedPrompt, record: dict, where: str,
                options: RegistryOptions) -> ClassRow | ChoiceRow | DecoderRow:
        """The record as its row(s); DataError naming ``where`` for a bad record (or, strict, a long one)."""
        model = prompt.model
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        record = {**record, "__file__": "request", "__line__": where}
        names = served_labels(prompt.task)
        if isinstance(prompt.task, COPATask) and record.get("label") in names:  # a served answer sent back
            record["label"] = names.index(record["label"])
        instances = prompt.task.instances([record], model.family, "request")
        if len(instances) > 1:  # COPA on an encoder: one row per choice
            return ChoiceRow(prompt, tuple(self._encoder_row(prompt, inst, f"{where} ({names[j]})", options)
                                           for j, inst in enumerate(instances)))
        (instance,) = instances
        max_len = min(options.max_length, model.max_text_length)
        if model.family == "decoder":
            row = decoder_row(prompt, instance, max_len)
            if options.strict_length and decoder_row(prompt, instance, 10**9).length > row.length:
                raise DataError(f"request:{where}: the text is longer than the {max_len} tokens this prompt takes "
                                "(the server runs with --strict-length)")
            return row
        return self._encoder_row(prompt, instance, where, options)

    @staticmethod
    def _encoder_row(prompt: LoadedPrompt, instance, where: str, options: RegistryOptions) -> ClassRow:
        model = prompt.model
        max_len = min(options.max_length, model.max_text_length)
        if options.strict_length:
            full = len(model.tokenizer(instance.text_a, instance.text_b)["input_ids"])
            if full > max_len:
                raise DataError(f"request:{where}: the text has {full} tokens, more than the {max_len} this prompt "
                                "takes (the server runs with --strict-length)")
        (feature,) = featurize([instance], model.tokenizer, model.family, max_len, train=False)
        return ClassRow(prompt, feature)

    def run(self, rows: Sequence[ClassRow | ChoiceRow | DecoderRow], options: RegistryOptions) -> list[dict]:
        """Predictions for ``rows``, in order (encoder rows, COPA's choices among them, and decoder rows
        each batched together)."""
        out: list[dict | None] = [None] * len(rows)
        _run_encoder(rows, options, out)
        by: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if isinstance(r, DecoderRow):
                by.setdefault(id(r.prompt) if options.group_by_prompt else 0, []).append(i)
        for group in by.values():
            for i, scores in zip(group, score_rows([rows[i] for i in group], self.prefix, options.max_batch_size)):
                names = served_labels(rows[i].prompt.task)
                out[i] = _prediction(names, torch.tensor([scores[c] for c in range(len(scores))]))
        return out


def _run_encoder(rows: Sequence, options: RegistryOptions, out: list) -> None:
    """Fills ``out[i]`` for the encoder rows: one unit per ClassRow and per choice of a ChoiceRow, all
    batched together, a ChoiceRow's choices then folded into one prediction."""
    units = [(i, None, r) for i, r in enumerate(rows) if isinstance(r, ClassRow)]
    units += [(i, j, c) for i, r in enumerate(rows) if isinstance(r, ChoiceRow) for j, c in enumerate(r.choices)]
    logits: list[torch.Tensor | None] = [None] * len(units)
    for chunk in _chunks([u[2] for u in units], options):
        for k, value in zip(chunk, _forward([units[k][2] for k in chunk])):
            logits[k] = value
    choice_scores: dict[int, list[float]] = {}
    for (i, j, row), value in zip(units, logits):
        if j is None:
            out[i] = _prediction(row.prompt.task.labels, value)
        else:  # as resprompt predict scores a choice: logit of "True" minus logit of "False"
            choice_scores.setdefault(i, [0.0] * len(rows[i].choices))[j] = float(value[1] - value[0])
    for i, scores in choice_scores.items():
        out[i] = _prediction(served_labels(rows[i].prompt.task), torch.tensor(scores))


def _chunks(rows: Sequence[ClassRow], options: RegistryOptions) -> list[list[int]]:
    """Row indices per forward: longest first, ``max_batch_size`` at a time (per prompt if grouped)."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i].length)
    groups = [order]
    if options.group_by_prompt:
        by_prompt: dict[int, list[int]] = {}
        for i in order:
            by_prompt.setdefault(id(rows[i].prompt), []).append(i)
        groups = list(by_prompt.values())
    size = options.max_batch_size
    return [g[s: s + size] for g in groups for s in range(0, len(g), size)]


def _forward(rows: Sequence[ClassRow]) -> list[torch.Tensor]:
    """Each row's logits [C] (float32, on the CPU) from one backbone forward over ``rows`` (any mix of
    prompts on one backbone)."""
    parts: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        parts.setdefault(id(row.prompt), []).append(i)
    batches = []
    for idx in parts.values():
        model = rows[idx[0]].prompt.model
        pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        batch = collate([rows[i].feature for i in idx], pad, "encoder")
        device = model_device(model)
        batches.append((model, {k: v.to(device) for k, v in batch.items()
                                if k in ("input_ids", "attention_mask", "token_type_ids")}))
    out: list[torch.Tensor | None] = [None] * len(rows)
    for idx, logits in zip(parts.values(), encoder_logits(batches)):
        logits = logits.float().cpu()  # one copy per prompt, not one per value
        for row, i in enumerate(idx):
            out[i] = logits[row]
    return out


def _prediction(labels: Sequence[str], logits) -> dict:
    return {"label": labels[int(logits.argmax())], "scores": {lab: float(v) for lab, v in zip(labels, logits)}}
