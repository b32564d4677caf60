"""Two finished grid cells side by side: hardware, training losses, evaluations and prompt norms.

    python benchmarks/compare_cells.py A.json B.json [--tol 1e-4]

A and B are cell records (``benchmarks/results/<grid>/cells/<cell id>.json``). Prints the CPU and
versions of each, the first optimizer step where their training losses differ by more than
``--tol`` (same seed and settings on two machines: how far floating point keeps them together),
then each evaluation's score and prompt norm (‖P'‖, logged since 2026-11-30), and best / last.
Example (the same SmolLM2 CB seed on an AMD EPYC and an Intel Xeon):

    python benchmarks/compare_cells.py \\
        benchmarks/results/small/cells/main__model=smollm2__task=CB__method=residual__seed=1.json \\
        benchmarks/results/small/cells/decoder_norm__model=smollm2__task=CB__method=residual__seed=1.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def first_divergence(a: list[float], b: list[float], tol: float) -> int | None:
    """1-based index of the first pair with |a_i - b_i| > tol (over the common length), else None."""
    return next((i for i, (x, y) in enumerate(zip(a, b), 1) if abs(x - y) > tol), None)


def _losses(rec: dict) -> list[float]:
    return [x["loss"] for x in rec.get("metrics", []) if x.get("type") == "train" and "loss" in x]


def _evals(rec: dict) -> dict[int, dict]:
    return {x["step"]: x for x in rec.get("metrics", []) if x.get("type") == "eval"}


def _pts(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def compare(a: dict, b: dict, tol: float) -> list[str]:
    out = []
    for name, rec in (("A", a), ("B", b)):
        hw, v = rec.get("hardware", {}), rec.get("versions", {})
        out.append(f"{name}: {rec.get('cell_id')}  cpu={hw.get('cpu')}  torch={v.get('torch')}  "
                   f"transformers={v.get('transformers')}  finished {rec.get('finished_at')}")
    la, lb = _losses(a), _losses(b)
    if la and lb:
        step = first_divergence(la, lb, tol)
        worst = max(abs(x - y) for x, y in zip(la, lb))
        out.append(f"training losses ({min(len(la), len(lb))} common steps): "
                   + ("agree within " + f"{tol:g} throughout" if step is None else
                      f"first differ by more than {tol:g} at step {step}") + f"; largest difference {worst:.2g}")
    ea, eb = _evals(a), _evals(b)
    out.append("step | score A | score B | ‖P'‖ A | ‖P'‖ B")
    for s in sorted(set(ea) | set(eb)):
        xa, xb = ea.get(s, {}), eb.get(s, {})
        out.append(f"{s} | {_pts(xa.get('score'))} | {_pts(xb.get('score'))} | "
                   f"{xa.get('prompt_norm', '-')} | {xb.get('prompt_norm', '-')}")
    ra, rb = a.get("results", {}), b.get("results", {})
    for key in ("best", "final"):
        out.append(f"{key}: A {_pts((ra.get(key) or {}).get('score'))}  B {_pts((rb.get(key) or {}).get('score'))}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tol", type=float, default=1e-4, help="loss difference that counts as parting (default 1e-4)")
    args = ap.parse_args(argv)
    recs = []
    for p in (args.a, args.b):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            print(f"compare_cells: cannot read cell record {p}: {e}", file=sys.stderr)
            return 2
        if not isinstance(rec, dict) or not isinstance(rec.get("metrics", []), list):
            print(f"compare_cells: {p} is not a cell record (expected a JSON object with a 'metrics' list)",
                  file=sys.stderr)
            return 2
        recs.append(rec)
    print("\n".join(compare(*recs, args.tol)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
