"""Prompt folders and records for the serving tests: our format and stock PEFT adapters on one backbone."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from resprompt.backbones import load_backbone
from resprompt.model import ResidualPromptModel
from resprompt.prompt.config import ResidualPromptConfig
from resprompt.serving.prompts import TASK_FILE
from resprompt.tasks.superglue import get_task, user_task

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "superglue"
TOPIC = user_task("topic", ["sport", "music", "food", "travel"], ["text"], "label")


def _perturb(module, seed: int, scale: float = 2.0) -> None:
    """Large random head weights and no bias, so that the labels vary between records and prompts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.0 if name.endswith("bias") else scale))


def make_ours(model_dir: str, folder: Path, task, n: int, pooling: str = "native", placement: str = "auto",
              seed: int = 0) -> Path:
    """A folded resprompt prompt with its own random head and the task's metadata."""
    backbone, tok, _ = load_backbone(model_dir, num_labels=task.num_labels)
    torch.manual_seed(seed)
    model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=n, pooling=pooling, placement=placement),
                                tok, task=task.metadata())
    _perturb(model.head, seed)
    model.save_pretrained(folder)
    return folder


def make_stock_peft(model_dir: str, folder: Path, task, n: int, seed: int = 0, task_type: str = "SEQ_CLS") -> Path:
    """A prompt-tuning adapter as a PEFT user makes it (get_peft_model + save_pretrained), with the task
    in the sidecar file (PEFT records none). ``task_type`` CAUSAL_LM: on a decoder's language model."""
    from peft import PromptTuningConfig, get_peft_model

    labels = {"num_labels": task.num_labels} if task_type == "SEQ_CLS" else {}
    backbone, _, _ = load_backbone(model_dir, **labels)
    pm = get_peft_model(backbone, PromptTuningConfig(task_type=task_type, num_virtual_tokens=n))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 2.0)
    pm.save_pretrained(str(folder))
    (folder / TASK_FILE).write_text(json.dumps(task.metadata()))
    return folder


def jsonl(task: str, split: str = "val") -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / task / f"{split}.jsonl").read_text().splitlines()]


def boolq_records(k: int = 6, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    words = "the river bank closed early while a small boat sold fish to the teacher".split()
    return [{"question": " ".join(rng.choices(words, k=rng.randint(3, 8))),
             "passage": " ".join(rng.choices(words, k=rng.randint(5, 60)))} for _ in range(k)]


def topic_records(k: int = 6, seed: int = 2, long_words: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = "goal guitar pasta train match song bread flight score drum rice hotel".split()
    out = [{"text": " ".join(rng.choices(words, k=rng.randint(2, 30)))} for _ in range(k)]
    if long_words:  # longer than the backbone takes: truncated as in training
        out.append({"text": " ".join(rng.choices(words, k=long_words))})
    return out


def standard_prompts(model_dir: str, root: Path) -> dict[str, tuple]:
    """Four prompts on one backbone: label counts 3 / 2 / 2 / 4, lengths n 3 / 5 / 4 / 2, readouts
    pooler / mean / PEFT's (pooler, prefix) / cls after a prefix prompt; name -> (task, records)."""
    root.mkdir(parents=True, exist_ok=True)
    make_ours(model_dir, root / "cb", get_task("CB"), n=3, seed=1)
    make_ours(model_dir, root / "rte", get_task("RTE"), n=5, pooling="mean", seed=2)
    make_stock_peft(model_dir, root / "peft-boolq", get_task("BoolQ"), n=4, seed=3)
    make_ours(model_dir, root / "topic", TOPIC, n=2, pooling="cls", placement="prefix", seed=4)
    return {"cb": (get_task("CB"), jsonl("CB")), "rte": (get_task("RTE"), jsonl("RTE")),
            "peft-boolq": (get_task("BoolQ"), boolq_records()), "topic": (TOPIC, topic_records(long_words=300))}
