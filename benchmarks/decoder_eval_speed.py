"""Decoder evaluation: one forward pass per instance for single-token candidates vs one per candidate.

A decoder scores each answer candidate by its log-likelihood after the prompt. When every candidate
is one token (" True"/" False"/" Neither" on CB, " Yes"/" No" on WiC, ...) the k rows of an
instance share their prefix, so one forward pass gives all k scores. This script evaluates the same
prompted SmolLM2 on a real validation split both ways, in interleaved rounds in one process, and
prints the median time of each, their ratio, the largest score difference and whether the
predicted candidates agree.

    python benchmarks/decoder_eval_speed.py                      # SmolLM2, CB val (56 x 3 candidates)
    python benchmarks/decoder_eval_speed.py --task RTE --max-eval 64 --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from resprompt import ResidualPromptConfig, ResidualPromptModel  # noqa: E402
from resprompt.backbones import BackboneError, load_backbone  # noqa: E402
from resprompt.io import write_json
from resprompt.tasks.evaluation import best_candidates, decoder_scores  # noqa: E402
from resprompt.tasks.features import featurize  # noqa: E402
from resprompt.training.runconfig import TrainConfig  # noqa: E402
from resprompt.training.setup import load_split, resolve_task  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="CB")
    ap.add_argument("--max-eval", type=int, default=0, help="first N validation examples (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, task=args.task, max_eval_examples=args.max_eval or None)
    task = resolve_task(cfg)
    try:
        backbone, tok, family = load_backbone(cfg.model, head="auto", num_labels=task.num_labels)
    except BackboneError as e:
        raise SystemExit(f"decoder_eval_speed.py: --model: {e}") from None
    if family != "decoder":
        raise SystemExit(f"decoder_eval_speed.py: --model {args.model}: {family} backbone; this benchmark needs a decoder")
    torch.manual_seed(0)
    model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=10, init_seed=0)).eval()
    with torch.no_grad():  # a non-trivial prompt network, as after some training
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    instances, desc = load_split(cfg, task, family, train=False)
    feats = featurize(instances, tok, family, cfg.max_length, train=False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    times: dict[bool, list[float]] = {True: [], False: []}
    scores: dict[bool, dict] = {}
    for _ in range(args.rounds):
        for merge in (True, False):
            t0 = time.perf_counter()
            scores[merge] = decoder_scores(model, feats, pad, args.batch_size, merge=merge)
            times[merge].append(time.perf_counter() - t0)
    diff = max(abs(scores[True][k] - scores[False][k]) for k in scores[False])
    a, b = best_candidates(scores[True]), best_candidates(scores[False])
    res = {
        "model": args.model, "task": args.task, "data": desc, "instances": len(instances), "rows": len(feats),
        "rounds": args.rounds, "threads": args.threads, "batch_size": args.batch_size,
        "merged_s": statistics.median(times[True]), "per_candidate_s": statistics.median(times[False]),
        "max_abs_score_diff": diff, "predictions_agree": sum(a[i] == b[i] for i in a), "torch": torch.__version__,
    }
    res["ratio_merged_over_per_candidate"] = res["merged_s"] / res["per_candidate_s"]
    print(f"{args.model} {args.task}: {len(instances)} instances, {len(feats)} candidate rows")
    print(f"  one pass per instance : {res['merged_s']:.1f} s (median of {args.rounds})")
    print(f"  one pass per candidate: {res['per_candidate_s']:.1f} s")
    print(f"  ratio {res['ratio_merged_over_per_candidate']:.3f}; largest score difference {diff:.2e}; "
          f"predictions agree on {res['predictions_agree']}/{len(a)}")
    if args.json:
        write_json(args.json, res)  # atomic: never a half-written file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
