"""The command line: train / eval / predict / export end to end on a tiny model, and every user error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resprompt.cli import main

FAST = ["--max-train-examples", "16", "--max-eval-examples", "8", "--batch-size", "4", "--max-steps", "2",
        "--prompt-length", "3", "--bottleneck", "8", "--max-length", "48", "--no-progress"]


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir",
                 str(data_root / "superglue"), "--output-dir", str(out), *FAST])
    assert code == 0
    return out


def test_train_eval_predict_export(trained, tiny_model_dirs, data_root, tmp_path, capsys):
    model = tiny_model_dirs["bert"]
    code, out, _ = _run(["eval", "--model", model, "--prompt", str(trained), "--task", "CB", "--data-dir",
                         str(data_root / "superglue")], capsys)
    assert code == 0
    metrics = json.loads(out)["metrics"]
    assert set(metrics) >= {"accuracy", "f1_macro", "score"} and metrics["n"] == 12
    preds = tmp_path / "preds.jsonl"
    code, out, _ = _run(["predict", "--model", model, "--prompt", str(trained), "--task", "CB", "--input",
                         str(data_root / "superglue" / "CB" / "test.jsonl"), "--output", str(preds),
                         "--submission"], capsys)
    assert code == 0
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 10 and all(set(x) == {"idx", "label"} for x in lines)
    assert {x["label"] for x in lines} <= {"entailment", "contradiction", "neutral"}
    for fmt in ("peft", "safetensors", "npy"):
        code, _, _ = _run(["export", "--prompt", str(trained), "--format", fmt, "--output", str(tmp_path / fmt)],
                          capsys)
        assert code == 0
    assert np.load(tmp_path / "npy" / "prompt.npy", allow_pickle=False).shape == (3, 32)
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["num_virtual_tokens"] == 3
    # the exported copy loads for evaluation like the original
    code, out2, _ = _run(["eval", "--model", model, "--prompt", str(tmp_path / "safetensors"), "--task", "CB",
                          "--data-dir", str(data_root / "superglue")], capsys)
    assert code == 0 and json.loads(out2)["metrics"] == metrics


def test_yaml_config_and_flag_override(tiny_model_dirs, data_root, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {tiny_model_dirs['bert']}\ntask: CB\ndata_dir: {data_root / 'superglue'}\n"
                   "method: mlp\nprompt-length: 2\nseed: 3\n")
    code, _, err = _run(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    resolved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert resolved["prompt"]["reparam"] == "mlp" and resolved["train"]["seed"] == 3
    assert resolved["prompt"]["num_tokens"] == 3  # the flag wins over the file


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--task", "--method", "--prompt-length", "--bottleneck", "--lr", "--epochs",
                 "--max-steps", "--few-shot", "--seed", "--output-dir", "--resume", "--branch-scale",
                 "--data-dir", "--config", "--grad-accum", "--patience", "--mixed-precision"):
        assert flag in out, flag


def _bad_cb(tmp_path, line):
    d = tmp_path / "sg" / "CB"
    d.mkdir(parents=True)
    good = '{"premise": "a b", "hypothesis": "c", "label": "entailment", "idx": 0}'
    (d / "train.jsonl").write_text(good + "\n" + line + "\n")
    (d / "val.jsonl").write_text(good + "\n")
    return str(tmp_path / "sg")


@pytest.mark.parametrize(
    "case, expect",
    [
        ("unknown_task", "unknown task 'XYZ'"),
        ("missing_dir", "nope/CB: no such folder ("),
        ("missing_split", "split 'test2' unknown"),
        ("malformed", "train.jsonl:2"),
        ("bad_label", "train.jsonl:2: label 'maybe' not in ('entailment', 'contradiction', 'neutral')"),
        ("missing_field", "train.jsonl:2: field 'hypothesis' missing"),
        ("few_shot", "few-shot k=500: class 'contradiction' has only 10 example(s)"),
        ("unwritable", "not writable"),
        ("bad_yaml", "bad.yaml:2: invalid YAML"),
        ("unknown_setting", "unknown setting(s): bogus"),
        ("bad_value", "epochs=0 is invalid: expected a positive integer"),
        ("empty", "train.jsonl: no records (empty file)"),
    ],
)
def test_user_errors_one_line_no_output(case, expect, tiny_model_dirs, data_root, tmp_path, capsys):
    out_dir = tmp_path / "out"
    base = ["train", "--model", tiny_model_dirs["bert"], "--data-dir", str(data_root / "superglue"),
            "--task", "CB", "--output-dir", str(out_dir), *FAST]
    extra = {
        "unknown_task": lambda: ["--task", "XYZ"],
        "missing_dir": lambda: ["--data-dir", str(tmp_path / "nope")],
        "missing_split": lambda: ["--eval-split", "test2"],
        "malformed": lambda: ["--data-dir", _bad_cb(tmp_path, "{oops")],
        "bad_label": lambda: ["--data-dir", _bad_cb(tmp_path, '{"premise": "a", "hypothesis": "b", "label": "maybe"}')],
        "missing_field": lambda: ["--data-dir", _bad_cb(tmp_path, '{"premise": "a", "label": "entailment"}')],
        "few_shot": lambda: ["--few-shot", "500"],
        "unwritable": lambda: ["--output-dir", "/proc/version/run"],
        "bad_yaml": lambda: ["--config", str(tmp_path / "bad.yaml")],
        "unknown_setting": lambda: ["--config", str(tmp_path / "unknown.yaml")],
        "bad_value": lambda: ["--epochs", "0"],
        "empty": lambda: ["--data-dir", _bad_cb(tmp_path, "")],
    }[case]()
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    (tmp_path / "unknown.yaml").write_text("bogus: 1\n")
    if case == "empty":  # a train split with no examples at all
        (tmp_path / "sg" / "CB" / "train.jsonl").write_text("\n")
    code, out, err = _run(base + extra, capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if "resprompt: error:" in ln]
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_prompt_from_other_backbone_refused(trained, tiny_model_dirs, data_root, tmp_path, capsys):
    import torch
    import transformers

    other = tmp_path / "other-bert"
    m = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_model_dirs["bert"], num_labels=3,
                                                                  ignore_mismatched_sizes=True)
    with torch.no_grad():
        m.get_input_embeddings().weight.mul_(2)
    m.save_pretrained(other)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dirs["bert"]).save_pretrained(other)
    code, _, err = _run(["eval", "--model", str(other), "--prompt", str(trained), "--task", "CB", "--data-dir",
                         str(data_root / "superglue")], capsys)
    assert code == 2 and "embedding_fingerprint" in err and "Traceback" not in err
    assert "differs from this backbone's" in err and "--allow-backbone-mismatch" in err


def test_cli_flushes_subnormal_floats(tmp_path, capsys):
    import torch

    try:
        assert main(["bench", str(tmp_path / "missing.yaml")]) == 2
        assert float(torch.tensor([1e-39]) * 1.0) == 0.0  # subnormal flushed to zero
    finally:
        torch.set_flush_denormal(False)
    assert float(torch.tensor([1e-39]) * 1.0) > 0.0
    assert f"resprompt: error: grid {tmp_path / 'missing.yaml'}: file not found" in capsys.readouterr().err


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "resprompt.cli", "eval", "--model", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "the following arguments are required: --prompt" in r.stderr


def test_diagnostics_scored_with_rte_prompt(tiny_model_dirs, data_root, tmp_path, capsys):
    out = tmp_path / "rte"
    assert main(["train", "--model", tiny_model_dirs["bert"], "--task", "RTE", "--data-dir",
                 str(data_root / "superglue"), "--output-dir", str(out), *FAST]) == 0
    capsys.readouterr()
    for task, keys in (("AX-b", {"matthews"}), ("AX-g", {"accuracy", "gender_parity"})):
        code, stdout, err = _run(["eval", "--model", tiny_model_dirs["bert"], "--prompt", str(out), "--task", task,
                                  "--data-dir", str(data_root / "superglue")], capsys)
        assert code == 0, err
        metrics = json.loads(stdout)["metrics"]
        assert keys <= set(metrics) and metrics["n"] == 8
        if task == "AX-b":
            assert metrics["score"] == metrics["matthews"]
        else:
            assert metrics["score"] == pytest.approx((metrics["accuracy"] + metrics["gender_parity"]) / 2)


def _custom_data(tmp_path):
    words = {"a": "apple pear plum", "b": "car bus train", "c": "red blue green"}
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"{words[y]} {i}", "y": y}) + "\n"
                             for i, y in enumerate("abc" * 6)))
    evalf = tmp_path / "eval.csv"
    evalf.write_text("text,y\n" + "".join(f"{words[y]} x,{y}\n" for y in "abcab"))
    only_c = tmp_path / "only_c.csv"
    only_c.write_text("text,y\nred blue,c\ngreen red,c\n")
    pred_in = tmp_path / "new.tsv"
    pred_in.write_text('text\nsaid "red\ncar bus\n')
    return train, evalf, only_c, pred_in


def test_custom_task_end_to_end(tiny_model_dirs, tmp_path, capsys):
    """train -> eval -> predict on the user's own files (jsonl, csv, tsv), with the label set saved in the prompt.

    Before: predict asked for --train-file, read jsonl only, and eval rebuilt the labels from the files given."""
    train, evalf, only_c, pred_in = _custom_data(tmp_path)
    run = tmp_path / "run"
    code, _, err = _run(["train", "--model", tiny_model_dirs["bert"], "--task", "custom", "--train-file", str(train),
                         "--eval-file", str(evalf), "--text-fields", "text", "--label-field", "y",
                         "--output-dir", str(run), "--max-grad-norm", "none", *FAST], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["max_grad_norm"] is None
    meta = json.loads((run / "best" / "resprompt_config.json").read_text())["task"]
    assert meta["labels"] == ["a", "b", "c"] and meta["text_fields"] == ["text"] and meta["label_field"] == "y"
    # eval on a file holding one label only: classes stay a=0, b=1, c=2 (the prompt's), no --task needed
    code, out, err = _run(["eval", "--model", tiny_model_dirs["bert"], "--prompt", str(run), "--eval-file",
                           str(only_c)], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["task"] == "custom" and res["metrics"]["n"] == 2.0
    code, out, err = _run(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(run), "--task", "custom",
                           "--input", str(pred_in), "--output", str(tmp_path / "p.jsonl")], capsys)
    assert code == 0, err
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and {x["label"] for x in lines} <= {"a", "b", "c"}
    # the same prompt, scored on the same file by the library directly, gives the same numbers
    from resprompt.backbones import load_backbone
    from resprompt.model import ResidualPromptModel
    from resprompt.tasks.evaluation import evaluate
    from resprompt.tasks.features import featurize
    from resprompt.tasks.superglue import task_from_metadata

    task = task_from_metadata(meta)
    backbone, tok, fam = load_backbone(tiny_model_dirs["bert"], num_labels=3)
    model = ResidualPromptModel.from_pretrained(backbone, run, tokenizer=tok)
    from resprompt.tasks.data import read_records

    insts = task.instances(read_records(only_c), fam, str(only_c))
    feats = featurize(insts, tok, fam, 48, train=False)
    assert evaluate(model, task, fam, insts, feats, tok, 8)[0] == res["metrics"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: --overwrite deleted whatever folder it was given."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    code, _, err = _run(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir",
                         str(data_root / "superglue"), "--output-dir", str(mine), "--overwrite", *FAST], capsys)
    assert code == 2 and (mine / "chapter1.tex").read_text() == "precious"
    assert f"resprompt: error: --overwrite: {mine} is not a resprompt run folder (no resprompt_run.json)" in err
    run = tmp_path / "run"
    args = ["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir", str(data_root / "superglue"),
            "--output-dir", str(run), *FAST]
    assert _run(args, capsys)[0] == 0
    assert (run / "resprompt_run.json").is_file()
    code, _, err = _run(args + ["--overwrite", "--seed", "5"], capsys)  # a run folder is replaced
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 5


def test_resume_with_other_settings_is_refused(tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: --resume rewrote config.json with the new flags while the checkpoint restored the old schedule."""
    run = tmp_path / "run"
    args = ["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir", str(data_root / "superglue"),
            "--output-dir", str(run), *FAST]
    assert _run(args, capsys)[0] == 0
    before = (run / "config.json").read_text()
    code, _, err = _run(args + ["--resume", "--lr", "0.01"], capsys)
    assert code == 2 and (run / "config.json").read_text() == before
    assert "resprompt: error: --resume: settings differ from" in err and "lr 0.3 -> 0.01" in err
    code, _, err = _run(args + ["--resume", "--no-progress"], capsys)  # same settings: fine
    assert code == 0, err


