"""Configuration of a training run: one validated dataclass, whose field help becomes ``--help``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..prompt.config import ResidualPromptConfig


class ConfigError(ValueError):
    """A bad run setting (flag, YAML key or value)."""


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a run needs besides the prompt configuration."""

    model: str = _f("minilm", "Backbone: hub id, local folder, or minilm / mpnet / smollm2 (offline packages).")
    task: str = _f("CB", "SuperGLUE task (BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC) or 'custom'.")
    data_dir: str | None = _f(None, "Folder in the official layout <dir>/<Task>/{train,val,test}.jsonl.")
    fewglue_dir: str | None = _f(None, "FewGLUE folder <dir>/<Task>/{train,dev32}.jsonl (used with --train-source fewglue).")
    train_source: str = _f("superglue", "Where training examples come from: superglue, fewglue or hub.")
    train_split: str = _f("train", "Training split.")
    eval_split: str = _f("val", "Split evaluated during training and by 'eval'.")
    train_file: str | None = _f(None, "Custom task: training jsonl/csv.")
    eval_file: str | None = _f(None, "Custom task: evaluation jsonl/csv.")
    text_fields: str | None = _f(None, "Custom task: comma-separated text field(s), one or two.")
    label_field: str = _f("label", "Custom task: label field.")
    target_field: str | None = _f(None, "Custom generative task: the field holding the target text (instead of "
                                  "--label-field); needs a decoder or seq2seq backbone.")
    template: str | None = _f(None, "Custom generative task: the input as a template with {field} placeholders, "
                              "e.g. 'Question: {question}\\nAnswer:' (instead of --text-fields).")
    chat: bool = _f(False, "Custom generative task: records hold a 'messages' list rendered with the tokenizer's "
                    "chat template; the loss covers the assistant turns.")
    messages_field: str = _f("messages", "With --chat: the field holding the list of {role, content} turns.")
    max_target_length: int = _f(64, "Generative task: the most target tokens a record may have (EOS included).")
    max_new_tokens: int = _f(32, "Generative task: tokens generated per input in evaluation and predict.")
    stop: str | None = _f(None, "Generative task: a stop string that ends generation (escapes such as \\n are read).")
    metric: str | None = _f(None, "Generative task: selection metric, exact_match (default), f1, rouge_l, accuracy "
                            "or loglik.")
    eval_proxy: bool = _f(False, "Generative task: score evaluations during training by the mean target "
                          "log-likelihood (cheap); generate at each new best and at the end.")
    few_shot: int | None = _f(None, "Keep k training examples per class (drawn with --seed).")
    max_train_examples: int | None = _f(None, "Keep at most this many training records (drawn with --seed).")
    max_eval_examples: int | None = _f(None, "Evaluate on at most this many records (the first ones).")
    output_dir: str | None = _f(None, "Run folder: best folded prompt, checkpoint, config, metrics.")
    seed: int = _f(42, "Seed for data order, initialisation and dropout.")
    epochs: int = _f(20, "Training epochs (ignored when --max-steps is set).")
    max_steps: int | None = _f(None, "Stop after this many optimizer steps.")
    batch_size: int = _f(8, "Examples per optimizer step (across all processes, before accumulation).")
    eval_batch_size: int = _f(32, "Examples per evaluation batch.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    lr: float = _f(0.3, "Learning rate of the raw prompt P (the paper uses 0.3 with AdamW).")
    lr_network: float | None = _f(None, "Learning rate of the reparameterisation network (default: --lr).")
    lr_head: float = _f(1e-3, "Learning rate of the classification head.")
    weight_decay: float = _f(1e-5, "Weight decay of the prompt.")
    weight_decay_network: float = _f(1e-5, "Weight decay of the network.")
    weight_decay_head: float = _f(0.01, "Weight decay of the head.")
    schedule: str = _f("linear", "Learning-rate schedule: constant or linear (decay to 0), both with warmup.")
    warmup_steps: int = _f(0, "Linear warmup steps.")
    max_grad_norm: float | None = _f(1.0, "Clip the gradient norm (none to disable).")
    max_length: int = _f(256, "Maximum text tokens per example (also capped by the model beside the prompt).")
    pad_to_max_length: bool = _f(False, "Pad every batch to --max-length (slow; the default pads each batch to its longest row).")
    eval_every: int | None = _f(None, "Evaluate every N optimizer steps (default: every epoch).")
    eval_at_start: bool = _f(False, "Also evaluate the untrained prompt before the first step (step 0; recorded as 'initial', never selected as best).")
    patience: int | None = _f(None, "Stop after N evaluations without improvement.")
    checkpoint_every: int | None = _f(None, "Also write the resumable checkpoint every N steps.")
    resume: bool = _f(False, "Continue from OUT/checkpoint.")
    overwrite: bool = _f(False, "Replace an existing run folder.")
    mixed_precision: str = _f("no", "no, fp16 or bf16 (where the device has it).")
    report_to: str = _f("none", "Experiment trackers, comma-separated, as Accelerate names them: tensorboard, "
                        "wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio, all or none "
                        "(metrics.jsonl is always written). Local ones write under OUT/resprompt.")
    progress: bool = _f(True, "Show a progress bar.")
    allow_backbone_mismatch: bool = _f(False, "Load a prompt even if its backbone fingerprint differs.")

    def __post_init__(self) -> None:
        def bad(name, allowed):
            return ConfigError(f"{name.replace('_', '-')}={getattr(self, name)!r} is invalid: expected {allowed}")

        for f in dataclasses.fields(self):  # a YAML "no" in quotes or a typo would otherwise read as True
            if f.type in ("bool", bool) and not isinstance(getattr(self, f.name), bool):
                raise bad(f.name, "true or false")
        if self.resume and self.overwrite:  # overwrite was ignored: a resume never replaces the folder
            raise ConfigError("--resume continues the run in output-dir and --overwrite replaces it: pass one")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "max_length", "max_target_length",
                     "max_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "a positive integer")
        for name in ("few_shot", "max_steps", "eval_every", "patience", "checkpoint_every",
                     "max_train_examples", "max_eval_examples"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad(name, "a positive integer")
        def number(name: str, positive: bool, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if positive else v < 0):
                raise bad(name, ("a positive" if positive else "a non-negative") + " finite number"
                          + (" or none" if optional else ""))

        for name in ("lr", "lr_head"):
            number(name, positive=True)
        number("lr_network", positive=True, optional=True)
        number("max_grad_norm", positive=True, optional=True)
        for name in ("weight_decay", "weight_decay_network", "weight_decay_head"):
            number(name, positive=False)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise bad("warmup_steps", "a whole number >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise bad("seed", "a whole number in [0, 2**32 - 1]")
        self.trackers()  # validates report_to
        if self.schedule not in ("constant", "linear"):
            raise bad("schedule", "constant or linear")
        if self.train_source not in ("superglue", "fewglue", "hub"):
            raise bad("train_source", "superglue, fewglue or hub")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise bad("mixed_precision", "no, fp16 or bf16")
        generative = self.target_field is not None or self.chat
        if generative and str(self.task).lower() != "custom":
            raise ConfigError("--target-field / --chat make a custom generative task: use --task custom")
        if not generative:
            given = [f"--{n.replace('_', '-')}" for n in ("metric", "eval_proxy", "stop") if getattr(self, n)]
            if given:
                raise ConfigError(f"{' / '.join(given)}: settings of a generative task (--target-field or --chat); "
                                  f"task {self.task} is classification and would ignore them")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ConfigError(f"warmup-steps={self.warmup_steps} is more than max-steps={self.max_steps}: the "
                              "learning rate would never reach --lr")
        if generative and self.few_shot:
            raise ConfigError("few-shot=... draws k examples per class; a generative task has none: use "
                              "--max-train-examples")
        from ..tasks.generative import SELECTION_METRICS

        if self.metric is not None and self.metric not in SELECTION_METRICS:
            raise bad("metric", " / ".join(SELECTION_METRICS))
        if self.eval_proxy and self.metric not in (None, "loglik"):
            raise ConfigError(f"--eval-proxy selects the best prompt on the target log-likelihood; metric={self.metric!r} "
                              "would be ignored: drop one of the two")
        if self.stop is not None and not self.stop:
            raise bad("stop", "a non-empty string")
        if str(self.task).lower() != "custom":
            from ..tasks.superglue import get_task

            try:
                get_task(str(self.task))
            except ValueError as e:
                raise ConfigError(f"{e}, or custom") from None


    def trackers(self) -> list[str]:
        """The ``report_to`` trackers as a list ([] for none)."""
        from accelerate.utils import LoggerType

        names = [t.strip().lower() for t in str(self.report_to).split(",") if t.strip()]
        if names in ([], ["none"]):
            return []
        known = [str(t) for t in LoggerType.list()]
        bad = [t for t in names if t not in known]
        if bad:
            raise ConfigError(f"report-to={self.report_to!r} is invalid: {', '.join(bad)} unknown; expected "
                              f"none or a comma-separated list of {', '.join(known)}")
        return names


def load_yaml(path: str, what: str = "--config") -> dict:
    """Reads a YAML mapping; errors name the file (and line) and say what is wrong."""
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {path}: file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    odd = [k for k in data if not isinstance(k, str)]
    if odd:  # `~: 1` or `3: x` parse as a None / int key
        raise ConfigError(f"{path}: a setting's name must be text, got {odd[0]!r}")
    return data


ALIASES = {"method": "reparam", "prompt_length": "num_tokens"}


def _coerce(fields, settings: dict[str, Any]) -> dict[str, Any]:
    """YAML spellings of a field's type made that type; a value of the wrong kind is an error.

    YAML reads ``1e-3`` (no dot) as text: a float field takes it as the number it spells (NaN and
    inf are then refused by validation). ``text_fields`` may be a YAML list of names. Any other
    non-text value for a text field (a list, a number) is refused here, naming the setting.
    """
    out = dict(settings)
    for f in fields:
        if f.name not in out:
            continue
        v, kind = out[f.name], str(f.type)
        if "None" in kind and isinstance(v, str) and v.strip().lower() == "none":  # as the flags read it
            out[f.name] = None
            continue
        if "float" in kind and isinstance(v, str):
            try:
                out[f.name] = float(v)
            except ValueError:
                pass  # not a number: validation names the value
        elif kind.startswith("str") and v is not None and not isinstance(v, str):
            if f.name == "text_fields" and isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                out[f.name] = ",".join(v)
            else:
                raise ConfigError(f"{f.name.replace('_', '-')}={v!r} is invalid: expected text")
    return out


def split_settings(settings: dict[str, Any]) -> tuple[TrainConfig, ResidualPromptConfig]:
    """Builds both configs from one flat dict (YAML keys or flags); unknown keys are an error."""
    settings = {ALIASES.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in settings.items()}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    prompt_keys = {f.name for f in dataclasses.fields(ResidualPromptConfig)}
    unknown = sorted(set(settings) - train_keys - prompt_keys)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    fields = [*dataclasses.fields(TrainConfig), *dataclasses.fields(ResidualPromptConfig)]
    settings = _coerce(fields, settings)
    try:
        train = TrainConfig(**{k: v for k, v in settings.items() if k in train_keys})
        prompt = ResidualPromptConfig(**{k: v for k, v in settings.items() if k in prompt_keys})
    except TypeError as e:
        raise ConfigError(str(e)) from None
    if train.lr_network is not None and prompt.reparam == "none":  # it would be dropped: no network to train
        raise ConfigError(f"lr-network={train.lr_network!r} is invalid: method 'none' has no network; leave it unset")
    return train, prompt
