"""Faults and bad input: exact resume, folder swaps cut by a kill, divergence, refused values and files,
disk full, one run per folder."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import resprompt.training.trainer as trainer_mod
from resprompt.io import COMPLETE, DiskFullError, atomic_dir, recover_dir, write_json
from resprompt.prompt.config import ResidualPromptConfig
from resprompt.training.runconfig import ConfigError, TrainConfig
from resprompt.training.runfolder import RunLock

PROMPT = ResidualPromptConfig(num_tokens=3, bottleneck=8, dropout=0.1)


def _cfg(model_dir, out, data_root, **kw):
    base = dict(model=model_dir, task="CB", data_dir=str(data_root / "superglue"), output_dir=str(out),
                max_train_examples=24, max_eval_examples=12, batch_size=4, epochs=3, progress=False, seed=7,
                eval_batch_size=8, max_length=64, lr_head=0.01, checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def _train_losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["type"] == "train"]


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


# ---------------------------------------------------------------------------------------- resume
def test_resume_reproduces_every_loss_bit_for_bit(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """With backbone dropout (0.1) on: the losses at every step, best/ and the final trainable state.

    Before: the trajectory parted at the first step after a resume (the DataLoader iterator took a
    draw from torch's global generator)."""
    full = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "full", data_root), PROMPT)

    def kill(step):
        if step == 9:  # mid-epoch 2 (6 steps an epoch), one step after the checkpoint at step 8
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root), PROMPT)
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)
    resumed = trainer_mod.train(_cfg(tiny_model_dirs["bert"], tmp_path / "cut", data_root, resume=True), PROMPT)
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")
    assert len(_train_losses(tmp_path / "full")) == 18
    assert resumed["best"] == full["best"] and resumed["final"] == full["final"]
    for name in ("best/prompt.safetensors", "checkpoint/model/trainable.safetensors"):
        a, b = _tensors(tmp_path / "full" / name), _tensors(tmp_path / "cut" / name)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name


