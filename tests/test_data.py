"""Reading, locating and sampling data (resprompt.tasks.data); no models involved."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from resprompt.tasks import data as D  # noqa: E402
from resprompt.tasks.superglue import get_task, user_task  # noqa: E402


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jl(*rows):
    return "\n".join(json.dumps(r) for r in rows)


CB_ROW = {"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}


# ----------------------------------------------------------------------------- read_jsonl / read_csv
def test_read_jsonl_no_trailing_newline_and_blank_lines(tmp_path):
    f = write(tmp_path / "a.jsonl", jl({"a": 1}) + "\n\n   \n" + jl({"a": 2}))
    rows = D.read_jsonl(f)
    assert [r["a"] for r in rows] == [1, 2]
    assert [r["__line__"] for r in rows] == [1, 4]
    assert rows[0]["__file__"] == str(f)


def test_read_jsonl_malformed_line_names_file_and_line(tmp_path):
    f = write(tmp_path / "bad.jsonl", jl({"a": 1}, {"a": 2}) + '\n{"a": 3,\n')
    with pytest.raises(D.DataError, match=r"bad\.jsonl:3: invalid JSON"):
        D.read_jsonl(f)


def test_read_jsonl_non_object_line(tmp_path):
    f = write(tmp_path / "list.jsonl", jl({"a": 1}) + "\n[1, 2]\n")
    with pytest.raises(D.DataError, match=r"list\.jsonl:2: expected a JSON object, got list"):
        D.read_jsonl(f)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(D.DataError, match=r"nope\.jsonl: cannot read \(No such file or directory\)"):
        D.read_jsonl(tmp_path / "nope.jsonl")


def test_read_csv_line_numbers_and_short_rows(tmp_path):
    f = write(tmp_path / "a.csv", 'text,label\n"multi\nline",pos\nplain,neg\n')
    rows = D.read_csv(f)
    assert [(r["text"], r["label"], r["__line__"]) for r in rows] == [("multi\nline", "pos", 2), ("plain", "neg", 4)]
    bad = write(tmp_path / "b.csv", "text,label\nonly\n")
    with pytest.raises(D.DataError, match=r"b\.csv:2: field 'label' missing"):
        D.read_csv(bad)


# ----------------------------------------------------------------------------- load_records
@pytest.fixture
def layout(tmp_path):
    sg, fg = tmp_path / "superglue", tmp_path / "fewglue"
    write(sg / "CB" / "train.jsonl", jl(CB_ROW, CB_ROW))
    write(sg / "CB" / "val.jsonl", jl(CB_ROW))
    write(sg / "AX-b" / "AX-b.jsonl", jl({"sentence1": "a", "sentence2": "b", "label": "entailment", "idx": "0"}))
    write(fg / "CB" / "train.jsonl", jl(CB_ROW, CB_ROW, CB_ROW))
    write(fg / "CB" / "dev32.jsonl", jl(CB_ROW))
    return sg, fg


def test_load_records_routes_splits(layout):
    sg, fg = layout
    recs, desc = D.load_records(get_task("CB"), "train", data_dir=sg)
    assert len(recs) == 2 and desc == str(sg / "CB" / "train.jsonl")
    assert recs[1]["__line__"] == 2 and recs[1]["__file__"] == desc
    assert len(D.load_records("CB", "train", fewglue_dir=fg)[0]) == 3  # few-shot train from FewGLUE
    assert len(D.load_records("CB", "dev32", fewglue_dir=fg)[0]) == 1
    recs, desc = D.load_records(get_task("AX-b"), "val", data_dir=sg)
    assert desc.endswith("AX-b.jsonl") and len(recs) == 1
    assert D.load_records("AX-b", "test", data_dir=sg)[1] == desc


def test_missing_split_lists_available(layout):
    sg, _ = layout
    with pytest.raises(D.DataError, match=r"test\.jsonl: split 'test' not found; splits in .*CB: train, val"):
        D.load_records("CB", "test", data_dir=sg)


def test_missing_task_folder_lists_tasks(layout):
    sg, _ = layout
    with pytest.raises(D.DataError, match=r"RTE: no such folder; tasks there: AX-b, CB"):
        D.load_records("RTE", "val", data_dir=sg)
    with pytest.raises(D.DataError, match=r"nowhere/CB: no such folder \(.*nowhere does not exist or is empty\)"):
        D.load_records("CB", "val", data_dir=sg / "nowhere")


def test_bad_split_and_diagnostic_train(layout):
    sg, _ = layout
    with pytest.raises(D.DataError, match="split 'dev' unknown"):
        D.load_records("CB", "dev", data_dir=sg)
    with pytest.raises(D.DataError, match=r"AX-g is evaluation only: split 'train' does not exist "
                                          r"\(use 'val' or 'test'\)"):
        D.load_records("AX-g", "train", data_dir=sg)


def test_empty_file(tmp_path):
    write(tmp_path / "CB" / "val.jsonl", "\n\n")
    with pytest.raises(D.DataError, match=r"CB/val\.jsonl: no records \(empty file\)"):
        D.load_records("CB", "val", data_dir=tmp_path)


def test_hub_offline_raises_data_error():
    with pytest.raises(D.DataError, match=r"hub:super_glue/cb/validation: the Hugging Face hub is unreachable"):
        D.load_records(get_task("CB"), "val", hub=True)
    with pytest.raises(D.DataError, match="split 'dev32' is FewGLUE's and is not on the hub"):
        D.load_records("CB", "dev32", hub=True)


def test_default_dir_env_and_walk(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPROMPT_DATA_DIR", str(tmp_path))
    assert D._default_dir("RESPROMPT_DATA_DIR", "superglue") == tmp_path
    monkeypatch.delenv("RESPROMPT_DATA_DIR")
    (tmp_path / "shared" / "data" / "superglue").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert D._default_dir("RESPROMPT_DATA_DIR", "superglue") == (tmp_path / "shared/data/superglue").resolve()


# ----------------------------------------------------------------------------- hub rows -> official layout
def test_hub_conversion_labels_and_nesting():
    cb = D._hub_to_official("CB", [{"premise": "p", "hypothesis": "h", "idx": 0, "label": 2},
                                   {"premise": "p", "hypothesis": "h", "idx": 1, "label": -1}], "hub")
    assert cb[0]["label"] == "neutral" and "label" not in cb[1] and cb[1]["__line__"] == 2
    assert D._hub_to_official("BoolQ", [{"question": "q", "passage": "p", "idx": 0, "label": 1}], "hub")[0]["label"] is True
    wsc = D._hub_to_official("WSC", [{"text": "a b", "span1_index": 0, "span2_index": 1, "span1_text": "a",
                                      "span2_text": "b", "idx": 0, "label": 0}], "hub")[0]
    assert wsc["target"]["span2_text"] == "b" and wsc["label"] is False
    mrc = D._hub_to_official("MultiRC", [
        {"paragraph": "P", "question": "Q0", "answer": f"A{a}", "label": a % 2,
         "idx": {"paragraph": 0, "question": q, "answer": a}} for q in (0, 1) for a in range(3)], "hub")
    assert len(mrc) == 1
    qs = mrc[0]["passage"]["questions"]
    assert [len(q["answers"]) for q in qs] == [3, 3] and qs[0]["answers"][1]["label"] == 1
    rec = D._hub_to_official("ReCoRD", [{"passage": "Ann met Bob.", "query": "@placeholder smiled", "entities": ["Ann", "Bob"],
                                         "answers": ["Bob"], "idx": {"passage": 3, "query": 7}}], "hub")[0]
    insts = get_task("ReCoRD").instances([rec], "seq2seq", "hub")
    assert insts[0].candidates == ("Ann", "Bob") and insts[0].label == 1 and insts[0].uid == "q7"


# ----------------------------------------------------------------------------- user data
def test_user_records_jsonl_and_csv(tmp_path):
    j = write(tmp_path / "u.jsonl", jl({"s": "good film", "y": "pos"}, {"s": "bad film", "y": "neg"}))
    c = write(tmp_path / "u.csv", "s,t,y\ngood,film,pos\nbad,film,neg\n")
    rows = D.load_user_records(j, text_fields=["s"], label_field="y")
    assert len(rows) == 2
    task = user_task("sentiment", ["neg", "pos"], ["s"], "y")
    assert task.num_labels == 2 and task.verbalizers == ("neg", "pos") and task.main_metric == "accuracy"
    enc = task.instances(rows, "encoder", str(j))
    assert [(i.text_a, i.text_b, i.label) for i in enc] == [("good film", None, 1), ("bad film", None, 0)]
    res = task.evaluate(enc, [1, 1], "encoder")
    # F1 macro: neg never predicted (0), pos precision 1/2 recall 1 (2/3) -> 1/3
    assert res == pytest.approx({"accuracy": 0.5, "f1_macro": 1 / 3, "score": (0.5 + 1 / 3) / 2, "n": 2})
    task2 = user_task("pairs", ["neg", "pos"], ["s", "t"], "y")
    rows2 = D.load_user_records(c, text_fields=["s", "t"], label_field="y")
    dec = task2.instances(rows2, "decoder", str(c))
    assert dec[0].candidates == (" neg", " pos") and dec[0].source.endswith("Answer:")
    s2s = task2.instances(rows2, "seq2seq", str(c))
    assert s2s[0].source == "pairs s: good t: film" and s2s[0].candidates == ("neg", "pos")
    assert task2.submission(s2s, [0, 1], "seq2seq") == [{"idx": 0, "label": "neg"}, {"idx": 1, "label": "pos"}]


def test_user_records_missing_field_and_bad_label(tmp_path):
    j = write(tmp_path / "u.jsonl", jl({"s": "a", "y": "pos"}, {"text": "b", "y": "neg"}))
    with pytest.raises(D.DataError, match=r"u\.jsonl:2: field 's' missing"):
        D.load_user_records(j, text_fields=["s"], label_field="y")
    k = write(tmp_path / "v.jsonl", jl({"s": "a", "y": "pos"}, {"s": "b", "y": "meh"}))
    rows = D.load_user_records(k, text_fields=["s"], label_field="y")
    with pytest.raises(D.DataError, match=r"v\.jsonl:2: label 'meh' not in \('neg', 'pos'\)"):
        user_task("t", ["neg", "pos"], ["s"], "y").instances(rows, "encoder", str(k))
    with pytest.raises(D.DataError, match=r"task 't': labels \['pos'\]: expected at least two distinct labels"):
        user_task("t", ["pos"], ["s"], "y")
    unl = D.load_user_records(k, text_fields=["s"], label_field=None)
    assert user_task("t", ["a", "b"], ["s"], None).instances(unl, "encoder", "x")[0].label is None


# ----------------------------------------------------------------------------- few-shot
def _pool():
    return [{"label": lab, "i": i} for i, lab in enumerate(["a"] * 10 + ["b"] * 5 + ["c"] * 7)]


def test_few_shot_deterministic_and_per_class():
    pool = _pool()
    one = D.few_shot(pool, 4, seed=13, label_key="label")
    assert one == D.few_shot(list(pool), 4, seed=13, label_key="label")
    assert sorted(r["label"] for r in one) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert [r["i"] for r in one] == sorted(r["i"] for r in one)  # input order kept
    assert any(D.few_shot(pool, 4, seed=s, label_key="label") != one for s in range(1, 5))
    by_fn = D.few_shot(pool, 4, seed=13, label_key=lambda r: r["label"])
    assert by_fn == one


def test_few_shot_impossible_k():
    with pytest.raises(D.DataError, match=r"class 'b' has only 5 example"):
        D.few_shot(_pool(), 6, seed=0, label_key="label")
    with pytest.raises(D.DataError, match="few-shot k=0: expected a whole number >= 1"):
        D.few_shot(_pool(), 0, seed=0, label_key="label")


def test_few_shot_unlabeled_pool_and_instances():
    pool = [{"idx": i} for i in range(10)]  # MultiRC / ReCoRD passages carry no top-level label
    got = D.few_shot(pool, 3, seed=1, label_key="label")
    assert got == [{"idx": 1}, {"idx": 2}, {"idx": 4}]  # sorted(random.Random(1).sample(range(10), 3))
    insts = get_task("CB").instances([dict(CB_ROW, label=lab, idx=i) for i, lab in
                                      enumerate(["neutral", "entailment"] * 3)], "encoder", "mem")
    assert sorted(i.label for i in D.few_shot(insts, 2, seed=0, label_key="label")) == [0, 0, 2, 2]


def test_tsv_is_read_without_quote_processing(tmp_path):
    """Before: an unbalanced double quote in a TSV text field merged rows or failed with 'row too short'."""
    p = tmp_path / "d.tsv"
    p.write_text('text\tlabel\nHe said "hello there\tpos\n"unbalanced start\tneg\nplain row\tneg\n'
                 '"quoted" start\tpos\n')
    rows = D.read_csv(p)
    assert [(r["text"], r["label"], r["__line__"]) for r in rows] == [
        ('He said "hello there', "pos", 2), ('"unbalanced start', "neg", 3), ("plain row", "neg", 4),
        ('"quoted" start', "pos", 5)]


def test_csv_header_naming_a_column_twice_is_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label,text\na,pos,b\n")
    with pytest.raises(D.DataError, match=r"d\.csv:1: header names column\(s\) 'text' more than once"):
        D.read_csv(p)


def test_read_records_reads_csv_tsv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text("s,label\nx,pos\n")
    (tmp_path / "a.tsv").write_text("s\tlabel\nx\tpos\n")
    (tmp_path / "a.jsonl").write_text('{"s": "x", "label": "pos"}\n')
    for name in ("a.csv", "a.tsv", "a.jsonl"):
        assert [(r["s"], r["label"]) for r in D.read_records(tmp_path / name)] == [("x", "pos")]


def test_user_records_refuse_empty_text_and_labels_that_are_not_names(tmp_path):
    """Before: an empty or blank text trained on [CLS][SEP], and NaN / 1.0 / a list became classes of their own
    ("nan", "1.0", "['a']")."""
    blank = write(tmp_path / "b.jsonl", jl({"s": "a", "y": "pos"}, {"s": "  ", "y": "neg"}))
    with pytest.raises(D.DataError, match=r"b\.jsonl:2: field 's' is empty"):
        D.load_user_records(blank, text_fields=["s"], label_field="y")
    empty_csv = write(tmp_path / "e.csv", "s,y\na,pos\n,neg\n")
    with pytest.raises(D.DataError, match=r"e\.csv:3: field 's' is empty"):
        D.load_user_records(empty_csv, text_fields=["s"], label_field="y")
    for value, shown in ((float("nan"), "nan"), (1.0, "1.0"), (["a"], r"\['a'\]"), ({"k": 1}, r"\{'k': 1\}")):
        f = write(tmp_path / "l.jsonl", jl({"s": "a", "y": "pos"}, {"s": "b", "y": value}))
        with pytest.raises(D.DataError, match=rf"l\.jsonl:2: label field 'y' has value {shown}, expected a label name"):
            D.load_user_records(f, text_fields=["s"], label_field="y")
    ok = write(tmp_path / "ok.jsonl", jl({"s": "a", "y": 1}, {"s": "b", "y": True}, {"s": "c", "y": "pos"}))
    assert len(D.load_user_records(ok, text_fields=["s"], label_field="y")) == 3


def test_label_set_refuses_two_spellings_of_one_label(tmp_path):
    """Before: "pos" and "Pos " were two classes, each kept its own rows."""
    f = write(tmp_path / "u.jsonl", jl({"s": "a", "y": "pos"}, {"s": "b", "y": "neg"}, {"s": "c", "y": "Pos "}))
    rows = D.load_user_records(f, text_fields=["s"], label_field="y")
    with pytest.raises(D.DataError, match=r"u\.jsonl:3: label 'Pos ' differs only in case or spaces from 'pos' "
                                          r"\(.*u\.jsonl:1\)"):
        D.label_set(rows, "y")
    assert D.label_set(rows[:2], "y") == ["neg", "pos"]


def test_csv_line_numbers_after_blank_lines(tmp_path):
    """Before: the first row after a blank line was reported on the blank line (3 here, instead of 4)."""
    f = write(tmp_path / "a.csv", 'text,label\na,x\n\nb,y\n\n\n"c\nd",z\ne,w\n')
    assert [r["__line__"] for r in D.read_csv(f)] == [2, 4, 7, 9]


def test_custom_true_false_labels_come_back_as_written():
    """Before: a user's labels False/True were written as false/true (SuperGLUE's submission spelling)."""
    task = user_task("t", ["False", "True"], ["s"], "y")
    inst = task.instances([{"s": "a", "y": "True"}], "encoder", "x")
    assert task.submission(inst, [1], "encoder") == [{"idx": 0, "label": "True"}]
    assert get_task("BoolQ").submission(inst, [1], "encoder") == [{"idx": 0, "label": "true"}]


def test_a_blank_label_column_reads_as_no_label(tmp_path):
    """Before: an unlabelled csv that keeps its label header was refused (label '' not in the labels)."""
    task = user_task("mine", ["neg", "pos"], ["text"], "label")
    rows = D.read_csv(write(tmp_path / "u.csv", "text,label\ngood film,\nbad film,  \n"))
    assert [i.label for i in task.instances(rows, "encoder", "u.csv")] == [None, None]
    mixed = D.read_csv(write(tmp_path / "m.csv", "text,label\ngood film,pos\nbad film,\n"))
    with pytest.raises(D.DataError, match="label"):  # labelled and unlabelled rows in one file: refused, as before
        task.instances(mixed, "encoder", "m.csv")
