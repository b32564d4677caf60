"""The ``resprompt`` command: parses flags and calls library functions, nothing more.

Flags of ``train`` come from the fields of ``TrainConfig`` and ``ResidualPromptConfig`` (their
help text is the fields' help); ``--config run.yaml`` supplies defaults that flags override.
Every error a user can cause ends in one ``resprompt: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from .prompt.config import ResidualPromptConfig
from .training.runconfig import ALIASES, ConfigError, TrainConfig, load_yaml

log = logging.getLogger("resprompt")
_FLAG_NAMES = {v: k for k, v in ALIASES.items()}  # reparam -> --method, num_tokens -> --prompt-length


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + _FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        help_text = f.metadata.get("help", "") + f" (default: {f.default!r})"
        kind = str(f.type)
        if "bool" in kind:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
            continue
        conv = int if kind.startswith("int") else float if kind.startswith("float") else str
        if "None" in kind and conv is not str:
            conv = _optional(conv)
        group.add_argument(flag, dest=f.name, type=conv, default=argparse.SUPPRESS, help=help_text,
                           metavar=f.name.upper())


def _optional(conv):
    """A flag converter that also takes ``none`` (any case) for a setting that may be unset."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else conv(text)

    parse.__name__ = conv.__name__  # argparse names the type in its error message
    return parse


