"""A generative task on the user's own files through the command line and through Python, and its bad inputs."""

import json

import pytest

from resprompt.cli import main

WORDS = ["red", "blue", "green", "cat", "dog", "sun"]
COMMON = ["--batch-size", "4", "--prompt-length", "4", "--bottleneck", "8", "--max-length", "32", "--no-progress",
          "--max-new-tokens", "3"]


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen-data")
    rows = [{"question": f"after {w}", "answer": WORDS[(i + 1) % 6]} for i, w in enumerate(WORDS * 4)]
    return {"train": _write(d / "train.jsonl", rows), "val": _write(d / "val.jsonl", rows[:6]),
            "input": _write(d / "in.jsonl", [{"question": r["question"]} for r in rows[:5]]), "dir": d}


def _train(model_dir, files, out, *extra):
    return ["train", "--model", model_dir, "--task", "custom", "--train-file", files["train"], "--eval-file",
            files["val"], "--target-field", "answer", "--template", "Q: {question} A:", "--output-dir", str(out),
            *COMMON, *extra]


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_train_eval_predict_a_generative_prompt(kind, tiny_model_dirs, files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(_train(tiny_model_dirs[kind], files, out, "--max-steps", "24", "--eval-every", "8",
                                    "--lr", "0.3"), capsys)
    assert code == 0, err
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "train"]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4  # the prompt learns the targets
    best = json.loads(stdout)["best"]
    assert set(best) >= {"exact_match", "f1", "rouge_l", "loglik", "score", "n"} and best["n"] == 6.0
    meta = json.loads((out / "best" / "resprompt_config.json").read_text())["task"]
    assert meta["kind"] == "generation" and meta["template"] == "Q: {question} A:"

    code, stdout, err = _run(["eval", "--model", tiny_model_dirs[kind], "--prompt", str(out), "--eval-file",
                              files["val"], "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["metrics"]["exact_match"] == pytest.approx(best["exact_match"])

    pred = tmp_path / "pred.jsonl"
    code, _, err = _run(["predict", "--model", tiny_model_dirs[kind], "--prompt", str(out), "--input",
                         files["input"], "--output", str(pred), "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    lines = [json.loads(x) for x in pred.read_text().splitlines()]
    assert [x["uid"] for x in lines] == ["0", "1", "2", "3", "4"] and all(isinstance(x["text"], str) for x in lines)


def test_eval_proxy_selects_on_loglik_and_generates_at_best_and_end(tiny_model_dirs, files, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(_train(tiny_model_dirs["llama"], files, out, "--max-steps", "8", "--eval-every", "4",
                                    "--eval-proxy"), capsys)
    assert code == 0, err
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert all(e["score"] == e["loglik"] for e in evals)
    assert all(("exact_match" in e) == e["best"] for e in evals)  # generation only at a new best
    result = json.loads(stdout)
    assert "exact_match" in result["final"] and result["final"]["score"] == result["final"]["loglik"]


def test_the_python_task_is_the_one_the_cli_builds(tiny_model_dirs, files, tmp_path):
    from resprompt.backbones import load_backbone
    from resprompt.prompt.config import ResidualPromptConfig
    from resprompt.training.runconfig import TrainConfig
    from resprompt.training.setup import prepare_task, resolve_task
    from resprompt.training.trainer import train

    cfg = TrainConfig(model=tiny_model_dirs["llama"], task="custom", train_file=files["train"],
                      eval_file=files["val"], target_field="answer", template="Q: {question} A:", max_steps=4,
                      batch_size=4, max_length=32, max_new_tokens=3, progress=False, output_dir=str(tmp_path / "py"))
    task = resolve_task(cfg)
    _, tokenizer, family = load_backbone(cfg.model)
    prepared = prepare_task(cfg, task, family, tokenizer, 28)
    assert len(prepared.train_features) == 24 and prepared.metadata() == task.metadata()
    results = train(cfg, ResidualPromptConfig(num_tokens=4, bottleneck=8), task=prepared)
    assert results["steps"] == 4 and "exact_match" in results["final"]


def _error(code, err, message):
    lines = [x for x in err.strip().splitlines() if x]
    assert code == 2 and lines[-1].startswith("resprompt: error: "), err
    assert message in lines[-1], lines[-1]
    assert "Traceback" not in err


@pytest.mark.parametrize("rows, extra, message", [
    ([{"question": "q"}], [], "train.jsonl:1: target field 'answer' missing (fields present: question)"),
    ([{"question": "q", "answer": ""}], [], "train.jsonl:1: target field 'answer' is empty"),
    ([{"question": "q", "answer": "a b c d e f g h"}], ["--max-target-length", "4"],
     "train.jsonl:1: target has"),
    ([{"q": "x", "answer": "a"}], [], "train.jsonl:1: template placeholder {question} is not a field of the record"),
])
def test_bad_training_files_fail_with_one_line(rows, extra, message, tiny_model_dirs, files, tmp_path, capsys):
    bad = _write(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    argv = _train(tiny_model_dirs["llama"], {**files, "train": bad}, out, "--max-steps", "1", *extra)
    code, _, err = _run(argv, capsys)
    _error(code, err, message)
    assert not out.exists()  # nothing half-written


def test_chat_role_and_missing_template_errors(tiny_model_dirs, tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    good = _write(tmp_path / "chat.jsonl", rows)
    argv = ["train", "--model", tiny_model_dirs["llama"], "--task", "custom", "--chat", "--train-file", good,
            "--eval-file", good, "--output-dir", str(tmp_path / "run"), *COMMON]
    code, _, err = _run(argv, capsys)  # MiniLM's WordPiece tokenizer has no chat template
    _error(code, err, "has no chat template")
    bad = _write(tmp_path / "bad.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    from resprompt.tasks.generative import generative_task
    from resprompt.tasks.records import DataError

    with pytest.raises(DataError, match=r"bad.jsonl:1: messages\[0\]: role 'robot' is invalid"):
        from resprompt.tasks.data import read_records

        generative_task(chat=True).instances(read_records(bad), "decoder", bad)


def test_generative_and_classification_prompts_are_not_swapped(tiny_model_dirs, files, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(_train(tiny_model_dirs["llama"], files, out, "--max-steps", "1")) == 0
    capsys.readouterr()
    code, _, err = _run(["eval", "--model", tiny_model_dirs["llama"], "--prompt", str(out), "--task", "CB"], capsys)
    _error(code, err, "a generative prompt (text targets); --task CB is a classification task")

    from resprompt.backbones import load_backbone
    from resprompt.model import ResidualPromptModel
    from resprompt.prompt.config import ResidualPromptConfig
    from resprompt.tasks.superglue import user_task

    backbone, tok, _ = load_backbone(tiny_model_dirs["bert"], num_labels=2)
    clf = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=2), tokenizer=tok,
                              task=user_task("custom", ["no", "yes"], ["question"], "label").metadata())
    clf.save_pretrained(tmp_path / "clf")
    code, _, err = _run(["eval", "--model", tiny_model_dirs["bert"], "--prompt", str(tmp_path / "clf"), "--eval-file",
                         files["val"], "--target-field", "answer"], capsys)
    _error(code, err, "a classification prompt (labels ['no', 'yes']); --target-field is for generative prompts")


def test_generative_settings_on_a_superglue_task_or_an_encoder(tiny_model_dirs, files, tmp_path, capsys):
    code, _, err = _run(["train", "--model", tiny_model_dirs["llama"], "--task", "CB", "--target-field", "x",
                         "--output-dir", str(tmp_path / "a")], capsys)
    _error(code, err, "--target-field / --chat make a custom generative task: use --task custom")
    code, _, err = _run(_train(tiny_model_dirs["bert"], files, tmp_path / "b", "--max-steps", "1"), capsys)
    _error(code, err, "a generative task needs a decoder or seq2seq backbone")
    code, _, err = _run(_train(tiny_model_dirs["llama"], files, tmp_path / "c", "--few-shot", "2"), capsys)
    _error(code, err, "a generative task has none: use --max-train-examples")


def test_conflicting_or_zero_generation_settings_are_refused(tiny_model_dirs, files, tmp_path, capsys):
    code, _, err = _run(_train(tiny_model_dirs["llama"], files, tmp_path / "a", "--eval-proxy", "--metric", "f1"),
                        capsys)
    _error(code, err, "--eval-proxy selects the best prompt on the target log-likelihood; metric='f1' would be ignored")
    out = tmp_path / "run"
    assert main(_train(tiny_model_dirs["llama"], files, out, "--max-steps", "1")) == 0
    capsys.readouterr()
    pred = tmp_path / "p.jsonl"
    code, _, err = _run(["predict", "--model", tiny_model_dirs["llama"], "--prompt", str(out), "--input",
                         files["input"], "--output", str(pred), "--max-new-tokens", "0"], capsys)
    _error(code, err, "max-new-tokens=0 is invalid")  # was silently replaced by the saved value
    assert not pred.exists()


def test_metric_loglik_still_generates_at_best_and_end(tiny_model_dirs, files, tmp_path, capsys):
    code, stdout, err = _run(_train(tiny_model_dirs["llama"], files, tmp_path / "run", "--max-steps", "4",
                                    "--eval-every", "2", "--metric", "loglik"), capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert "exact_match" in result["best"] and "exact_match" in result["final"]
