"""Latency per request of a decoder prompt served from its KV prefix vs recomputed, and vs the bare backbone.

SmolLM2-135M, a folded prompt of n vectors (n = 10 and 100), requests of 32 input tokens, one
request at a time (``--batch B``: B requests of the same prompt served together, as the server's
batches are; the ratios are then per batch, i.e. per request). Three ways, timed interleaved in one process (rounds alternate the order):

- recomputed: [BOS, prompt, text] through the backbone at every request (then the KV cache of
  generation itself, as ``generate_ids`` always uses it);
- prefix: the prompt's keys/values computed once (``PromptPrefix.build``); a request feeds its text;
- bare: the backbone on [BOS, text] with no prompt at all (the same decoding loop).

Two request kinds: ``first_token`` (the prefill and one token: what a classification-style or
scoring request costs) and ``tokens_8`` (eight new tokens). Reported: median seconds and the
ratios prefix / recomputed and prefix / bare. Greedy outputs of prefix and recomputed are checked
equal on every request.

    python benchmarks/kv_prefix_latency.py [--rounds 20] [--threads 2] [--device cuda] [--json benchmarks/results/kv_prefix_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def measure(model, n: int, rounds: int, text_len: int, new_tokens: int, batch: int = 1) -> dict:
    import torch

    from resprompt.generation.config import GenerationConfig
    from resprompt.generation.decode import _decoder_loop, generate_ids
    from resprompt.generation.prefix import BatchPrefix, PromptPrefix

    g = torch.Generator().manual_seed(n)
    device = model.backbone.get_input_embeddings().weight.device
    prompt = (torch.randn(n, model.hidden_size, generator=g) * 0.05).to(device)
    bos = model.tokenizer.bos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens)
    build_s, prefix = timed(lambda: PromptPrefix.build(model, prompt))
    batch_prefix = BatchPrefix([prefix] * batch)
    embed = model.backbone.get_input_embeddings()

    def positions(ids):
        return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
    times = {"recomputed": [], "prefix": [], "bare": []}
    mismatches = 0
    for r in range(rounds):
        text = torch.randint(100, 40000, (batch, text_len), generator=g).to(device)
        full = torch.cat([torch.full((batch, 1), bos, device=device), text], dim=1)
        ways = {
            "recomputed": lambda full=full: generate_ids(model, full, prompts=prompt, config=config, eos_token_id=-1),
            "prefix": lambda text=text: generate_ids(model, text, prefix=batch_prefix, config=config, eos_token_id=-1),
            "bare": lambda full=full: _decoder_loop(model, embed(full), torch.ones_like(full), positions(full), config,
                                                    True, None, None, -1, 0),
        }
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        outs = {}
        for name in order:
            t, outs[name] = timed(ways[name])
            times[name].append(t)
        mismatches += int(not torch.equal(outs["recomputed"], outs["prefix"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": n, "new_tokens": new_tokens, "batch": batch, "median_s": {k: round(v, 4) for k, v in med.items()},
            "prefix_over_recomputed": round(med["prefix"] / med["recomputed"], 3),
            "prefix_over_bare": round(med["prefix"] / med["bare"], 3), "prefix_build_s": round(build_s, 4),
            "greedy_mismatches": mismatches}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--lengths", default="10,100", help="prompt lengths n, comma-separated")
    ap.add_argument("--batch", type=int, default=1, help="requests served together in one batch (same prompt)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "kv_prefix_latency.json"))
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    ap.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from resprompt.backbones import load_backbone
    from resprompt.devices import resolve_device, resolve_dtype
    from resprompt.io import write_json
    from resprompt.model import ResidualPromptModel
    from resprompt.prompt.config import ResidualPromptConfig

    torch.set_num_threads(a.threads)
    backbone, tokenizer, _ = load_backbone(a.model, dtype=resolve_dtype(a.dtype))
    backbone.to(resolve_device(a.device))
    results = []
    with torch.no_grad():
        for n in (int(x) for x in a.lengths.split(",")):
            model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=n), tokenizer=tokenizer).eval()
            for new_tokens in (1, 8):
                measure(model, n, 2, a.text_len, new_tokens, a.batch)  # warm-up
                results.append(measure(model, n, a.rounds, a.text_len, new_tokens, a.batch))
                print(json.dumps(results[-1]))
    out = {"command": " ".join(["python", "benchmarks/kv_prefix_latency.py", *sys.argv[1:]]), "model": a.model,
           "threads": a.threads, "device": a.device, "dtype": str(backbone.dtype), "text_tokens": a.text_len, "batch": a.batch, "rounds": a.rounds, "results": results}
    write_json(a.json, out)
    return 1 if any(r["greedy_mismatches"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
