"""Subnormal floats on this CPU: a matrix product with and without flushing them to zero.

    python benchmarks/denormal_speed.py [--size 512] [--rounds 5] [--json out.json]

Why it matters: once a training run's loss reaches 0 (a small model overfitting 32 examples), its
gradients underflow to subnormal floats (below ~1.2e-38), which x86 CPUs process in microcode. A
grid cell (MPNet, CB, mlp, seed 1) ran at 9.0 s/step against 2.5 for the other methods. The
`resprompt` CLI therefore calls ``torch.set_flush_denormal(True)``. This script times
``A @ B`` with B full of subnormals and with B normal, flushing off and on, interleaved, and
reports medians and the ratios, all in one process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from resprompt.io import write_json


def _time(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(size: int = 512, rounds: int = 5, repeat: int = 3) -> dict:
    torch.manual_seed(0)
    a = torch.randn(size, size)
    sub = torch.full((size, size), 1e-39)  # subnormal in float32
    normal = torch.randn(size, size)
    times = {k: [] for k in ("subnormal_noflush", "normal_noflush", "subnormal_flush", "normal_flush")}
    try:
        for _ in range(rounds):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                tag = "flush" if flush else "noflush"
                times[f"subnormal_{tag}"].append(_time(lambda: a @ sub, repeat))
                times[f"normal_{tag}"].append(_time(lambda: a @ normal, repeat))
    finally:
        torch.set_flush_denormal(False)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med, "size": size, "rounds": rounds, "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "subnormal/normal without flush": med["subnormal_noflush"] / med["normal_noflush"],
            "subnormal/normal with flush": med["subnormal_flush"] / med["normal_flush"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    if args.size < 1 or args.rounds < 1:
        print("denormal_speed: --size and --rounds must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    res = measure(args.size, args.rounds)
    for k, v in res["median_s"].items():
        print(f"{k:>18}: {1000 * v:8.2f} ms")
    print(f"subnormal / normal: {res['subnormal/normal without flush']:.1f}x without flushing, "
          f"{res['subnormal/normal with flush']:.2f}x with torch.set_flush_denormal(True)")
    if args.json:
        write_json(args.json, res)  # atomic: never a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
