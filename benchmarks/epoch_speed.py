"""One training epoch of CB through the real trainer: dynamic padding + length-grouped batches
(ours) vs padding every input to the maximum length (as the authors' code does, 512 positions).

Same model, data, hyperparameters and seed; the two variants alternate for --rounds rounds in one
process, and the script prints the median time spent in training steps (evaluation excluded),
the ratio, and real (non-padding) tokens per second.

    python benchmarks/epoch_speed.py                 # MiniLM, CB train (250 examples), 2 rounds
    python benchmarks/epoch_speed.py --json out.json
Target (issue 3): ours at least 3x faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from resprompt.io import write_json
from resprompt.prompt.config import ResidualPromptConfig  # noqa: E402
from resprompt.training.runconfig import TrainConfig  # noqa: E402
from resprompt.training.trainer import train  # noqa: E402


def one_epoch(model: str, task: str, pad: bool, seed: int, workdir: str, data_dir: str | None) -> dict:
    cfg = TrainConfig(model=model, task=task, data_dir=data_dir, epochs=1, batch_size=8, lr=0.3, seed=seed,
                      max_length=512, pad_to_max_length=pad, max_eval_examples=8, progress=False,
                      output_dir=os.path.join(workdir, f"{'pad' if pad else 'dyn'}-{seed}"), overwrite=True)
    return train(cfg, ResidualPromptConfig(num_tokens=10, bottleneck=400))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--task", default="CB")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {"dynamic": [], "pad512": []}
    toks: dict[str, list[float]] = {"dynamic": [], "pad512": []}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            order = [False, True] if r % 2 == 0 else [True, False]
            for pad in order:
                res = one_epoch(args.model, args.task, pad, 42, work, args.data_dir)
                key = "pad512" if pad else "dynamic"
                times[key].append(res["train_time_s"])
                toks[key].append(res["train_tokens_per_s"])
                print(f"round {r} {key:8s} {res['steps']} steps  {res['train_time_s']:.1f}s  "
                      f"{res['train_tokens_per_s']:.0f} real tok/s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["pad512"] / med["dynamic"]
    out = {"model": args.model, "task": args.task, "rounds": args.rounds, "threads": args.threads,
           "median_epoch_train_s": med, "speedup": round(ratio, 2),
           "real_tokens_per_s": {k: statistics.median(v) for k, v in toks.items()},
           "target_speedup": 3.0, "met": ratio >= 3.0, "torch": torch.__version__, "machine": platform.processor()}
    print(f"\nmedian epoch (training steps only): dynamic {med['dynamic']:.1f}s, padded to 512 {med['pad512']:.1f}s")
    print(f"speedup {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    print(f"real tokens/s: dynamic {out['real_tokens_per_s']['dynamic']:.0f}, padded {out['real_tokens_per_s']['pad512']:.0f}")
    if args.json:
        write_json(args.json, out)  # atomic: never a half-written file


if __name__ == "__main__":
    main()
