"""Setting up a run: which task, which records for each split, which backbone, the prepared task.

Used by ``train``, ``eval`` and ``predict`` alike, so that all three read data the same way.

- ``resolve_task``: a SuperGLUE task by name; ``custom`` builds the user's label set from the
  training (and evaluation) files; a prompt's saved task metadata wins over both, so that eval and
  predict score with the labels the prompt was trained on, whatever files are passed.
- ``load_split``: the records of the training or evaluation split (SuperGLUE folder, FewGLUE
  folder, the hub, or the user's files), after few-shot and size limits, as task instances.
- ``prepare_backbone``: the backbone with the head the task needs.
"""

from __future__ import annotations

import os
import random

from ..tasks import data as data_mod
from ..tasks.generative import GenerativeTask, generative_task, generative_task_from_metadata
from ..tasks.prepared import PreparedTask
from ..tasks.records import DataError
from ..tasks.superglue import UserTask, get_task, task_from_metadata, user_task
from .runconfig import ConfigError, TrainConfig


def _text_fields(cfg: TrainConfig) -> list[str]:
    if not cfg.text_fields:
        raise ConfigError("task 'custom' needs --text-fields (one or two comma-separated field names)")
    return [f.strip() for f in cfg.text_fields.split(",") if f.strip()]


def unescape(text: str) -> str:
    """A flag's ``\\n`` / ``\\t`` / ``\\\\`` escapes as the characters they name (stop strings)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def is_generative(cfg: TrainConfig) -> bool:
    return cfg.target_field is not None or cfg.chat


def _generative_task(cfg: TrainConfig) -> GenerativeTask:
    if not (cfg.chat or cfg.template or cfg.text_fields):
        raise ConfigError("a generative task needs --text-fields, --template or --chat")
    return generative_task("custom", target_field=cfg.target_field or "target", text_fields=cfg.text_fields or (),
                           template=unescape(cfg.template) if cfg.template else None, chat=cfg.chat,
                           messages_field=cfg.messages_field, metric=cfg.metric or "exact_match",
                           max_new_tokens=cfg.max_new_tokens, stop=(unescape(cfg.stop),) if cfg.stop else ())


def resolve_task(cfg: TrainConfig, saved: dict | None = None):
    """The task of a run: ``saved`` (a prompt's task metadata) if given, else from ``cfg``."""
    if saved is not None:
        if saved.get("kind") == "generation":
            return generative_task_from_metadata(saved)
        return task_from_metadata(saved)
    if cfg.task.lower() != "custom":
        return get_task(cfg.task)
    if not cfg.train_file and not cfg.eval_file:
        raise ConfigError("task 'custom' needs --train-file and/or --eval-file")
    if is_generative(cfg):
        return _generative_task(cfg)
    fields = _text_fields(cfg)
    # the label set is the training file's: an evaluation label outside it is an error naming file:line
    source = cfg.train_file or cfg.eval_file
    records = data_mod.load_user_records(source, text_fields=fields, label_field=cfg.label_field)
    labels = data_mod.label_set(records, cfg.label_field)
    return user_task("custom", labels, fields, cfg.label_field)


def prepare_backbone(cfg: TrainConfig, task=None):
    """Loads ``(backbone, tokenizer, family, task)``: the backbone with the head ``task`` needs."""
    from ..backbones import load_backbone

    task = task or resolve_task(cfg)
    if isinstance(task, GenerativeTask):
        backbone, tokenizer, family = load_backbone(cfg.model, head="auto")
        if family == "encoder":
            raise ConfigError(f"--model {cfg.model}: a generative task needs a decoder or seq2seq backbone with a "
                              "language-model head; this one is an encoder")
        if task.chat:
            from ..tasks.genfeatures import check_chat_template

            check_chat_template(tokenizer)
        return backbone, tokenizer, family, task
    num_labels = 2 if task.choice else task.num_labels
    backbone, tokenizer, family = load_backbone(cfg.model, head="auto", num_labels=num_labels)
    return backbone, tokenizer, family, task


def _fewglue_dir(cfg: TrainConfig):
    folder = cfg.fewglue_dir or data_mod.DEFAULT_FEWGLUE_DIR
    if folder is None:
        raise ConfigError("--train-source fewglue: no FewGLUE folder found; pass --fewglue-dir <dir> with "
                          "<dir>/<Task>/{train,dev32}.jsonl or set RESPROMPT_FEWGLUE_DIR")
    return folder


def _records(cfg: TrainConfig, task, split: str, source: str, train: bool):
    """Records of one split: the user's file (``--train-file`` / ``--eval-file``) if given, else the task's data."""
    path = cfg.train_file if train else cfg.eval_file
    flag = "--train-file" if train else "--eval-file"
    if isinstance(task, (GenerativeTask, UserTask)) and not path:
        raise ConfigError(f"task 'custom' needs {flag}")
    if isinstance(task, UserTask):
        fields = list(task.text_fields)
        label = task.label_field if train else None  # evaluation files may lack labels
        return data_mod.load_user_records(path, text_fields=fields, label_field=label), str(path)
    if path:  # a generative task's file, or the user's own file in a SuperGLUE task's official format
        records = data_mod.read_records(path)
        if not records:
            raise DataError(f"{path}: no records (empty file)")
        return records, str(path)
    if source == "fewglue":
        return data_mod.load_records(task, split, fewglue_dir=_fewglue_dir(cfg))
    if source == "hub":
        return data_mod.load_records(task, split, hub=True)
    data_dir = cfg.data_dir or data_mod.DEFAULT_DATA_DIR
    if data_dir is None:
        raise ConfigError("no data folder: pass --data-dir <dir> with <dir>/<Task>/<split>.jsonl")
    return data_mod.load_records(task, split, data_dir=data_dir)


def label_key(task) -> str:
    """The record field few-shot sampling stratifies on: the user's label field, else ``label``."""
    return getattr(task, "label_field", None) or "label"


def load_split(cfg: TrainConfig, task, family: str, train: bool):
    """Instances of the training or evaluation split, after few-shot / size limits; and their source."""
    if train:
        split, source = cfg.train_split, cfg.train_source
    else:
        split = cfg.eval_split
        source = "fewglue" if split == "dev32" else ("hub" if cfg.train_source == "hub" else "superglue")
    records, desc = _records(cfg, task, split, source, train)
    if train and cfg.few_shot:
        records = data_mod.few_shot(records, cfg.few_shot, cfg.seed, label_key(task))
    if train and cfg.max_train_examples and len(records) > cfg.max_train_examples:
        records = random.Random(cfg.seed).sample(records, cfg.max_train_examples)
    if not train and cfg.max_eval_examples:
        records = records[: cfg.max_eval_examples]
    if isinstance(task, GenerativeTask):
        instances = task.instances(records, family, desc, require_target=train)
    else:
        instances = task.instances(records, family, desc)
    if not instances:
        raise DataError(f"{desc}: no examples")
    if train and not isinstance(task, GenerativeTask) and not any(
            i.label is not None or i.meta.get("answers") for i in instances):
        raise DataError(f"{desc}: no gold labels (a test split?): training needs labelled records")
    return instances, desc


def _same_data(a: str, b: str) -> bool:
    """Whether two split sources (file paths, or hub names) name the same data."""
    return a == b or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def prepare_task(cfg: TrainConfig, task, family: str, tokenizer, max_len: int):
    """Both splits of ``task`` read and tokenised for a training run (a ``TrainTask``)."""
    train_inst, train_desc = load_split(cfg, task, family, train=True)
    eval_inst, eval_desc = load_split(cfg, task, family, train=False)
    if _same_data(train_desc, eval_desc):
        raise ConfigError(f"training and evaluation both read {eval_desc}: the best prompt would be chosen on its "
                          "own training data; pass another --eval-split or --eval-file")
    if isinstance(task, GenerativeTask):
        from ..tasks.genprepared import GenerativePreparedTask

        if any(i.target is None for i in eval_inst):
            raise DataError(f"{eval_desc}: the evaluation file needs targets to score a generative task")
        return GenerativePreparedTask(task, family, tokenizer, train_inst, eval_inst, max_len, cfg.max_target_length,
                                      cfg.eval_proxy, train_desc, eval_desc)
    if not any(i.label is not None or i.meta.get("answers") for i in eval_inst):  # else refused at the first eval
        raise DataError(f"{eval_desc}: no gold labels (a test split?): the evaluation split chooses the best prompt; "
                        "pass a labelled --eval-split or --eval-file")
    return PreparedTask(task, family, tokenizer, train_inst, eval_inst, max_len, train_desc, eval_desc)
