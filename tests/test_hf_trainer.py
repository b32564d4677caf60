"""ResidualPromptModel under transformers.Trainer (``ResidualPromptTrainer``): what trains, what is saved, resuming.

Stock ``Trainer`` writes the whole state_dict of a model that is not a ``PreTrainedModel`` and crashes on
GPT-2's tied embeddings at the first checkpoint; these tests use the subclass, which saves the prompt only.
"""

from pathlib import Path

import torch
import transformers
from safetensors import safe_open

from conftest import tiny_bert, tiny_gpt2
from resprompt import ResidualPromptConfig, ResidualPromptModel
from resprompt.model import optimizer_param_groups
from resprompt.training.hf_trainer import TRAINABLE_DIR, ResidualPromptTrainer

LRS = {"prompt": 0.3, "network": 0.1, "head": 0.05}
STEPS = 20


class Rows(torch.utils.data.Dataset):
    """Token-id rows starting with id 1 (BOS / CLS), 3-8 more ids in 3..19; ``label``: is the second id < 11."""

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.rows = [[1] + torch.randint(3, 20, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
                     for _ in range(n)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i], "label": int(self.rows[i][1] < 11)}


def causal_collate(items: list[dict]) -> dict:
    """Right padding with 0; labels = input_ids, -100 on padding."""
    t = max(len(x["input_ids"]) for x in items)
    ids = torch.zeros(len(items), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(items):
        ids[i, : len(x["input_ids"])] = torch.tensor(x["input_ids"])
        mask[i, : len(x["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def class_collate(items: list[dict]) -> dict:
    out = causal_collate(items)
    out["labels"] = torch.tensor([x["label"] for x in items])
    return out


def _wrap(backbone) -> ResidualPromptModel:
    cfg = ResidualPromptConfig(num_tokens=4, reparam="residual", bottleneck=8, init_seed=0)
    torch.manual_seed(1)
    return ResidualPromptModel(backbone, cfg)


def _args(out: Path, steps: int = STEPS, **kw) -> transformers.TrainingArguments:
    settings = {"per_device_train_batch_size": 8, "lr_scheduler_type": "constant", "logging_steps": 1,
                "save_strategy": "steps", "save_steps": 10, "report_to": [], "use_cpu": True, "seed": 0,
                "disable_tqdm": True, **kw}
    return transformers.TrainingArguments(output_dir=str(out), max_steps=steps, **settings)


def _trainer(model, out: Path, collate, steps: int = STEPS, **kw) -> ResidualPromptTrainer:
    opt = torch.optim.AdamW(optimizer_param_groups(model, lr=LRS["prompt"], lr_network=LRS["network"],
                                                   lr_head=LRS["head"]))
    return ResidualPromptTrainer(model=model, args=_args(out, steps, **kw), train_dataset=Rows(),
                                 eval_dataset=Rows(), data_collator=collate, optimizers=(opt, None))


def _trainable(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.trainable_parameters().items()}


def _losses(trainer) -> list[float]:
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


def _safetensors_keys(folder: Path) -> dict[str, list[str]]:
    keys = {}
    for f in folder.rglob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            keys[str(f.relative_to(folder))] = list(st.keys())
    return keys


def _check_prompt_only(folder: Path, backbone_bytes: int) -> None:
    """A folder ResidualPromptTrainer wrote: the prompt (and its head), never a backbone tensor."""
    assert (folder / "prompt.safetensors").is_file() and (folder / "resprompt_config.json").is_file()
    assert (folder / TRAINABLE_DIR / "trainable.safetensors").is_file()
    assert not (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    for name, keys in _safetensors_keys(folder).items():
        assert all(k == "prompt" or k.startswith(("head.", "prompt_encoder.")) for k in keys), (name, keys)
    weights = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    everything = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())  # optimizer, RNG state, args
    assert weights < backbone_bytes / 10 and everything < backbone_bytes / 2, (folder, weights, everything)


def _bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def test_decoder_trains_saves_and_resumes_under_trainer(tmp_path):
    model = _wrap(tiny_gpt2())
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable_before = _trainable(model)
    trainer = _trainer(model, tmp_path / "out", causal_collate)

    eval_before = trainer.evaluate()["eval_loss"]  # the training rows, without dropout
    trainer.train()

    # the parameter groups' lrs reached the optimizer, which holds the trainable parameters only
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {"prompt": LRS["prompt"], "network": LRS["network"]}
    in_opt = {id(p) for g in groups.values() for p in g["params"]}
    assert in_opt == {id(p) for p in model.trainable_parameters().values()}
    assert trainer.model_accepts_loss_kwargs is False  # Trainer divides by the accumulation steps itself

    losses = _losses(trainer)  # a random tiny GPT-2 gives a prompt little leverage: the loss falls slowly
    assert len(losses) == STEPS and sum(losses[-3:]) < sum(losses[:3]), losses
    assert trainer.evaluate()["eval_loss"] < eval_before - 0.03
    after = _trainable(model)
    assert set(after) == set(trainable_before) and all(k.startswith("prompt_encoder.") for k in after)
    assert all(not torch.equal(after[k], trainable_before[k]) for k in after), "every trainable tensor moves"
    backbone_after = model.backbone.state_dict()
    assert all(torch.equal(backbone_after[k], v) for k, v in backbone_before.items()), "backbone bit-identical"

    # save_model writes the folded prompt, loadable onto a fresh backbone
    final = tmp_path / "final"
    trainer.save_model(str(final))
    _check_prompt_only(final, _bytes(model.backbone))
    loaded = ResidualPromptModel.from_pretrained(tiny_gpt2(), final)
    ids = causal_collate([Rows()[i] for i in range(4)])["input_ids"]
    model.eval()
    with torch.no_grad():
        ref = model(ids).logits
        assert (loaded(ids).logits - ref).abs().max() <= 1e-6
        assert torch.equal(loaded.prompt(), model.fold())

    # every checkpoint Trainer wrote holds the prompt only, and the last one is the trained prompt
    ckpts = sorted((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in ckpts] == ["checkpoint-10", "checkpoint-20"]
    for ckpt in ckpts:
        _check_prompt_only(ckpt, _bytes(model.backbone))
    with torch.no_grad():
        assert (ResidualPromptModel.from_pretrained(tiny_gpt2(), ckpts[-1])(ids).logits - ref).abs().max() <= 1e-6

    # resuming from checkpoint-10 ends where the uninterrupted run ended (trainable state + RNG + data order)
    resumed = _wrap(tiny_gpt2())
    trainer2 = _trainer(resumed, tmp_path / "out2", causal_collate)
    trainer2.train(resume_from_checkpoint=str(ckpts[0]))
    assert trainer2.state.global_step == STEPS
    again = _trainable(resumed)
    assert all(torch.allclose(again[k], after[k], atol=1e-6, rtol=0) for k in after)


def test_encoder_classifier_head_trains_and_is_saved_with_the_prompt(tmp_path):
    model = _wrap(tiny_bert(num_labels=2))
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head_state().items()}
    # greater_is_better=True makes the earlier, worse checkpoint the "best": loading it at the end is visible
    trainer = _trainer(model, tmp_path / "out", class_collate, eval_strategy="steps", eval_steps=10,
                       load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True)
    trainer.train()

    assert {g["name"]: g["lr"] for g in trainer.optimizer.param_groups} == LRS
    losses = [r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert all(not torch.equal(v, head_before[k]) for k, v in model.head_state().items()), "the head trains"
    backbone_after = model.backbone.state_dict()
    assert all(torch.equal(backbone_after[k], v) for k, v in backbone_before.items()), "backbone bit-identical"

    # load_best_model_at_end read checkpoint-10's trainable state back
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name == "checkpoint-10"
    with safe_open(str(best / TRAINABLE_DIR / "trainable.safetensors"), "pt") as st:
        saved = {k: st.get_tensor(k) for k in st.keys()}
    own = model.state_dict()
    assert set(saved) == {k for k in own if k.startswith(("prompt_encoder.", "head."))}
    assert all(torch.equal(saved[k], own[k]) for k in saved)

    final = tmp_path / "final"
    trainer.save_model(str(final))
    _check_prompt_only(final, _bytes(model.backbone))
    assert {k for k in _safetensors_keys(final)["prompt.safetensors"] if k.startswith("head.")} == {
        "head.classifier.weight", "head.classifier.bias"}
    loaded = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), final)
    ids = class_collate([Rows()[i] for i in range(4)])["input_ids"]
    model.eval()
    with torch.no_grad():
        assert (loaded(ids).logits - model(ids).logits).abs().max() <= 1e-6


def test_a_folded_prompt_trains_its_head_and_loads_the_best_one_at_the_end(tmp_path):
    """Before: load_best_model_at_end looked for trainable/, which a folded model's checkpoints lack, and
    train() raised after its last step."""
    _wrap(tiny_bert(num_labels=2)).save_pretrained(tmp_path / "prompt")
    model = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), tmp_path / "prompt").train()
    trainer = _trainer(model, tmp_path / "out", class_collate, eval_strategy="steps", eval_steps=10,
                       load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True)
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.name == "checkpoint-10"  # the earlier, worse one: loading it is visible
    saved = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), best).head_state()
    last = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), tmp_path / "out" / "checkpoint-20").head_state()
    assert all(torch.equal(v, saved[k]) for k, v in model.head_state().items())
    assert any(not torch.equal(v, last[k]) for k, v in model.head_state().items())


def test_optimizer_param_groups_defaults():
    model = _wrap(tiny_bert(num_labels=2))
    groups = optimizer_param_groups(model, lr=0.3, weight_decay=0.01, weight_decay_head=0.0)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("prompt", 0.3, 0.01), ("network", 0.3, 0.01), ("head", 0.3, 0.0)]
    assert sum(len(g["params"]) for g in groups) == len(model.trainable_parameters())
    folded = ResidualPromptModel(tiny_gpt2(), ResidualPromptConfig(num_tokens=4),
                                 _folded=torch.zeros(4, 32))
    assert optimizer_param_groups(folded, lr=0.1) == []  # empty groups are left out