def test_recover_dir_after_a_kill_between_the_two_renames(tmp_path):
    """Before: a kill between the renames of a swap left no checkpoint/ at all, and --resume refused."""
    target = tmp_path / "checkpoint"
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("old")
    # the state a kill leaves at the swap: the old folder moved aside, the new one complete but unrenamed
    os.replace(target, tmp_path / ".checkpoint.old-123")
    new = tmp_path / ".checkpoint.tmp-abc"
    new.mkdir()
    (new / "a.json").write_text("new")
    (new / COMPLETE).touch()
    partial = tmp_path / ".checkpoint.tmp-def"  # an interrupted write: never promoted
    partial.mkdir()
    done = recover_dir(target)
    assert (target / "a.json").read_text() == "new" and not (target / COMPLETE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert done[0] == f"restored {target} from .checkpoint.tmp-abc" and len(done) == 3


def test_recover_dir_falls_back_to_the_previous_copy(tmp_path):
    target = tmp_path / "best"
    old = tmp_path / ".best.old-9"
    old.mkdir()
    (old / "p").write_text("previous")
    (tmp_path / ".best.tmp-x").mkdir()  # incomplete: no marker
    recover_dir(target)
    assert (target / "p").read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_atomic_dir_refuses_a_file_and_writes_through_a_link(tmp_path):
    """Before: a folder written onto an existing file replaced the user's file and left .name.old-PID; onto a
    link to a folder it replaced the link by a folder (the target kept the old content) and left the link."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes.txt exists and is not a folder"):
        with atomic_dir(tmp_path / "notes.txt") as tmp:
            (tmp / "a.json").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_dir(tmp_path / "link") as tmp:
        (tmp / "a.json").write_text("new")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == tmp_path / "real"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["a.json", "keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt", "real"]
    (tmp_path / "file-link").symlink_to(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"file-link exists and is not a folder"):
        with atomic_dir(tmp_path / "file-link"):
            pass
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_resume_after_a_real_kill_in_the_swap(tiny_model_dirs, data_root, tmp_path):
    """kill -9 (SIGKILL) exactly between the two renames of a checkpoint swap, then --resume."""
    args = [sys.executable, "-m", "resprompt.cli", "train", "--model", tiny_model_dirs["bert"], "--task", "CB",
            "--data-dir", str(data_root / "superglue"), "--max-train-examples", "16", "--max-eval-examples", "8",
            "--batch-size", "4", "--max-steps", "6", "--eval-every", "3", "--checkpoint-every", "2",
            "--prompt-length", "3", "--bottleneck", "8", "--max-length", "48", "--no-progress"]
    env = {**os.environ, "RESPROMPT_FAULT": "swap:3"}  # best/ at step 3 is swap 3 (checkpoint 2, best, ...)
    r = subprocess.run(args + ["--output-dir", str(tmp_path / "cut")], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL
    left = sorted(p.name for p in (tmp_path / "cut").iterdir())
    assert any(n.startswith((".checkpoint.", ".best.")) for n in left), left
    r = subprocess.run(args + ["--output-dir", str(tmp_path / "cut"), "--resume"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [p.name for p in (tmp_path / "cut").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    r = subprocess.run(args + ["--output-dir", str(tmp_path / "full")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")
    a, b = _tensors(tmp_path / "full/best/prompt.safetensors"), _tensors(tmp_path / "cut/best/prompt.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ divergence
def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_state(tiny_model_dirs, data_root, tmp_path):
    """Before: with --lr 1e6 the loss turned NaN, training went on, best/ was an all-NaN prompt, rc 0."""
    calls = {"n": 0}

    def build(backbone, prompt_cfg, tokenizer, family):
        model = trainer_mod.ResidualPromptModel(backbone, prompt_cfg, tokenizer=tokenizer, family=family)
        forward = model.forward

        def poisoned(*a, **k):
            out = forward(*a, **k)
            if out.loss is not None:
                calls["n"] += 1
                if calls["n"] == 8:  # the 8th training batch: step 8
                    out.loss = out.loss * float("nan")
            return out

        model.forward = poisoned
        return model

    cfg = _cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root)
    with pytest.raises(trainer_mod.TrainingDiverged,
                       match=r"training diverged at step 8: loss nan; non-finite gradients in group\(s\) prompt, "
                             r"network, head \(learning rates: prompt 0\.\d+, network 0\.\d+, head 0\.\d+\)"):
        trainer_mod.train(cfg, PROMPT, build_model=build)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["progress"]["step"] == 6  # the last checkpoint before the NaN
    assert torch.isfinite(_tensors(tmp_path / "run" / "best" / "prompt.safetensors")["prompt"]).all()
    assert max(json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 7


def test_huge_learning_rate_is_caught_through_the_cli(tiny_model_dirs, data_root, tmp_path, capsys):
    from resprompt.cli import main

    code = main(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir",
                 str(data_root / "superglue"), "--output-dir", str(tmp_path / "r"), "--lr-head", "1e30",
                 "--max-steps", "6", "--batch-size", "4", "--prompt-length", "3", "--bottleneck", "8",
                 "--max-length", "48", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("resprompt: error:") == 1 and "Traceback" not in err
    assert "resprompt: error: training diverged at step " in err and "head 1e+30" in err


def test_eval_refuses_a_prompt_with_non_finite_values(tmp_path):
    from conftest import tiny_bert
    from resprompt import PromptFileError, ResidualPromptModel
    from resprompt.io import PROMPT_FILE

    m = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=8))
    m.save_pretrained(tmp_path / "p")
    t = _tensors(tmp_path / "p" / PROMPT_FILE)
    t["prompt"][1, 2] = float("nan")
    from safetensors.torch import save_file

    save_file(t, str(tmp_path / "p" / PROMPT_FILE))
    with pytest.raises(PromptFileError, match=r"p: the prompt holds non-finite values \(NaN or inf\)"):
        ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")


def test_a_nan_in_the_head_weights_is_refused_on_reading(tmp_path):
    """Before: only the prompt was checked; a NaN head weight loaded silently and gave NaN logits."""
    from safetensors.torch import save_file

    from conftest import tiny_bert
    from resprompt import PromptFileError, ResidualPromptModel
    from resprompt.io import PROMPT_FILE

    ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=8)).save_pretrained(tmp_path / "p")
    t = _tensors(tmp_path / "p" / PROMPT_FILE)
    t["head.classifier.weight"][0, 0] = float("inf")
    save_file(t, str(tmp_path / "p" / PROMPT_FILE))
    with pytest.raises(PromptFileError, match=r"p: head weight 'classifier.weight' holds non-finite values"):
        ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")


@pytest.mark.parametrize("fmt", ["resprompt", "peft"])
@pytest.mark.parametrize("where", ["prompt", "head"])
def test_non_finite_values_are_never_written(tmp_path, fmt, where):
    """Before: save_pretrained wrote a NaN prompt or head (a prompt that read_prompt then refuses)."""
    from conftest import tiny_bert
    from resprompt import ResidualPromptModel

    m = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=8, placement="prefix"))
    m.save_pretrained(tmp_path / "p", format=fmt)
    before = {f.name: f.read_bytes() for f in (tmp_path / "p").iterdir()}
    with torch.no_grad():
        (m.prompt_encoder.embedding if where == "prompt" else m.head.classifier.bias)[0] = float("nan")
    key = "the prompt" if where == "prompt" else "head weight 'classifier.bias'"
    with pytest.raises(ValueError, match=f"{key} holds non-finite values .*nothing written"):
        m.save_pretrained(tmp_path / "p", format=fmt)
    assert {f.name: f.read_bytes() for f in (tmp_path / "p").iterdir()} == before
    with pytest.raises(ValueError, match="nothing written"):
        m.save_pretrained(tmp_path / "new", format=fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


# --------------------------------------------------------------------------------- refused values
@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "nan", "lr=nan is invalid: expected a positive finite number"),
    ("--lr", "inf", "lr=inf is invalid: expected a positive finite number"),
    ("--lr-head", "-0.1", "lr-head=-0.1 is invalid: expected a positive finite number"),
    ("--weight-decay", "-1", "weight-decay=-1.0 is invalid: expected a non-negative finite number"),
    ("--max-grad-norm", "-1", "max-grad-norm=-1.0 is invalid: expected a positive finite number or none"),
    ("--warmup-steps", "-5", "warmup-steps=-5 is invalid: expected a whole number >= 0"),
    ("--seed", "-1", "seed=-1 is invalid: expected a whole number in [0, 2**32 - 1]"),
    ("--init-range", "nan", "ResidualPromptConfig.init_range=nan is invalid: expected a positive finite number"),
    ("--prompt-length", "200", "prompt-length=200 leaves no room for text: the backbone takes 128 positions"),
])
def test_impossible_values_are_refused(flag, value, message, tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: nan / inf / negative values trained; a prompt longer than the model ended in OverflowError."""
    from resprompt.cli import main

    out = tmp_path / "o"
    code = main(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir",
                 str(data_root / "superglue"), "--output-dir", str(out), "--max-steps", "1", "--no-progress",
                 flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"resprompt: error: {message}"]
    assert not out.exists()


# ----------------------------------------------------------------------------------- disk full
def test_disk_full_is_one_line_and_keeps_the_previous_copy(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import resprompt.formats as formats
    from conftest import tiny_bert
    from resprompt import ResidualPromptModel

    m = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=8))
    m.save_pretrained(tmp_path / "p")
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()}

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(formats, "save_file", full)
    with pytest.raises(DiskFullError, match=rf"^disk full while writing {tmp_path / 'p'} \(\d+\.\d MB free\); "
                                            "nothing was replaced"):
        m.save_pretrained(tmp_path / "p")
    assert {p.name: p.read_bytes() for p in (tmp_path / "p").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no half-written temporary folder


def test_disk_full_while_writing_json(tmp_path, monkeypatch):
    from pathlib import Path

    write_json(tmp_path / "r.json", {"a": 1})

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*r\.json .* the previous file was kept"):
        write_json(tmp_path / "r.json", {"a": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ------------------------------------------------------------------------------ one run per folder
def test_a_second_run_on_the_same_folder_is_refused(tiny_model_dirs, data_root, tmp_path):
    """Before: two runs on one --output-dir both ran to rc 0, interleaving metrics.jsonl."""
    out = tmp_path / "run"
    holder = RunLock(out).acquire()
    try:
        with pytest.raises(ConfigError, match=rf"output-dir {out} is in use by pid {os.getpid()} \(lock "):
            trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, max_steps=1), PROMPT)
        assert not out.exists()
    finally:
        holder.release()
    trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, max_steps=1), PROMPT)  # free again