def _settings(args: argparse.Namespace, exclude=("command", "config", "func", "verbose")) -> dict:
    settings = load_yaml(args.config) if getattr(args, "config", None) else {}
    settings.update({k: v for k, v in vars(args).items() if k not in exclude})
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resprompt", description="Residual Prompt Tuning for Hugging Face models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="Train a prompt on a task; writes a run folder.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--config", help="YAML file of settings (flag names with _ or -); flags override it.")
    _add_dataclass_flags(tr, TrainConfig)
    _add_dataclass_flags(tr, ResidualPromptConfig)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="Score a saved prompt on a task split; prints metrics as JSON.")
    ev.add_argument("--model", required=True, help="Backbone the prompt was trained on.")
    ev.add_argument("--prompt", required=True, help="Run folder (uses its best/) or prompt folder (resprompt or PEFT).")
    ev.add_argument("--task", default=None, help="Task name (default: the one the prompt was trained on), or "
                    "'custom' with --eval-file (the prompt's saved label set and fields are used).")
    ev.add_argument("--split", default="val", help="Split to score (val, test has no labels, dev32 for FewGLUE).")
    _common_data_flags(ev)
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="Write predictions for a jsonl file (leaderboard format with --submission).")
    pr.add_argument("--model", required=True)
    pr.add_argument("--prompt", required=True)
    pr.add_argument("--task", default=None, help="Task name (default: the one the prompt was trained on).")
    pr.add_argument("--input", required=True, help="jsonl, csv or tsv in the task's format (labels optional).")
    pr.add_argument("--output", required=True, help="Where to write the predictions (jsonl).")
    pr.add_argument("--submission", action="store_true", help="Write the SuperGLUE leaderboard format.")
    _common_data_flags(pr)
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="Convert a saved prompt: peft, safetensors or npy.")
    ex.add_argument("--prompt", required=True, help="Run folder or prompt folder.")
    ex.add_argument("--format", required=True, choices=["peft", "safetensors", "npy"])
    ex.add_argument("--output", required=True, help="Destination folder.")
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser("bench", help="Run a declared benchmark grid; writes one result per cell and a report.")
    be.add_argument("grid", help="Grid YAML file.")
    be.add_argument("--results-dir", default=None, help="Where cell results go (default: from the grid file).")
    be.add_argument("--only", default=None, help="Run only cells whose id contains this text.")
    be.add_argument("--report-only", action="store_true", help="Rebuild the report from finished cells.")
    be.add_argument("--dry-run", action="store_true", help="List the cells and exit.")
    be.set_defaults(func=cmd_bench)

    from .serving.config import ServeConfig

    sv = sub.add_parser("serve", help="Serve the prompts of a folder over HTTP, batched together on one backbone.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_dataclass_flags(sv, ServeConfig)
    sv.set_defaults(func=cmd_serve)
    return parser


def _common_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="Official-layout SuperGLUE folder.")
    p.add_argument("--fewglue-dir", default=None, help="FewGLUE folder (for --split dev32).")
    p.add_argument("--eval-file", default=None, help="Custom task: jsonl/csv to score.")
    p.add_argument("--text-fields", default=None, help="Custom task: comma-separated text fields.")
    p.add_argument("--label-field", default="label", help="Custom task: label field.")
    p.add_argument("--target-field", default=None, help="Generative prompt: the target field of the file "
                   "(default: the one the prompt was trained with).")
    p.add_argument("--batch-size", type=int, default=32, help="Evaluation batch size.")
    p.add_argument("--max-length", type=int, default=256, help="Maximum text tokens per example.")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="Load the prompt even if its backbone fingerprint differs.")
    p.add_argument("--device", default="auto", help="Where the backbone runs: auto (the first GPU if torch sees "
                   "one, else the CPU), cpu, cuda, cuda:N or mps.")
    p.add_argument("--dtype", default="auto", help="Backbone precision: auto (as the checkpoint loads), float32, "
                   "bfloat16 or float16.")
    g = p.add_argument_group("generative prompts (settings saved with the prompt are the defaults)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="Tokens to generate per input.")
    g.add_argument("--stop", default=None, help="A stop string (escapes such as \\n are read).")
    g.add_argument("--do-sample", action="store_true", help="Sample instead of greedy decoding.")
    g.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (> 0).")
    g.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling threshold in (0, 1].")
    g.add_argument("--seed", type=int, default=0, help="Sampling seed.")


def cmd_train(args) -> int:
    from .training.runconfig import split_settings
    from .training.trainer import train

    cfg, prompt_cfg = split_settings(_settings(args))
    results = train(cfg, prompt_cfg)
    print(json.dumps({"best": results["best"], "best_step": results["best_step"], "final": results["final"],
                      "wall_time_s": results["wall_time_s"], "output_dir": cfg.output_dir}, indent=2))
    return 0


# eval / predict flags of generative prompts, with their defaults (the parser's)
GENERATION_FLAGS = {"max_new_tokens": None, "stop": None, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
                    "seed": 0}


def _task_choice(args, saved) -> tuple[str, bool, bool]:
    """(task name for TrainConfig, generative, custom) of ``eval`` / ``predict`` for a saved prompt."""
    meta = saved.task or {}
    # a task of the user's own (whatever name it was given) is rebuilt from the metadata: task 'custom'
    task_name = args.task or ("custom" if meta.get("custom") else meta.get("name"))
    if not task_name:
        raise ConfigError(f"--task is required: {saved.path} records no task")
    generative = meta.get("kind") == "generation"
    if generative and task_name.lower() not in ("custom", str(meta.get("name")).lower()):
        raise ConfigError(f"{saved.path}: a generative prompt (text targets); --task {task_name} is a "
                          "classification task: use --task custom or leave --task out")
    if not generative and getattr(args, "target_field", None):
        raise ConfigError(f"{saved.path}: a classification prompt (labels {meta.get('labels')}); "
                          "--target-field is for generative prompts")
    given = [flag for flag, default in GENERATION_FLAGS.items() if getattr(args, flag, default) != default]
    if not generative and given:  # they would be ignored, unchecked (--temperature nan passed)
        raise ConfigError(f"{saved.path}: a classification prompt; "
                          f"{', '.join('--' + f.replace('_', '-') for f in given)} apply to generative prompts only")
    custom = generative or task_name.lower() == "custom" or bool(meta.get("custom") and task_name == meta.get("name"))
    if custom and saved.task is None and not args.text_fields:
        raise ConfigError(f"{saved.path} records no task: pass --text-fields for task 'custom'")
    return ("custom" if custom else task_name), generative, custom


def _eval_setup(args):
    """The prompt's model on its backbone, and the task to score it on (the prompt's own by default)."""
    from .devices import place, resolve_device, resolve_dtype
    from .formats import read_prompt
    from .model import ResidualPromptModel
    from .training.setup import prepare_backbone, resolve_task

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)  # refused before anything loads
    saved = read_prompt(args.prompt)
    task_name, generative, custom = _task_choice(args, saved)
    cfg = TrainConfig(model=args.model, task=task_name, data_dir=args.data_dir, fewglue_dir=args.fewglue_dir,
                      eval_split=getattr(args, "split", "val"), eval_file=getattr(args, "eval_file", None),
                      text_fields=args.text_fields, label_field=args.label_field, eval_batch_size=args.batch_size,
                      max_length=args.max_length)
    task = resolve_task(cfg, saved.task if custom and saved.task else None)
    if generative and args.target_field:
        task = dataclasses.replace(task, target_field=args.target_field)
    if saved.task and not generative and list(saved.task.get("labels", [])) != list(task.labels):
        raise ConfigError(f"{saved.path}: the prompt was trained on {saved.task.get('name')} with labels "
                          f"{saved.task.get('labels')}; task {task.name} has labels {list(task.labels)}")
    backbone, tokenizer, family, task = prepare_backbone(cfg, task)
    model = ResidualPromptModel.from_pretrained(place(backbone, device, dtype), saved.path, tokenizer=tokenizer,
                                                allow_mismatch=args.allow_backbone_mismatch)
    _check_head_outputs(model, task, saved.path)
    return cfg, model, tokenizer, family, task


def _check_head_outputs(model, task, where) -> None:
    """A classifier head with another label count than the task's would score (and predict) silently wrong."""
    from .heads import head_outputs
    from .tasks.generative import GenerativeTask

    if isinstance(task, GenerativeTask) or model.head_kind != "ForSequenceClassification":
        return
    want, got = (2 if task.choice else task.num_labels), head_outputs(model.head)
    if got is not None and got != want:
        raise ConfigError(f"{where}: the prompt's head has {got} outputs; task {task.name} needs {want} "
                          f"({'a yes/no score per choice' if task.choice else 'labels ' + str(list(task.labels))})")


