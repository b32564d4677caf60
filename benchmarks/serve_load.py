"""Closed-loop load on `resprompt serve`: mixed-prompt batches vs one prompt per backbone forward.

MiniLM, 8 untrained folded prompts with their own heads and lengths n = 4 ... 18 (written to a
temporary folder), served by `resprompt serve` in a subprocess on 127.0.0.1, twice: as is (rows of
all prompts in one forward) and with ``--group-by-prompt`` (the same batches, one forward per
prompt). Each time 16 concurrent clients (httpx, one connection each) send one-record requests for
a uniformly drawn prompt, back to back, for ``--seconds`` after a warm-up (or ``--max-requests``).
Prints throughput, p50 / p99 latency and errors of both (warm-up errors counted apart; any error
makes the exit status 1), and the throughput ratio mixed / grouped
(target >= 2; see the result's note for what a one-core CPU makes of it).

    python benchmarks/serve_load.py --json benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serving_setup import texts  # noqa: E402  (no torch in this process: the server is the one torch process)

PORT_LINE = re.compile(r"serving \d+ prompt\(s\) on http://127\.0\.0\.1:(\d+)")


def start_server(model: str, folder: Path, log: Path, extra: list[str], threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "resprompt.cli", "serve", "--model", model, "--prompts", str(folder), "--port", "0",
           *extra]
    proc = subprocess.Popen(cmd, stderr=log.open("w"), stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = PORT_LINE.search(log.read_text())
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    time.sleep(0.1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()[-2000:]}")


async def load(url: str, names: list[str], pool: list[str], clients: int, seconds: float, max_requests: int,
               warmup_s: float) -> dict:
    """``clients`` closed-loop clients; latencies of requests started after the warm-up."""
    rng = random.Random(0)
    latencies, errors, warmup_errors, done = [], 0, 0, 0
    start = time.perf_counter()
    stop_at = start + warmup_s + seconds

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors, warmup_errors, done
        while time.perf_counter() < stop_at and done < max_requests:
            body = {"prompt": rng.choice(names), "inputs": [{"text": rng.choice(pool)}]}
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/predict", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            t1 = time.perf_counter()
            if t0 >= start + warmup_s:
                latencies.append(t1 - t0)
                done += 1
                errors += not ok
            else:
                warmup_errors += not ok

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        measure_from = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - max(measure_from, start + warmup_s)
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": errors, "warmup_errors": warmup_errors, "seconds": wall, "throughput_rps": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def batch_rows(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    s = re.search(r"^resprompt_batch_rows_sum (\S+)$", text, re.M)
    n = re.search(r"^resprompt_batch_rows_count (\S+)$", text, re.M)
    return float(s.group(1)) / max(float(n.group(1)), 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--note", default="", help="what else ran on the machine (recorded with the result)")
    ap.add_argument("--device", default="cpu", help="the server's --device (auto, cpu, cuda, cuda:N, mps)")
    ap.add_argument("--dtype", default="auto", help="the server's --dtype")
    args = ap.parse_args()
    lengths = [4 + 2 * i for i in range(8)]
    batching = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
                "--device", args.device, "--dtype", args.dtype]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "prompts"
        made = subprocess.run([sys.executable, str(HERE / "serving_setup.py"), str(folder), "--model", args.model,
                               "--lengths", ",".join(map(str, lengths))], capture_output=True, text=True, check=True)
        names = json.loads(made.stdout.strip().splitlines()[-1])
        pool = texts(256, seed=3)
        for mode, extra in (("mixed", batching), ("grouped", [*batching, "--group-by-prompt"])):
            proc, url = start_server(args.model, folder, Path(tmp) / f"{mode}.log", extra, args.threads)
            try:
                results[mode] = asyncio.run(load(url, names, pool, args.clients, args.seconds, args.max_requests,
                                                 args.warmup))
                results[mode]["mean_rows_per_batch"] = batch_rows(url)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            print(mode, json.dumps(results[mode]), flush=True)
    out = {"model": args.model, "prompts": len(names), "prompt_lengths": lengths,
           "clients": args.clients, "inputs_per_request": 1, "text_words": "8-24", "server_threads": args.threads,
           "device": args.device, "dtype": args.dtype,
           "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms, **results,
           "throughput_ratio_mixed_over_grouped": results["mixed"]["throughput_rps"] /
           results["grouped"]["throughput_rps"], "target": ">= 2",
           "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]), "note": args.note}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    failed = {m: r["errors"] + r["warmup_errors"] for m, r in results.items() if r["errors"] + r["warmup_errors"]}
    if failed:
        print(f"error: failed requests (warm-up included) per mode: {failed}; the server logs say why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
