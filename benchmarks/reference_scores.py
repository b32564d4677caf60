"""Reference scores a trained model must beat: constant predictions on the grid's validation sets.

With 32 training examples and validation sets of 56-277 examples, a prompt method that learned
nothing but the label prior lands on one of these numbers. For each task this prints, with the
task's own metric (CB: mean of accuracy and macro F1, MultiRC: mean of F1a and exact match, others:
accuracy):

- majority: the best constant prediction on the validation set (an upper bound for "learned
  nothing"),
- train prior: the constant prediction a model would make from the FewGLUE training labels alone
  (their most frequent label).

The validation subsets are those of ``benchmarks/grids/small.yaml`` (BoolQ: the first 100
questions, MultiRC: the first 4 paragraphs).

    python benchmarks/reference_scores.py [--json benchmarks/results/reference_scores.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from resprompt.tasks.data import load_records
from resprompt.tasks.superglue import get_task

TASKS = {"CB": None, "COPA": None, "RTE": None, "WiC": None, "WSC": None, "BoolQ": 100, "MultiRC": 4}


def constant_scores(name: str, max_records: int | None) -> dict:
    """{majority, majority_label, train_prior, train_prior_label, n} in points for one task.

    Scored on the decoder-family instances: one instance per example and label (COPA: the answer
    index), which is what the label metrics are defined on.
    """
    task = get_task(name)
    val, _ = load_records(task, "val")
    val = val[:max_records] if max_records else val
    train, _ = load_records(task, "train", fewglue_dir=_fewglue_dir())
    inst = task.instances(val, "decoder", f"{name}/val")
    k = max(task.num_labels, 2)
    scores = {c: 100 * task.evaluate(inst, [c] * len(inst), "decoder")["score"] for c in range(k)}
    best = max(scores, key=scores.get)
    train_inst = task.instances(train, "decoder", f"{name}/train")
    prior = Counter(i.label for i in train_inst).most_common(1)[0][0]
    n = task.evaluate(inst, [best] * len(inst), "decoder")["n"]
    return {"majority": round(scores[best], 1), "majority_label": best, "train_prior": round(scores[prior], 1),
            "train_prior_label": prior, "n": int(n)}


def _fewglue_dir():
    from resprompt.tasks.data import DEFAULT_FEWGLUE_DIR

    return DEFAULT_FEWGLUE_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args()
    out = {name: constant_scores(name, cap) for name, cap in TASKS.items()}
    print("| task | validation n | majority (best constant) | train prior (FewGLUE's most frequent label) |")
    print("|---|---|---|---|")
    for name, r in out.items():
        print(f"| {name} | {r['n']} | {r['majority']:.1f} (class {r['majority_label']}) | "
              f"{r['train_prior']:.1f} (class {r['train_prior_label']}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