def test_resume_of_a_run_made_before_an_option_existed(tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: a config.json written before an option was added (no ``chat``, ``max_new_tokens``) refused
    --resume with "chat None -> False": the missing setting was compared as None, not as its default."""
    run = tmp_path / "run"
    args = ["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir", str(data_root / "superglue"),
            "--output-dir", str(run), *FAST]
    assert _run(args, capsys)[0] == 0
    config = json.loads((run / "config.json").read_text())
    for key in ("chat", "max_new_tokens", "eval_proxy"):
        del config["train"][key]
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = _run(args + ["--resume", "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = _run(args + ["--resume", "--max-new-tokens", "5"], capsys)  # not its default: a change
    assert code == 2 and "max_new_tokens 32 -> 5" in err


def test_pooling_flag_is_saved_and_a_bad_value_refused(tiny_model_dirs, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = _run(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--data-dir",
                       str(data_root / "superglue"), "--output-dir", str(out), "--pooling", "mean", *FAST], capsys)
    assert code == 0
    assert json.loads((out / "best" / "resprompt_config.json").read_text())["config"]["pooling"] == "mean"
    code, _, err = _run(["train", "--model", tiny_model_dirs["bert"], "--task", "CB", "--pooling", "max", *FAST],
                        capsys)
    assert code == 2 and "pooling" in err and "max" in err and "Traceback" not in err


def test_closed_stdout_exits_quietly():
    """`resprompt bench --dry-run | head -1`: once the reader has gone, no error message and the
    SIGPIPE exit status (141), as `cat` would give."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        r = subprocess.run([sys.executable, "-m", "resprompt.cli", "bench", "benchmarks/grids/small.yaml",
                            "--dry-run"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=900,
                           cwd=Path(__file__).resolve().parents[1])
    finally:
        os.close(write_end)
    assert r.stderr == ""
    assert r.returncode == 141


