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

from .config import ResidualPromptConfig
from .runconfig import ALIASES, ConfigError, TrainConfig, load_yaml

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
        group.add_argument(flag, dest=f.name, type=conv, default=argparse.SUPPRESS, help=help_text,
                           metavar=f.name.upper())


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
    ev.add_argument("--task", required=True, help="Task name, or 'custom' with --eval-file/--text-fields.")
    ev.add_argument("--split", default="val", help="Split to score (val, test has no labels, dev32 for FewGLUE).")
    _common_data_flags(ev)
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="Write predictions for a jsonl file (leaderboard format with --submission).")
    pr.add_argument("--model", required=True)
    pr.add_argument("--prompt", required=True)
    pr.add_argument("--task", required=True)
    pr.add_argument("--input", required=True, help="jsonl in the task's format (labels optional).")
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
    return parser


def _common_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="Official-layout SuperGLUE folder.")
    p.add_argument("--fewglue-dir", default=None, help="FewGLUE folder (for --split dev32).")
    p.add_argument("--eval-file", default=None, help="Custom task: jsonl/csv to score.")
    p.add_argument("--text-fields", default=None, help="Custom task: comma-separated text fields.")
    p.add_argument("--label-field", default="label", help="Custom task: label field.")
    p.add_argument("--batch-size", type=int, default=32, help="Evaluation batch size.")
    p.add_argument("--max-length", type=int, default=256, help="Maximum text tokens per example.")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="Load the prompt even if its backbone fingerprint differs.")


def cmd_train(args) -> int:
    from .trainer import train

    cfg, prompt_cfg = _split(_settings(args))
    results = train(cfg, prompt_cfg)
    print(json.dumps({"best": results["best"], "best_step": results["best_step"], "final": results["final"],
                      "wall_time_s": results["wall_time_s"], "output_dir": cfg.output_dir}, indent=2))
    return 0


def _split(settings: dict):
    from .runconfig import split_settings

    return split_settings(settings)


def _eval_setup(args):
    from .evaluation import prepare_backbone
    from .model import ResidualPromptModel

    cfg = TrainConfig(model=args.model, task=args.task, data_dir=args.data_dir, fewglue_dir=args.fewglue_dir,
                      eval_split=getattr(args, "split", "val"), eval_file=args.eval_file,
                      text_fields=args.text_fields, label_field=args.label_field,
                      eval_batch_size=args.batch_size, max_length=args.max_length)
    prompt_dir = Path(args.prompt)
    if (prompt_dir / "best").is_dir():
        prompt_dir = prompt_dir / "best"
    backbone, tokenizer, family, task = prepare_backbone(cfg)
    model = ResidualPromptModel.from_pretrained(backbone, prompt_dir, tokenizer=tokenizer,
                                                allow_mismatch=args.allow_backbone_mismatch)
    return cfg, model, tokenizer, family, task


def cmd_eval(args) -> int:
    from .evaluation import evaluate, load_split
    from .features import featurize

    cfg, model, tokenizer, family, task = _eval_setup(args)
    instances, desc = load_split(cfg, task, family, train=False)
    feats = featurize(instances, tokenizer, family, min(cfg.max_length, model.max_text_length), train=False)
    metrics, _ = evaluate(model, task, family, instances, feats, tokenizer, cfg.eval_batch_size)
    print(json.dumps({"task": task.name, "split": cfg.eval_split, "data": desc, "metrics": metrics}, indent=2))
    return 0


def cmd_predict(args) -> int:
    from . import data as data_mod
    from .evaluation import predict
    from .features import featurize

    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"--output {out} is a folder, expected a file path")
    if not out.parent.exists():
        raise ConfigError(f"--output {out}: folder {out.parent} does not exist")
    cfg, model, tokenizer, family, task = _eval_setup(args)
    records = data_mod.read_jsonl(args.input)
    instances = task.instances(records, family, str(args.input))
    feats = featurize(instances, tokenizer, family, min(cfg.max_length, model.max_text_length), train=False)
    preds = predict(model, task, family, instances, feats, tokenizer, cfg.eval_batch_size)
    lines = task.submission(instances, preds, family)
    if not args.submission:
        lines = [{**line, "uid": inst.uid} for line, inst in zip(lines, instances)] \
            if len(lines) == len(instances) else lines
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    os.replace(tmp, out)
    print(json.dumps({"predictions": len(lines), "output": str(out)}))
    return 0


def cmd_export(args) -> int:
    from .export import export_folder

    path = export_folder(args.prompt, args.format, args.output)
    print(json.dumps({"format": args.format, "output": str(path)}))
    return 0


def cmd_bench(args) -> int:
    from .bench import run_grid

    return run_grid(args.grid, results_dir=args.results_dir, only=args.only, report_only=args.report_only,
                    dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "accelerate", "peft", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    try:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        # Once a run's training loss reaches 0, its gradients underflow to subnormal floats, which x86
        # CPUs process over 100x slower (a grid cell, MPNet CB mlp: 9.0 s/step against 2.5 for the
        # other methods). Values below ~1.2e-38 become 0 instead (see benchmarks/denormal_speed.py).
        torch.set_flush_denormal(True)
        return args.func(args)
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
