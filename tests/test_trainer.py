"""The trainer on tiny random backbones with real CB data: outputs, determinism, resume, families."""

import json
import re

import pytest
import torch

import resprompt.training.trainer as trainer_mod
from resprompt.io import read_safetensors
from resprompt.prompt.config import ResidualPromptConfig
from resprompt.training.runconfig import ConfigError, TrainConfig


def _cfg(model_dir, out, data_root, **kw):
    base = dict(model=model_dir, task="CB", data_dir=str(data_root / "superglue"), output_dir=str(out),
                max_train_examples=24, max_eval_examples=12, batch_size=4, epochs=2, progress=False, seed=7,
                eval_batch_size=8, max_length=64, lr_head=0.01)
    base.update(kw)
    return TrainConfig(**base)


PROMPT = ResidualPromptConfig(num_tokens=3, bottleneck=8, dropout=0.1)


def test_run_folder_contents(tiny_model_dirs, data_root, tmp_path):
    res = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root), PROMPT)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"best", "checkpoint", "config.json", "metrics.jsonl", "results.json"}
    assert json.loads((out / "results.json").read_text()) == res
    assert res["steps"] == 12 and res["epochs_completed"] == 2 and res["best_step"] in (6, 12)
    assert set(res["best"]) >= {"accuracy", "f1_macro", "score"}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    b = [x for x in lines if x["type"] == "eval" and x["best"]][-1]
    assert res["best_step"] == b["step"] and res["best"] == {k: b[k] for k in res["best"]}
    assert [x["step"] for x in lines if x["type"] == "train"] == list(range(1, 13))
    assert [x["step"] for x in lines if x["type"] == "eval"] == [6, 12]
    assert read_safetensors(out / "best" / "prompt.safetensors")["prompt"].shape == (3, 32)


def test_same_seed_same_numbers(tiny_model_dirs, data_root, tmp_path):
    a = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "a", data_root, max_steps=5), PROMPT)
    b = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "b", data_root, max_steps=5), PROMPT)
    la = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert la == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a["final"] == b["final"]


def test_resume_after_kill_matches_uninterrupted(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    kw = dict(epochs=3, checkpoint_every=2)
    full = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "full", data_root, **kw), PROMPT)

    def kill(step):
        if step == 9:  # mid-epoch 2 (6 steps/epoch), one step after the checkpoint at step 8
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root, **kw), PROMPT)
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)
    resumed = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root, resume=True, **kw),
                                PROMPT)
    assert resumed["final"] == full["final"] and resumed["best"] == full["best"]
    assert resumed["best_step"] == full["best_step"] and resumed["steps"] == full["steps"] == 18
    for name in ("best/prompt.safetensors",):
        a, b = read_safetensors(tmp_path / "full" / name), read_safetensors(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "train"]
    assert steps == list(range(1, 19))


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_generative_families_train_and_evaluate(tiny_model_dirs, data_root, tmp_path, kind):
    res = trainer_mod.train(_cfg(tiny_model_dirs[kind], tmp_path / kind, data_root, max_steps=3, eval_every=3,
                                 lr=0.03), PROMPT)
    assert res["family"] == {"t5": "seq2seq", "llama": "decoder"}[kind]
    ev = [json.loads(x) for x in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
    ev = [x for x in ev if x["type"] == "eval"]
    assert res["final"] == {k: ev[-1][k] for k in res["final"]} and res["final"]["n"] == 12


def test_loss_goes_down_with_grad_accum(tiny_model_dirs, data_root, tmp_path):
    trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "acc", data_root, epochs=4, grad_accum=2,
                           schedule="constant", lr=0.05), PROMPT)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "train"]
    assert len(losses) == 12  # 6 micro-batches per epoch, accumulated by 2, over 4 epochs
    assert sum(losses[-3:]) < sum(losses[:3])


def test_existing_output_refused_without_resume_or_overwrite(tiny_model_dirs, data_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"output-dir {out} is not empty: pass --resume to continue it "
                                                    "or --overwrite to replace it")):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root), PROMPT)
    with pytest.raises(ConfigError, match=re.escape(f"--resume: no checkpoint in {tmp_path / 'new'}")):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "new", data_root, resume=True), PROMPT)