def test_export_refuses_an_output_that_is_or_holds_its_source(tmp_path, capsys):
    """Before: --output equal to the prompt folder replaced the prompt by its npy export, and into the run
    folder it came from wrote a resprompt_config.json that shadowed best/."""
    from conftest import tiny_bert
    from resprompt import ResidualPromptConfig, ResidualPromptModel, read_prompt

    model = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3), task={"name": "CB"})
    model.save_pretrained(tmp_path / "p")
    model.save_pretrained(tmp_path / "run" / "best")
    cases = [("p", "p"), ("p", "p/."), ("p", "."), ("run", "run"), ("run", "run/best"), ("run/best", "run")]
    for prompt, output in cases:
        for fmt in ("npy", "peft", "safetensors"):
            before = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*"))
            code, _, err = _run(["export", "--prompt", str(tmp_path / prompt), "--format", fmt,
                                 "--output", str(tmp_path / output)], capsys)
            assert code == 2 and err.count("\n") == 1 and "is or holds the prompt folder" in err, (prompt, output, err)
            assert sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*")) == before
    assert read_prompt(tmp_path / "p").format == "resprompt" and read_prompt(tmp_path / "run").path.name == "best"
    code, _, _ = _run(["export", "--prompt", str(tmp_path / "run"), "--format", "npy", "--output",
                       str(tmp_path / "run" / "npy")], capsys)  # inside the run folder, beside best/: fine
    assert code == 0 and sorted(f.name for f in (tmp_path / "run" / "npy").iterdir()) == [
        "head.classifier.bias.npy", "head.classifier.weight.npy", "prompt.npy", "prompt_npy.json"]
    assert read_prompt(tmp_path / "run").path.name == "best"