def test_the_lock_dies_with_a_killed_process(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from resprompt.training.runfolder import RunLock; "
            f"lock = RunLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"is in use by pid {p.pid}"):
            RunLock(out).acquire()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        RunLock(out).acquire().release()
    finally:
        p.kill()
        p.wait(timeout=30)


# --------------------------------------------------------------------------------- files read right
def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    """Before: U+2028 / U+0085 inside a string (valid JSON) split the line: 'Unterminated string'."""
    from resprompt.tasks.data import read_jsonl

    p = tmp_path / "d.jsonl"
    p.write_text('{"t": "a\u2028b"}\n{"t": "c\u0085d\u2029e"}\r\n{"t": "f"}', encoding="utf-8")
    assert [(r["t"], r["__line__"]) for r in read_jsonl(p)] == [("a\u2028b", 1), ("c\u0085d\u2029e", 2), ("f", 3)]


def test_csv_long_fields_and_unterminated_quotes(tmp_path):
    """Before: a field over 131072 characters failed without a line number; an unterminated quote was
    reported as 'field missing (row too short)'."""
    from resprompt.tasks.data import DataError, read_csv

    p = tmp_path / "long.csv"
    p.write_text("text,label\nshort,a\n" + "x" * 200_000 + ",b\n")
    rows = read_csv(p)
    assert len(rows[1]["text"]) == 200_000 and rows[1]["label"] == "b" and rows[1]["__line__"] == 3
    q = tmp_path / "quote.csv"
    q.write_text('text,label\nfine,a\n"never closed,b\nmore,c\n')
    with pytest.raises(DataError, match=r"quote\.csv:3: a quoted field opened on line 3 is never closed"):
        read_csv(q)


def _custom(tmp_path, train_labels, eval_labels):
    train, evalf = tmp_path / "train.csv", tmp_path / "eval.csv"
    train.write_text("t,y\n" + "".join(f"row {i},{y}\n" for i, y in enumerate(train_labels)))
    evalf.write_text("t,y\n" + "".join(f"row {i},{y}\n" for i, y in enumerate(eval_labels)))
    return TrainConfig(task="custom", train_file=str(train), eval_file=str(evalf), text_fields="t", label_field="y")


@pytest.mark.parametrize("train_labels, eval_labels, message", [
    ("ab", "abz", r"eval\.csv:4: label 'z' not in \('a', 'b'\)"),
    ("ab", "cd", r"eval\.csv:2: label 'c' not in \('a', 'b'\)"),
])
def test_custom_eval_labels_outside_the_training_set_are_refused(tmp_path, train_labels, eval_labels, message):
    """Before: an eval label absent from the training file, or disjoint label sets, silently added classes."""
    from resprompt.tasks.data import DataError
    from resprompt.training import setup

    cfg = _custom(tmp_path, train_labels, eval_labels)
    task = setup.resolve_task(cfg)
    assert task.labels == tuple(train_labels)
    with pytest.raises(DataError, match=message):
        setup.load_split(cfg, task, "encoder", train=False)


def test_custom_empty_label_is_refused(tmp_path):
    from resprompt.tasks.data import DataError
    from resprompt.training import setup

    cfg = _custom(tmp_path, ["a", "", "b"], "ab")
    with pytest.raises(DataError, match=r"train\.csv:3: label field 'y' is empty"):
        setup.resolve_task(cfg)


def test_truncated_model_weights_are_one_clear_error(tiny_model_dirs, tmp_path):
    """Before: a truncated model.safetensors ended in a SafetensorError traceback."""
    import shutil

    from resprompt.backbones import BackboneError, load_backbone

    folder = tmp_path / "bert"
    shutil.copytree(tiny_model_dirs["bert"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(BackboneError, match=rf"backbone '{folder}': could not load the model "
                                            r"\(AutoModelForSequenceClassification\): "):
        load_backbone(str(folder), num_labels=3)


def test_prompt_files_that_do_not_add_up_are_refused(tmp_path):
    """Before: eval of a prompt whose config says another hidden size, or a classifier prompt
    without its head tensors, ran with rc 0."""
    from safetensors.torch import save_file

    from conftest import tiny_bert
    from resprompt import PromptFileError, ResidualPromptModel
    from resprompt.io import META_FILE, PROMPT_FILE

    m = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=8))
    m.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / META_FILE).read_text())
    (tmp_path / "p" / META_FILE).write_text(json.dumps({**meta, "hidden_size": 64}))
    with pytest.raises(PromptFileError, match=r"resprompt_config\.json: hidden_size=64 but the prompt tensor in "
                                              r"prompt\.safetensors has shape \(3, 32\)"):
        ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")
    (tmp_path / "p" / META_FILE).write_text(json.dumps(meta))
    t = _tensors(tmp_path / "p" / PROMPT_FILE)
    save_file({"prompt": t["prompt"]}, str(tmp_path / "p" / PROMPT_FILE))
    with pytest.raises(PromptFileError, match=r"prompt\.safetensors: no head weights, though resprompt_config\.json "
                                              r"says the prompt was trained with head 'classifier'"):
        ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")
    (tmp_path / "p" / META_FILE).write_text(json.dumps({**meta, "head": None}))
    with pytest.raises(PromptFileError, match=r"holds no head weights, but BertForSequenceClassification is a task "
                                              r"model whose head \(classifier\) the prompt must bring"):
        ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")


