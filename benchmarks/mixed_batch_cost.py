"""What mixing prompts in one batch costs: 16 rows of 8 distinct prompts vs the same 16 rows of one prompt,
and what it saves: the same 16 mixed rows run one prompt per forward (``group_by_prompt``, what PEFT
allows: 8 forwards of 2 rows).

MiniLM, 8 untrained folded prompts with their own heads (all n = 10 here, so both batches have the
same shape; ``--mixed-lengths`` gives them n = 4 ... 18 instead, and the single-prompt batch then
uses the n = 18 prompt, so neither batch is the longer one), 16 short texts (8-24 words).
Both batches are prepared once (tokenised rows); each round times ``PromptRegistry.run`` on both in
alternating order (one backbone forward each: the mixed one inserts 8 prompts and applies 8 heads,
each to its own rows). Prints medians, the ratio mixed / single (target <= 1.05) and the ratio
grouped / mixed: the most a server can gain from mixing on this machine, before HTTP and queueing
(``serve_load.py`` measures the whole server).

    python benchmarks/mixed_batch_cost.py --json benchmarks/results/mixed_batch_cost.json
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
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_setup import make_prompts, texts  # noqa: E402

from resprompt.backbones import load_backbone  # noqa: E402
from resprompt.devices import resolve_device, resolve_dtype  # noqa: E402
from resprompt.serving.config import RegistryOptions  # noqa: E402
from resprompt.serving.registry import PromptRegistry  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mixed-lengths", action="store_true", help="prompts of n = 4, 6, ..., 18 instead of all 10")
    ap.add_argument("--json", default=None)
    ap.add_argument("--note", default="", help="what else ran on the machine (recorded with the result)")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = resolve_device(args.device)
    backbone, tok, _ = load_backbone(args.model, dtype=resolve_dtype(args.dtype))
    backbone.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    lengths = [4 + 2 * i for i in range(8)] if args.mixed_lengths else [10] * 8
    with tempfile.TemporaryDirectory() as tmp:
        names = make_prompts(backbone, tok, Path(tmp), lengths)
        registry = PromptRegistry(backbone, tok)
        registry.scan(tmp)
        grouped = PromptRegistry(backbone, tok, RegistryOptions(group_by_prompt=True))
        grouped.scan(tmp)
        rows = texts(16, seed=1)
        mixed = [registry.prepare(names[i % 8], {"text": t}) for i, t in enumerate(rows)]
        longest = names[lengths.index(max(lengths))]  # the single-prompt batch is never the shorter one
        single = [registry.prepare(longest, {"text": t}) for t in rows]
        split = [grouped.prepare(names[i % 8], {"text": t}) for i, t in enumerate(rows)]
        ways = {"mixed": (registry, mixed), "single": (registry, single), "grouped": (grouped, split)}
        times = {name: [] for name in ways}
        with torch.inference_mode():
            for _ in range(3):
                for reg, batch in ways.values():
                    reg.run(batch)
            for r in range(args.rounds):
                for name in (list(ways) if r % 2 else list(reversed(ways))):
                    reg, batch = ways[name]
                    sync()
                    t0 = time.perf_counter()
                    reg.run(batch)
                    sync()
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"model": args.model, "rows": 16, "prompts_mixed": 8, "prompt_lengths": lengths,
              "single_prompt_length": max(lengths), "min_s": {k: min(v) for k, v in times.items()},
              "threads": args.threads, "device": str(device), "dtype": str(backbone.dtype), "rounds": args.rounds,
              "median_s": med, "ratio_mixed_over_single": med["mixed"] / med["single"], "target": "<= 1.05",
              "ratio_grouped_over_mixed": med["grouped"] / med["mixed"],
              "command": " ".join(["python", "benchmarks/mixed_batch_cost.py", *sys.argv[1:]]), "note": args.note}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