def test_eval_refuses_a_head_with_another_label_count(tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: a 2-output head was scored on 3-label CB (neutral never predicted), exit 0."""
    import transformers

    from resprompt import ResidualPromptConfig, ResidualPromptModel

    bb = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dirs["bert"], num_labels=2, ignore_mismatched_sizes=True)
    ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=3, bottleneck=8)).save_pretrained(tmp_path / "p")
    code, _, err = _run(["eval", "--model", tiny_model_dirs["bert"], "--prompt", str(tmp_path / "p"), "--task",
                         "CB", "--data-dir", str(data_root / "superglue")], capsys)
    assert code == 2 and "the prompt's head has 2 outputs; task CB needs 3 (labels ['entailment', " in err
    assert "Traceback" not in err


def test_predict_refuses_to_write_over_its_input(trained, tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: --output equal to --input replaced the user's records with the predictions, exit 0."""
    records = tmp_path / "in.jsonl"
    records.write_text((data_root / "superglue" / "CB" / "test.jsonl").read_text())
    before = records.read_text()
    code, _, err = _run(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(trained), "--task", "CB",
                         "--input", str(records), "--output", str(tmp_path / "." / "in.jsonl")], capsys)
    assert code == 2 and "is the --input file" in err and records.read_text() == before


def test_generation_flags_on_a_classification_prompt_are_refused(trained, tiny_model_dirs, data_root, capsys):
    """Before: they were ignored unchecked (--temperature nan --top-p -3 gave exit 0)."""
    code, _, err = _run(["eval", "--model", tiny_model_dirs["bert"], "--prompt", str(trained), "--task", "CB",
                         "--data-dir", str(data_root / "superglue"), "--temperature", "nan", "--top-p", "-3"], capsys)
    assert code == 2 and "a classification prompt; --temperature, --top-p apply to generative prompts only" in err


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"lr: 0.3\n\xff\xfe")
    code, _, err = _run(["train", "--config", str(bad)], capsys)
    assert code == 2 and f"--config {bad}: not UTF-8 text" in err
