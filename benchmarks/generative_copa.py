"""SmolLM2 on a generative task built from SuperGLUE COPA: residual vs plain prompt tuning, 3 seeds.

Premise, question and both alternatives in; the correct alternative's text out
(``resprompt.experiments.genbench``). Exact match and token F1 (SQuAD-normalised) of greedy
generations on the first 50 validation examples, before training (step 0) and for the best prompt
(selected on validation target log-likelihood). Not a test: about 10 minutes a run on 1 core.

    python benchmarks/generative_copa.py [--seeds 1 2 3] [--steps 40] [--json benchmarks/results/generative_copa.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copa-dir", default=str(ROOT.parent / "shared" / "data" / "superglue" / "COPA"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--methods", nargs="+", default=["none", "residual"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--max-val", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "generative_copa.json"))
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from resprompt.experiments.genbench import run_benchmark
    from resprompt.io import write_json

    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    command = " ".join(["python", "benchmarks/generative_copa.py", *sys.argv[1:]])

    def save(result):
        write_json(a.json, {"command": command, "threads": a.threads, **result})

    with tempfile.TemporaryDirectory(prefix="resprompt-gencopa-") as tmp:
        result = run_benchmark(Path(a.copa_dir), Path(tmp), seeds=a.seeds, methods=a.methods, steps=a.steps,
                               max_val=a.max_val, on_run=save)
    save(result)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
