"""A generative task built from SuperGLUE files, and the benchmark that trains SmolLM2 on it.

COPA as text generation: premise, question and both alternatives in; the correct alternative's
text out. A model that has learnt the task copies one option word for word, so exact match is a
meaningful score (an untrained model rambles); the two options make 50% exact match the level of
a model that copies but cannot choose.

``run_benchmark`` trains residual and plain prompt tuning ("none") for each seed, with exact match
and token F1 generated before training (step 0) and after (the best prompt on validation loglik,
``--eval-proxy``; generation at each new best and at the end). ``benchmarks/generative_copa.py`` is
its command line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

COPA_TEMPLATE = ("Premise: {premise}\nWhat was the {question}?\nOption 1: {choice1}\nOption 2: {choice2}\n"
                 "Answer:")


def copa_as_generation(records: list[dict]) -> list[dict]:
    """COPA records with a ``target`` field: the text of the correct alternative."""
    out = []
    for r in records:
        row = {k: r[k] for k in ("idx", "premise", "question", "choice1", "choice2")}
        row["target"] = r["choice1"] if int(r["label"]) == 0 else r["choice2"]
        out.append(row)
    return out


def write_copa_files(copa_dir: Path, out_dir: Path, max_train: int | None = None, max_val: int | None = None):
    """train.jsonl / val.jsonl of the generative COPA task under ``out_dir``; returns their paths."""
    from ..tasks.data import read_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, limit in (("train", max_train), ("val", max_val)):
        rows = copa_as_generation(read_jsonl(Path(copa_dir) / f"{split}.jsonl"))[:limit]
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


METHODS = {
    # plain prompt tuning at the paper's learning rate
    "none": {"reparam": "none"},
    # residual with the decoder settings the README recommends
    "residual": {"reparam": "residual", "branch_scale": "embedding", "lr_network": 0.03},
    # residual with the paper's settings (network at the prompt's lr 0.3, branch added unscaled)
    "residual_paper": {"reparam": "residual"},
}


def run_benchmark(copa_dir: Path, work: Path, seeds=(1, 2, 3), methods=("none", "residual"), steps: int = 40,
                  max_train: int = 400, max_val: int = 50, model: str = "smollm2", on_run=None) -> dict:
    """Trains each (method, seed); returns {"settings": ..., "runs": [...]} with step-0 and best scores.

    ``on_run(result_so_far)`` is called after each run (the command line writes partial results)."""
    from ..prompt.config import ResidualPromptConfig
    from ..training.runconfig import TrainConfig
    from ..training.trainer import train

    files = write_copa_files(copa_dir, work / "data", max_train, max_val)
    settings = {"model": model, "train_examples": max_train, "val_examples": max_val, "steps": steps,
                "batch_size": 8, "lr": 0.3, "prompt_length": 10, "template": COPA_TEMPLATE, "max_new_tokens": 24,
                "stop": "\n", "selection": "validation target log-likelihood (--eval-proxy), evaluated every "
                f"{max(1, steps // 2)} steps", "methods": METHODS}
    runs = []
    for seed in seeds:
        for method in methods:
            extra = dict(METHODS[method])
            lr_network = extra.pop("lr_network", None)
            cfg = TrainConfig(model=model, task="custom", train_file=str(files["train"]), eval_file=str(files["val"]),
                              target_field="target", template=COPA_TEMPLATE, max_steps=steps, eval_every=max(1, steps // 2),
                              batch_size=8, eval_batch_size=25, lr=0.3, lr_network=lr_network, seed=seed,
                              max_length=160, max_new_tokens=24, stop="\n", eval_at_start=True, eval_proxy=True,
                              progress=False, overwrite=True, output_dir=str(work / f"{method}-{seed}"))
            started = time.perf_counter()
            res = train(cfg, ResidualPromptConfig(num_tokens=10, bottleneck=400, **extra))
            runs.append({"method": method, "seed": seed, "initial": res["initial"], "best": res["best"],
                         "best_step": res["best_step"], "wall_s": round(time.perf_counter() - started, 1)})
            if on_run is not None:
                on_run({"settings": settings, "runs": runs, "summary": summarise(runs)})
    return {"settings": settings, "runs": runs, "summary": summarise(runs)}


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of exact match and token F1 (in points), step 0 and best."""
    from statistics import fmean, pstdev

    out = {}
    for method in sorted({r["method"] for r in runs}):
        rows = [r for r in runs if r["method"] == method]
        out[method] = {"seeds": len(rows)}
        for when in ("initial", "best"):
            for metric in ("exact_match", "f1"):
                vals = [100 * r[when][metric] for r in rows]
                out[method][f"{when}_{metric}"] = [round(fmean(vals), 1), round(pstdev(vals), 1)]
    return out
