"""Shared by the serving benchmarks: untrained folded prompts with their own heads, and short texts.

``make_prompts`` writes random-initialised residual prompts (folded, nothing trained) on one backbone
into ``folder``, one per prompt length given, each a custom text-classification task with its own
label count (2, 3, ...) and its own random head, named ``p0``, ``p1``, ... Run as a script, it writes
them for a model name (``serve_load.py`` does so in a subprocess, so that its client never loads
torch). torch and resprompt are imported only where needed.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the match was great and the band played a new song while we ate pasta near the station before "
         "our flight to the coast where the hotel served rice and bread").split()


def make_prompts(backbone, tokenizer, folder: Path, lengths: list[int], seed: int = 0) -> list[str]:
    """One prompt folder per entry of ``lengths`` (its prompt length n); returns the names."""
    import torch

    from resprompt import ResidualPromptConfig, ResidualPromptModel
    from resprompt.tasks.superglue import user_task

    names = []
    for i, n in enumerate(lengths):
        task = user_task(f"topic{i}", [f"label{j}" for j in range(2 + i)], ["text"], "label")
        torch.manual_seed(seed + i)
        model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=n), tokenizer, task=task.metadata())
        d = model.hidden_size
        model.load_head_state({"classifier.weight": torch.randn(task.num_labels, d) * 0.1,
                               "classifier.bias": torch.zeros(task.num_labels)})
        model.save_pretrained(folder / f"p{i}")
        names.append(f"p{i}")
    return names


def texts(k: int, seed: int = 0, words: tuple[int, int] = (8, 24)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(*words))) for _ in range(k)]


def main() -> int:
    """``python benchmarks/serving_setup.py OUT [--model M] [--lengths 4,6,...]``: writes the prompts."""
    import argparse
    import json
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    from resprompt.backbones import load_backbone

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--lengths", default="4,6,8,10,12,14,16,18")
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    backbone, tok, _ = load_backbone(args.model)
    names = make_prompts(backbone, tok, Path(args.out), [int(x) for x in args.lengths.split(",")])
    print(json.dumps(names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