def test_optimizer_groups_and_schedule(tiny_model_dirs):
    from resprompt.backbones import load_backbone
    from resprompt.model import ResidualPromptModel

    bb, tok, _ = load_backbone(tiny_model_dirs["bert"], num_labels=3)
    m = ResidualPromptModel(bb, PROMPT, tok)
    cfg = TrainConfig(lr=0.3, lr_network=0.1, lr_head=0.01, weight_decay_head=0.5, warmup_steps=2, epochs=1)
    opt = trainer_mod.make_optimizer(m, cfg)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        ("prompt", 0.3, 1e-5), ("network", 0.1, 1e-5), ("head", 0.01, 0.5)]
    sched = trainer_mod.make_scheduler(opt, cfg, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(round(opt.param_groups[0]["lr"], 6))
        opt.step()
        sched.step()
    assert lrs == [0.15, 0.3, 0.3, 0.225, 0.15, 0.075]


def test_early_stopping_on_no_improvement(tiny_model_dirs, data_root, tmp_path):
    # learning rates so small that the score cannot move: the second evaluation is no better
    res = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "es", data_root, eval_every=1, patience=1,
                                 lr=1e-12, lr_head=1e-12), PROMPT)
    assert res["stopped_early"] is True and res["steps"] == 2 and res["best_step"] == 1


def test_bf16_mixed_precision_runs_on_cpu(tiny_model_dirs, data_root, tmp_path):
    res = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "bf16", data_root, max_steps=2,
                                 mixed_precision="bf16"), PROMPT)
    assert res["steps"] == 2 and res["final"]["n"] == 12


def test_unknown_task_is_a_config_error_naming_the_value():
    with pytest.raises(ConfigError, match=r"unknown task 'CBX'; known tasks: .*CB.*, or custom"):
        TrainConfig(task="CBX")
    assert TrainConfig(task="rte").task == "rte" and TrainConfig(task="custom").task == "custom"


def test_eval_at_start_records_step_0_and_changes_nothing_else(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    kw = dict(epochs=3, checkpoint_every=2)
    plain = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "plain", data_root, **kw), PROMPT)
    with0 = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "with0", data_root, eval_at_start=True, **kw),
                              PROMPT)
    assert plain["initial"] is None and set(with0["initial"]) >= {"accuracy", "f1_macro", "score"}
    # the step-0 evaluation draws no random numbers and is never the kept prompt
    for key in ("best", "best_step", "final", "steps"):
        assert with0[key] == plain[key]
    evals = [json.loads(x) for x in (tmp_path / "with0" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in evals if x["type"] == "eval"]
    assert [x["step"] for x in evals] == [0, 6, 12, 18]
    assert with0["initial"] == {k: evals[0][k] for k in with0["initial"]}
    assert evals[0]["initial"] is True and evals[0]["best"] is False and evals[0]["score"] == with0["initial"]["score"]
    assert evals[1]["best"] is True  # the first trained evaluation is best even if it scores below step 0

    # a resumed run keeps the step-0 scores and does not evaluate step 0 again
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: (_ for _ in ()).throw(KeyboardInterrupt)
                        if step == 9 else None)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root, eval_at_start=True, **kw), PROMPT)
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)
    resumed = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root, eval_at_start=True,
                                     resume=True, **kw), PROMPT)
    assert resumed["initial"] == with0["initial"] and resumed["final"] == with0["final"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "eval"]
    assert steps.count(0) == 1


@pytest.mark.parametrize("name", ["eval_at_start", "overwrite", "pad_to_max_length"])
def test_bool_fields_reject_non_bools(name):
    with pytest.raises(ConfigError, match=rf"{name.replace('_', '-')}='maybe' is invalid: expected true or false"):
        TrainConfig(**{name: "maybe"})
    assert getattr(TrainConfig(**{name: True}), name) is True