def test_a_nan_score_is_never_the_best(tiny_model_dirs, data_root, tmp_path):
    """A task whose evaluation gives NaN (a broken metric) never makes a prompt "best"."""
    from resprompt.training.setup import prepare_backbone, prepare_task

    cfg = _cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root, max_steps=4, eval_every=2)
    _, tok, fam, definition = prepare_backbone(cfg)
    task = prepare_task(cfg, definition, fam, tok, 48)
    scores = iter([float("nan"), 0.25])
    task.evaluate = lambda model, batch_size: {"score": next(scores, 0.25)}
    res = trainer_mod.train(cfg, PROMPT, task=task)
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "eval"]
    assert [(x["step"], x["best"]) for x in evals] == [(2, False), (4, True)]
    assert res["best_step"] == 4 and res["best"] == {"score": 0.25}


# ------------------------------------------------------------------ review fixes: settings and resume
def test_yaml_spellings_of_numbers_and_field_lists(tmp_path):
    """Before: YAML reads 1e-3 as text, so lr_head: 1e-3 was refused, and a YAML list of text fields
    was a traceback (AttributeError) in the CLI."""
    from resprompt.training.runconfig import load_yaml, split_settings

    p = tmp_path / "run.yaml"
    p.write_text("lr_head: 1e-3\nweight_decay: 1e-5\ndropout: 1e-1\ntask: custom\ntext_fields: [premise, hypothesis]\n")
    cfg, prompt = split_settings(load_yaml(str(p)))
    assert cfg.lr_head == 0.001 and cfg.weight_decay == 1e-5 and prompt.dropout == 0.1
    assert cfg.text_fields == "premise,hypothesis"
    for bad, message in (({"text_fields": 3}, "text-fields=3 is invalid: expected text"),
                         ({"model": ["a"]}, "model=['a'] is invalid: expected text"),
                         ({"lr": "nan"}, "lr=nan is invalid"), ({"lr": "fast"}, "lr='fast' is invalid")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            split_settings(bad)


def test_pad_to_max_length_pads_to_what_fits_beside_the_prompt(tiny_model_dirs, data_root, tmp_path):
    """Before: batches were padded to --max-length itself (128 here, the backbone's whole length), so
    the first step failed: 'input has 128 tokens but only 125 fit'."""
    cfg = _cfg(tiny_model_dirs["bert"], tmp_path / "run", data_root, max_length=128, pad_to_max_length=True,
               epochs=1, checkpoint_every=None)
    res = trainer_mod.train(cfg, PROMPT)
    assert res["best"]["score"] >= 0


def _cut_run(tiny_model_dirs, data_root, out, monkeypatch):
    def kill(step):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root), PROMPT)
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)