def _generation_config(args, task):
    from .generation.config import GenerationConfig
    from .training.setup import unescape

    stop = (unescape(args.stop),) if getattr(args, "stop", None) is not None else task.stop
    new = args.max_new_tokens if args.max_new_tokens is not None else task.max_new_tokens
    return GenerationConfig(max_new_tokens=new, stop=stop,
                            do_sample=getattr(args, "do_sample", False), temperature=getattr(args, "temperature", 1.0),
                            top_p=getattr(args, "top_p", 1.0), seed=getattr(args, "seed", 0))


def _generate(args, cfg, model, tokenizer, family, task, instances):
    from .tasks.genprepared import score_instances

    config = _generation_config(args, task)
    return score_instances(model, tokenizer, family, instances, min(cfg.max_length, model.max_text_length),
                           cfg.eval_batch_size, config)


def cmd_eval(args) -> int:
    from .tasks.evaluation import evaluate
    from .tasks.features import featurize
    from .tasks.generative import GenerativeTask
    from .training.setup import load_split

    cfg, model, tokenizer, family, task = _eval_setup(args)
    instances, desc = load_split(cfg, task, family, train=False)
    if isinstance(task, GenerativeTask):
        metrics, _ = _generate(args, cfg, model, tokenizer, family, task, instances)
        if metrics is None:
            raise ConfigError(f"{desc}: records without targets: nothing to score (use predict)")
        print(json.dumps({"task": task.name, "data": desc, "metrics": metrics}, indent=2))
        return 0
    feats = featurize(instances, tokenizer, family, min(cfg.max_length, model.max_text_length), train=False)
    metrics, _ = evaluate(model, task, family, instances, feats, tokenizer, cfg.eval_batch_size)
    print(json.dumps({"task": task.name, "split": cfg.eval_split, "data": desc, "metrics": metrics}, indent=2))
    return 0


def cmd_predict(args) -> int:
    from .tasks import data as data_mod
    from .tasks.evaluation import predict
    from .tasks.features import featurize
    from .tasks.generative import GenerativeTask

    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"--output {out} is a folder, expected a file path")
    if not out.parent.exists():
        raise ConfigError(f"--output {out}: folder {out.parent} does not exist")
    if out.exists() and Path(args.input).exists() and out.resolve() == Path(args.input).resolve():
        raise ConfigError(f"--output {out} is the --input file: writing the predictions would replace the records")
    cfg, model, tokenizer, family, task = _eval_setup(args)
    records = data_mod.read_records(args.input)
    if not records:
        raise ConfigError(f"{args.input}: no records (empty file)")
    instances = task.instances(records, family, str(args.input))
    if isinstance(task, GenerativeTask):
        if args.submission:
            raise ConfigError("--submission is the SuperGLUE leaderboard format; a generative prompt writes text")
        _, texts = _generate(args, cfg, model, tokenizer, family, task, instances)
        lines = [{"uid": inst.uid, "text": text} for inst, text in zip(instances, texts)]
    else:
        feats = featurize(instances, tokenizer, family, min(cfg.max_length, model.max_text_length), train=False)
        preds = predict(model, task, family, instances, feats, tokenizer, cfg.eval_batch_size)
        lines = task.submission(instances, preds, family)
        if not args.submission:
            lines = [{**line, "uid": inst.uid} for line, inst in zip(lines, instances)] \
                if len(lines) == len(instances) else lines
    from .io import write_text

    write_text(out, "".join(json.dumps(x) + "\n" for x in lines))
    print(json.dumps({"predictions": len(lines), "output": str(out)}))
    return 0


def cmd_export(args) -> int:
    from .formats import export_folder

    path = export_folder(args.prompt, args.format, args.output)
    print(json.dumps({"format": args.format, "output": str(path)}))
    return 0


def cmd_bench(args) -> int:
    from .experiments.bench import run_grid

    return run_grid(args.grid, results_dir=args.results_dir, only=args.only, report_only=args.report_only,
                    dry_run=args.dry_run)


def cmd_serve(args) -> int:
    from .serving.config import ServeConfig
    from .serving.server import serve

    names = {f.name for f in dataclasses.fields(ServeConfig)}
    return serve(ServeConfig(**{k: v for k, v in vars(args).items() if k in names}))


def _quiet_broken_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again, and exit as a
    process stopped by SIGPIPE would (128 + 13), the way `cat` or `grep` end in a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "accelerate", "peft", "httpx", "urllib3", "filelock", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    try:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars: errors stay one line
        # Once a run's training loss reaches 0, its gradients underflow to subnormal floats, which x86
        # CPUs process over 100x slower (a grid cell, MPNet CB mlp: 9.0 s/step against 2.5 for the
        # other methods). Values below ~1.2e-38 become 0 instead (see benchmarks/denormal_speed.py).
        torch.set_flush_denormal(True)
        return args.func(args)
    except BrokenPipeError:  # stdout closed early (`resprompt bench --dry-run | head`): not an error
        return _quiet_broken_pipe()
    except ValueError as e:  # DataError, ConfigError, PromptFileError, BackboneError
        print(f"resprompt: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as e:
        print(f"resprompt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