def test_each_evaluation_logs_the_norm_of_the_prompt_the_backbone_sees(tiny_model_dirs, data_root, tmp_path):
    from safetensors.torch import load_file

    trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "n", data_root, eval_at_start=True, epochs=2), PROMPT)
    evals = [json.loads(x) for x in (tmp_path / "n" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in evals if x["type"] == "eval"]
    norms = [x["prompt_norm"] for x in evals]
    assert len(norms) == 3 and min(norms) > 0 and len(set(norms)) == 3  # step 0, then a moving prompt
    kept = load_file(str(tmp_path / "n" / "best" / "prompt.safetensors"))["prompt"]  # folded P' [n, d]
    assert [x for x in evals if x["best"]][-1]["prompt_norm"] == round(float(kept.norm(dim=-1).mean()), 4)


def test_logged_loss_is_the_mean_over_accumulated_micro_batches(tiny_model_dirs, data_root, tmp_path):
    """Before: with --grad-accum the logged loss was the last micro-batch's only."""
    seen = []

    def build(backbone, prompt_cfg, tokenizer, family):
        model = trainer_mod.ResidualPromptModel(backbone, prompt_cfg, tokenizer=tokenizer, family=family)
        forward = model.forward

        def recording(*a, **k):
            out = forward(*a, **k)
            if out.loss is not None:  # training batches (evaluation passes no labels)
                seen.append(out.loss.item())
            return out

        model.forward = recording
        return model

    trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "acc", data_root, max_steps=3, grad_accum=3,
                           eval_every=100), PROMPT, build_model=build)
    logged = [json.loads(x)["loss"] for x in (tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "train"]
    assert len(seen) == 9 and len(logged) == 3
    for step, value in enumerate(logged):
        assert value == pytest.approx(sum(seen[3 * step: 3 * step + 3]) / 3, rel=1e-6)
    assert logged[0] != pytest.approx(seen[2], rel=1e-6)


def test_report_to_tensorboard_through_accelerate(tiny_model_dirs, data_root, tmp_path):
    pytest.importorskip("tensorboard")
    trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "tb", data_root, max_steps=2, eval_every=2,
                           report_to="tensorboard"), PROMPT)
    events = list((tmp_path / "tb" / "resprompt").glob("events.out.tfevents.*"))  # (hparams go in a subfolder)
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"train/loss", "eval/accuracy", "eval/score"} <= set(acc.Tags()["scalars"])
    logged = [json.loads(x) for x in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([x["loss"] for x in logged
                                                                          if x["type"] == "train"])


def test_report_to_is_validated():
    with pytest.raises(ConfigError, match=r"report-to='tensorbored' is invalid: tensorbored unknown"):
        TrainConfig(report_to="tensorbored")
    assert TrainConfig(report_to="none").trackers() == []
    assert TrainConfig(report_to="tensorboard, mlflow").trackers() == ["tensorboard", "mlflow"]



def test_the_logged_lr_is_the_one_the_step_used(tiny_model_dirs, data_root, tmp_path):
    """Before: the lr was read after scheduler.step(): each step logged the next one's (warmup looked skipped)."""
    cfg = _cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root, max_steps=5, warmup_steps=2, lr=1.0,
               eval_every=5)
    trainer_mod.train(cfg, PROMPT)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [round(x["lr"], 4) for x in lines if x.get("type") == "train"]
    assert lrs == [0.5, 1.0, 1.0, 0.6667, 0.3333]  # linear warmup over 2 steps, then linear decay to 0


def test_overwrite_refuses_the_current_folder_and_resume_a_foreign_one(tiny_model_dirs, data_root, tmp_path,
                                                                      monkeypatch):
    """Before: --output-dir . --overwrite from inside a run emptied it, then failed; --resume on a folder that
    is no run renamed and deleted its hidden files before refusing."""
    trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root, max_steps=2), PROMPT)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--overwrite: output-dir \. is the current folder or holds it"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], ".", data_root, max_steps=2, overwrite=True), PROMPT)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    (mine / ".notes.txt.tmp-backup").write_text("y")
    (mine / ".checkpoint.old-1").mkdir()
    with pytest.raises(ConfigError, match=r"--resume: .*mine is not a resprompt run folder"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], mine, data_root, resume=True), PROMPT)
    assert sorted(p.name for p in mine.iterdir()) == [".checkpoint.old-1", ".notes.txt.tmp-backup", "notes.txt"]


def test_settings_that_would_be_ignored_or_are_spelled_as_flags(tmp_path):
    from resprompt.training.runconfig import split_settings

    with pytest.raises(ConfigError, match="--resume continues the run in output-dir and --overwrite replaces it"):
        TrainConfig(resume=True, overwrite=True)
    with pytest.raises(ConfigError, match=r"lr-network=0\.001 is invalid: method 'none' has no network"):
        split_settings({"method": "none", "lr_network": 0.001})
    # YAML 'none' for an optional number reads as the flags read it (it was refused as text)
    train, _ = split_settings({"max_grad_norm": "none", "patience": "None", "lr_network": "none"})
    assert train.max_grad_norm is None and train.patience is None and train.lr_network is None



def test_an_unlabelled_evaluation_split_is_refused_before_the_run_folder(tiny_model_dirs, data_root, tmp_path):
    """Before: it trained a whole epoch (after --overwrite had deleted the old run), then failed at the first
    evaluation, leaving a run folder without checkpoint or best/."""
    from resprompt.tasks.records import DataError

    with pytest.raises(DataError, match=r"test.jsonl: no gold labels \(a test split\?\)"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root, eval_split="test"), PROMPT)
    assert not (tmp_path / "run").exists()