def test_resume_honours_allow_backbone_mismatch(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Before: the flag was accepted on --resume and ignored: the fingerprint error it names came back."""
    from resprompt.io import PromptFileError

    out = tmp_path / "run"
    _cut_run(tiny_model_dirs, data_root, out, monkeypatch)
    meta_path = out / "checkpoint" / "model" / "resprompt_config.json"
    meta = json.loads(meta_path.read_text())
    meta["embedding_fingerprint"] = "0" * len(str(meta["embedding_fingerprint"]))  # the weights changed since
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PromptFileError, match="embedding_fingerprint"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, resume=True), PROMPT)
    res = trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, resume=True,
                                 allow_backbone_mismatch=True), PROMPT)
    assert res["best"]["score"] >= 0


def test_resume_accepts_the_run_folder_under_another_spelling(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Before: 'settings differ: output_dir .../run -> .../run/' (a trailing slash, a relative path)."""
    out = tmp_path / "run"
    _cut_run(tiny_model_dirs, data_root, out, monkeypatch)
    monkeypatch.chdir(tmp_path)
    res = trainer_mod.train(_cfg(tiny_model_dirs["bert"], "run/", data_root, resume=True), PROMPT)
    assert res["best"]["score"] >= 0


def test_a_foreign_progress_record_is_one_clear_error(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Before: an unknown key in trainer_state.json's progress was a TypeError traceback."""
    from resprompt.io import PromptFileError

    out = tmp_path / "run"
    _cut_run(tiny_model_dirs, data_root, out, monkeypatch)
    state_path = out / "checkpoint" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["progress"]["future_field"] = 1
    state_path.write_text(json.dumps(state))
    with pytest.raises(PromptFileError, match="trainer_state.json: 'progress' is not a resprompt progress record"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, resume=True), PROMPT)


def test_fp16_overflow_in_scaled_gradients_is_not_a_divergence(tmp_path):
    """Before: under fp16 the check read the gradients still multiplied by the loss scale, so an overflow
    that GradScaler skips by design stopped the run as 'diverged'. The losses are still checked."""
    from types import SimpleNamespace

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([float("inf"), 1.0])
    run = SimpleNamespace(prog=SimpleNamespace(step=4), out=tmp_path,
                          optimizer=SimpleNamespace(param_groups=[{"name": "prompt", "params": [p], "lr": 0.3}]))
    with pytest.raises(trainer_mod.TrainingDiverged, match="step 5: .*non-finite gradients in group"):
        trainer_mod.check_finite(run, torch.tensor([0.7]))
    trainer_mod.check_finite(run, torch.tensor([0.7]), gradients=False)
    with pytest.raises(trainer_mod.TrainingDiverged, match="loss nan"):
        trainer_mod.check_finite(run, torch.tensor([float("nan")]), gradients=False)


@pytest.mark.parametrize("settings, message", [
    ({"metric": "f1"}, "--metric: settings of a generative task"),
    ({"eval_proxy": True}, "--eval-proxy: settings of a generative task"),
    ({"stop": "\\n"}, "--stop: settings of a generative task"),
    ({"warmup_steps": 50, "max_steps": 10}, "warmup-steps=50 is more than max-steps=10"),
])
def test_settings_a_classification_run_would_ignore_are_refused(settings, message):
    """Before: accepted, and then never read (or, for warmup, the learning rate peaked at a fifth of --lr)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(task="CB", **settings)


def test_warmup_longer_than_an_epoch_run_is_refused_before_the_folder(tiny_model_dirs, data_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"warmup-steps=100 is more than the run's 18 steps"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root, warmup_steps=100), PROMPT)
    assert not (out / "config.json").exists()


def test_a_batch_that_does_not_split_across_processes_is_refused_first(tiny_model_dirs, data_root, tmp_path,
                                                                        monkeypatch):
    """Before: Accelerate's split_batches failed inside the first step, after the run folder was made."""
    import accelerate

    monkeypatch.setattr(accelerate.Accelerator, "num_processes", property(lambda self: 3))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="batch-size=4 does not split evenly across 3 processes"):
        trainer_mod.train(_cfg(tiny_model_dirs["bert"], out, data_root), PROMPT)
    assert not (out / "config.json").exists()
