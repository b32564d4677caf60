"""Run setup: task resolution, which records each split reads, few-shot sampling, saved task metadata."""

import json

import pytest

from resprompt.tasks import data as D
from resprompt.tasks.superglue import get_task, task_from_metadata, user_task
from resprompt.training import setup
from resprompt.training.runconfig import ConfigError, TrainConfig


def test_fewglue_source_without_a_fewglue_folder_is_an_error(data_root, monkeypatch):
    """Before: with no FewGLUE folder found it silently trained on the full SuperGLUE training set."""
    monkeypatch.setattr(D, "DEFAULT_FEWGLUE_DIR", None)
    cfg = TrainConfig(task="CB", train_source="fewglue", data_dir=str(data_root / "superglue"))
    with pytest.raises(ConfigError, match=r"--train-source fewglue: no FewGLUE folder found; pass --fewglue-dir"):
        setup.load_split(cfg, get_task("CB"), "encoder", train=True)
    cfg = TrainConfig(task="CB", train_source="fewglue", fewglue_dir=str(data_root / "fewglue"))
    instances, desc = setup.load_split(cfg, get_task("CB"), "encoder", train=True)
    assert desc.endswith("fewglue/CB/train.jsonl") and len(instances) == 12


def _custom_files(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"s": f"text {i}", "y": lab}) + "\n"
                             for i, lab in enumerate(["a", "b", "c"] * 4)))
    evalf = tmp_path / "eval.csv"
    evalf.write_text("s,y\nfirst,c\nsecond,c\n")
    return train, evalf


def test_few_shot_stratifies_on_the_label_field(tmp_path):
    """Before: --few-shot read the hard-coded field 'label', so a custom --label-field y drew k records in all."""
    train, evalf = _custom_files(tmp_path)
    cfg = TrainConfig(task="custom", train_file=str(train), eval_file=str(evalf), text_fields="s",
                      label_field="y", few_shot=2, seed=3)
    task = setup.resolve_task(cfg)
    instances, _ = setup.load_split(cfg, task, "encoder", train=True)
    assert sorted(i.label for i in instances) == [0, 0, 1, 1, 2, 2]


def test_custom_task_metadata_round_trips_and_keeps_its_label_set(tmp_path):
    """Eval with the prompt's saved task: an eval file holding only label 'c' keeps class ids a=0, b=1, c=2."""
    train, evalf = _custom_files(tmp_path)
    cfg = TrainConfig(task="custom", train_file=str(train), eval_file=str(evalf), text_fields="s", label_field="y")
    meta = setup.resolve_task(cfg).metadata()
    assert meta == {"name": "custom", "kind": "classification", "labels": ["a", "b", "c"],
                    "verbalizers": ["a", "b", "c"], "choice": False, "custom": True, "text_fields": ["s"],
                    "label_field": "y"}
    eval_only = TrainConfig(task="custom", eval_file=str(evalf), text_fields="s", label_field="y")
    with pytest.raises(D.DataError, match=r"task 'custom': labels \['c'\]: expected at least two distinct labels"):
        setup.resolve_task(eval_only)  # rebuilt from the files, only what they hold: why the label set is saved
    task = setup.resolve_task(eval_only, saved=meta)
    assert task.labels == ("a", "b", "c")
    instances, _ = setup.load_split(eval_only, task, "encoder", train=False)
    assert [i.label for i in instances] == [2, 2]


def test_superglue_metadata_names_the_task():
    assert task_from_metadata(get_task("RTE").metadata()) is get_task("RTE")
    assert task_from_metadata(user_task("mine", ["x", "y"], ["t"], "lab").metadata()).labels == ("x", "y")
    with pytest.raises(D.DataError, match=r"prompt: task metadata \{'labels': \[\]\} has no name"):
        task_from_metadata({"labels": []})


def test_training_on_an_unlabelled_split_is_refused(data_root):
    """Before: --train-split test trained every row towards class 0 (encoder) or the last candidate (decoder)."""
    cfg = TrainConfig(task="CB", data_dir=str(data_root / "superglue"), train_split="test")
    for family in ("encoder", "decoder"):
        with pytest.raises(D.DataError, match=r"CB/test\.jsonl: no gold labels \(a test split\?\)"):
            setup.load_split(cfg, get_task("CB"), family, train=True)
    cfg = TrainConfig(task="CB", data_dir=str(data_root / "superglue"), eval_split="test")
    instances, _ = setup.load_split(cfg, get_task("CB"), "encoder", train=False)  # evaluation may lack labels
    assert instances and all(i.label is None for i in instances)


def test_training_and_evaluating_on_the_same_data_is_refused(data_root, tmp_path):
    """Before: --eval-split train (or the same file twice) picked the best prompt on its own training data."""
    cfg = TrainConfig(task="CB", data_dir=str(data_root / "superglue"), eval_split="train")
    with pytest.raises(ConfigError, match=r"training and evaluation both read .*CB/train\.jsonl"):
        setup.prepare_task(cfg, get_task("CB"), "encoder", None, 64)
    train, _ = _custom_files(tmp_path)
    (tmp_path / "sub").mkdir()
    cfg = TrainConfig(task="custom", train_file=str(train), eval_file=str(tmp_path / "sub" / ".." / "train.jsonl"),
                      text_fields="s", label_field="y")
    with pytest.raises(ConfigError, match="training and evaluation both read"):
        setup.prepare_task(cfg, setup.resolve_task(cfg), "encoder", None, 64)


def test_a_superglue_task_reads_the_users_files_when_given(data_root, tmp_path):
    """Before: `eval --eval-file mine.jsonl` on a CB prompt scored the official val split and ignored the file."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"premise": "A cat sat.", "hypothesis": "A cat sat.", "label": "entailment",
                                "idx": 7}) + "\n")
    cfg = TrainConfig(task="CB", data_dir=str(data_root / "superglue"), eval_file=str(mine), train_file=str(mine))
    for train in (True, False):
        instances, desc = setup.load_split(cfg, get_task("CB"), "encoder", train=train)
        assert desc == str(mine) and [(i.text_a, i.label) for i in instances] == [("A cat sat.", 0)]


def test_a_custom_prompt_evaluates_on_a_split_named_train(tmp_path):
    """Before: eval_split 'train' made evaluation look for --train-file."""
    train, evalf = _custom_files(tmp_path)
    cfg = TrainConfig(task="custom", train_file=str(train), text_fields="s", label_field="y")
    task = setup.resolve_task(cfg)
    cfg = TrainConfig(task="custom", eval_file=str(evalf), eval_split="train", text_fields="s", label_field="y")
    instances, desc = setup.load_split(cfg, task, "encoder", train=False)
    assert desc == str(evalf) and len(instances) == 2
