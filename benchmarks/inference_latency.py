"""Inference cost of a folded residual prompt vs the bare backbone vs PEFT's PromptTuning.

After training, the residual network is folded away: inference should cost exactly what plain
prompt tuning costs. This script checks that on one batch (eval mode, no grad): the bare
backbone on 128 tokens, our folded prompt (10 tokens inserted after [CLS], loaded with
``ResidualPromptModel.from_pretrained``), PEFT's PromptTuning (10 virtual tokens) and, as a control,
the bare backbone on 138 real tokens (the length the prompted models run at), timed in interleaved
rounds in one process; it prints medians, the ratios folded/PEFT, folded/bare and
folded/bare-at-138, and the stored parameters (folded prompt + head vs the trainable parameters
during training).

    python benchmarks/inference_latency.py              # MiniLM, batch 8 x 128, 30 rounds
    python benchmarks/inference_latency.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_speed import default_model_path, make_batch  # noqa: E402

from resprompt import ResidualPromptConfig, ResidualPromptModel  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = default_model_path()

    def backbone():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()

    tok = AutoTokenizer.from_pretrained(path)
    batch = make_batch(tok.vocab_size, tok.cls_token_id, args.batch_size, args.seq_len, seed=0)
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    longer = make_batch(tok.vocab_size, tok.cls_token_id, args.batch_size, args.seq_len + 10, seed=0)
    long_inputs = {k: v for k, v in longer.items() if k in ("input_ids", "attention_mask")}
    trained = ResidualPromptModel(backbone(), ResidualPromptConfig(num_tokens=10, bottleneck=400))
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_pretrained(tmp)
        folded = ResidualPromptModel.from_pretrained(backbone(), tmp).eval()
    peft = get_peft_model(backbone(), PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10)).eval()
    bare = backbone()
    variants = {"bare": lambda: bare(**inputs), "folded": lambda: folded(**inputs), "peft": lambda: peft(**inputs),
                "bare_plus10": lambda: bare(**long_inputs)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    with torch.no_grad():
        for _ in range(3):
            for fn in variants.values():
                fn()
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                t = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "median_s": med, "folded/peft": med["folded"] / med["peft"], "folded/bare": med["folded"] / med["bare"],
        "folded/bare_plus10": med["folded"] / med["bare_plus10"],
        "trainable_params_during_training": trained.num_trainable(),
        "stored_params_after_folding": 10 * trained.hidden_size + sum(v.numel() for v in trained.head_state().values()),
        "batch": [args.batch_size, args.seq_len], "rounds": args.rounds, "threads": args.threads,
        "torch": torch.__version__,
    }
    for k in names:
        print(f"{k:11s} median {med[k] * 1000:.1f} ms per batch")
    print(f"folded/PEFT {out['folded/peft']:.3f}   folded/bare {out['folded/bare']:.3f} (10 extra positions of "
          f"{args.seq_len + 10})   folded/bare_plus10 {out['folded/bare_plus10']:.3f}")
    print(f"parameters: {out['trainable_params_during_training']:,} trainable during training, "
          f"{out['stored_params_after_folding']:,} stored after folding (prompt + head)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
