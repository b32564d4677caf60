"""Task definitions: instances per family on the real data, validation, evaluation, submissions."""

import json
import os
from collections import Counter

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from resprompt.tasks import data as D  # noqa: E402
from resprompt.tasks.superglue import FAMILIES, TASKS, Instance, get_task  # noqa: E402

SG, FG = D.DEFAULT_DATA_DIR, D.DEFAULT_FEWGLUE_DIR
needs_data = pytest.mark.skipif(SG is None or FG is None,
                                reason="real SuperGLUE/FewGLUE files not found (../shared/data absent; "
                                       "set RESPROMPT_DATA_DIR / RESPROMPT_FEWGLUE_DIR)")

# task -> (official val records, encoder instances, generative instances, groups)
VAL = {"CB": (56, 56, 56), "RTE": (277, 277, 277), "COPA": (100, 200, 100), "MultiRC": (83, 4848, 4848),
       "BoolQ": (3270, 3270, 3270), "WiC": (638, 638, 638), "WSC": (104, 104, 104),
       "AX-b": (1104, 1104, 1104), "AX-g": (356, 356, 356)}


@needs_data
@pytest.mark.parametrize("name", sorted(VAL))
def test_real_val_counts_all_families(name):
    task = get_task(name)
    recs, desc = D.load_records(task, "val", data_dir=SG)
    n_rec, n_enc, n_gen = VAL[name]
    assert len(recs) == n_rec
    for fam in FAMILIES:
        insts = task.instances(recs, fam, desc)
        assert len(insts) == (n_enc if fam == "encoder" else n_gen)
        assert all(i.label is not None for i in insts)
        assert len({i.uid for i in insts}) == len(insts)
        if fam != "encoder":
            assert all(0 <= i.label < len(i.candidates) and i.source for i in insts)
        if fam == "decoder":
            assert all(c.startswith(" ") for i in insts for c in i.candidates)
        if name == "MultiRC":
            assert len({i.group for i in insts}) == 953
        # perfect predictions score 1 (COPA encoder: scores of "correct")
        preds = [float(i.label) for i in insts] if task.choice and fam == "encoder" else [i.label for i in insts]
        res = task.evaluate(insts, preds, fam)
        assert res["score"] == pytest.approx(1.0) and res[task.main_metric] == pytest.approx(1.0)
        assert res["n"] == {"COPA": 100, "MultiRC": 953}.get(name, n_rec)


# (task, split) -> (encoder instances, generative instances, few-shot draws at k=1: one per class; MultiRC /
# ReCoRD records carry no top-level label, so one from the whole pool; FewGLUE's WSC train is one class)
FEW = {("BoolQ", "train"): (32, 32, 2), ("BoolQ", "dev32"): (32, 32, 2), ("CB", "train"): (32, 32, 3),
       ("CB", "dev32"): (32, 32, 3), ("COPA", "train"): (64, 32, 2), ("COPA", "dev32"): (64, 32, 2),
       ("MultiRC", "train"): (154, 154, 1), ("MultiRC", "dev32"): (167, 167, 1), ("ReCoRD", "train"): (397, 32, 1),
       ("ReCoRD", "dev32"): (369, 32, 1), ("RTE", "train"): (32, 32, 2), ("RTE", "dev32"): (32, 32, 2),
       ("WiC", "train"): (32, 32, 2), ("WiC", "dev32"): (32, 32, 2), ("WSC", "train"): (32, 32, 1),
       ("WSC", "dev32"): (32, 32, 2)}


@needs_data
@pytest.mark.parametrize("name", ["BoolQ", "CB", "COPA", "MultiRC", "ReCoRD", "RTE", "WiC", "WSC"])
@pytest.mark.parametrize("split", ["train", "dev32"])
def test_real_fewglue_all_families(name, split):
    task = get_task(name)
    recs, desc = D.load_records(task, split, fewglue_dir=FG)
    assert len(recs) == 32 and desc.endswith(f"{name}/{split}.jsonl")
    n_enc, n_gen, n_few = FEW[(name, split)]
    for fam in FAMILIES:
        insts = task.instances(recs, fam, desc)
        assert len(insts) == (n_enc if fam == "encoder" else n_gen) and all(i.label is not None for i in insts)
    assert len(D.few_shot(recs, 1, seed=0, label_key="label")) == n_few


@needs_data
def test_real_test_split_unlabeled():
    recs, desc = D.load_records("CB", "test", data_dir=SG)
    insts = get_task("CB").instances(recs, "encoder", desc)
    assert len(insts) == 250 and all(i.label is None for i in insts)
    with pytest.raises(D.DataError, match=r"CB: 250 instance\(s\) have no gold label \(test split\?\)"):
        get_task("CB").evaluate(insts, [0] * 250, "encoder")
    sub = get_task("CB").submission(insts, [0] * 250, "encoder")
    assert sub[0] == {"idx": 0, "label": "entailment"}


@needs_data
def test_real_axg_pairs_are_consecutive():
    recs, desc = D.load_records("AX-g", "val", data_dir=SG)
    insts = get_task("AX-g").instances(recs, "encoder", desc)
    pairs = Counter(i.meta["pair"] for i in insts)
    assert set(pairs.values()) == {2} and len(pairs) == 178
    by_pair = {}
    for i in insts:
        by_pair.setdefault(i.meta["pair"], set()).add(i.text_b)
    assert all(len(h) == 1 for h in by_pair.values())  # the two members share the hypothesis


# ----------------------------------------------------------------------------- validation
def rec(**kw):
    base = {"premise": "It rained.", "hypothesis": "It was wet.", "label": "entailment", "idx": 0,
            "__file__": "cb.jsonl", "__line__": 17}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_label_outside_set():
    with pytest.raises(D.DataError, match=r"cb\.jsonl:17: label 'maybe' not in \('entailment', 'contradiction', 'neutral'\)"):
        get_task("CB").instances([rec(label="maybe")], "encoder", "cb.jsonl")
    with pytest.raises(D.DataError, match=r"label 2 not in \(0, 1\)"):
        get_task("COPA").instances([{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause",
                                     "label": 2}], "seq2seq", "copa")


def test_missing_field_and_wrong_type():
    with pytest.raises(D.DataError, match=r"cb\.jsonl:17: field 'hypothesis' missing"):
        get_task("CB").instances([rec(hypothesis=None)], "decoder", "cb.jsonl")
    with pytest.raises(D.DataError, match=r"field 'premise' has value 3, expected str"):
        get_task("RTE").instances([rec(premise=3)], "encoder", "x")
    bad_mrc = {"idx": 0, "passage": {"text": "T", "questions": [{"question": "Q", "answers": [{"idx": 0}]}]},
               "__file__": "m.jsonl", "__line__": 4}
    with pytest.raises(D.DataError, match=r"m\.jsonl:4: passage\.questions\[0\]\.answers\[0\]: field 'text' missing"):
        get_task("MultiRC").instances([bad_mrc], "encoder", "m.jsonl")


def test_label_missing_on_some_records_and_empty():
    with pytest.raises(D.DataError, match=r"cb\.jsonl:18: field 'label' missing"):
        get_task("CB").instances([rec(), rec(label=None, __line__=18)], "encoder", "cb.jsonl")
    with pytest.raises(D.DataError, match="empty.jsonl: no records for task CB"):
        get_task("CB").instances([], "encoder", "empty.jsonl")
    with pytest.raises(D.DataError, match="family 'bert' unknown"):
        get_task("CB").instances([rec()], "bert", "x")


@pytest.mark.parametrize("raw,want", [(True, 1), (False, 0), ("True", 1), ("false", 0), (1, 1), (0, 0)])
def test_bool_labels_normalised(raw, want):
    r = {"question": "q", "passage": "p", "label": raw}
    assert get_task("BoolQ").instances([r], "encoder", "x")[0].label == want
    with pytest.raises(D.DataError, match=r"x:1: label 'yes' not in \('False', 'True'\)"):
        get_task("BoolQ").instances([dict(r, label="yes")], "encoder", "x")


def test_get_task_case_insensitive():
    assert get_task("cb") is TASKS["CB"] and get_task("axb") is TASKS["AX-b"] and get_task("ax-G") is TASKS["AX-g"]
    assert get_task("MULTIRC").name == "MultiRC" and get_task("record").choice and get_task("copa").choice
    with pytest.raises(D.DataError, match="unknown task 'glue'; known tasks: BoolQ, CB, COPA"):
        get_task("glue")


# ----------------------------------------------------------------------------- formats
def test_formats_cb_rte():
    cb = get_task("CB")
    s2s = cb.instances([rec()], "seq2seq", "x")[0]
    assert s2s.source == "cb hypothesis: It was wet. premise: It rained." and s2s.candidates == cb.labels
    dec = cb.instances([rec()], "decoder", "x")[0]
    assert dec.source == "It rained.\nQuestion: It was wet. True, False, or Neither?\nAnswer:"
    assert dec.candidates == (" True", " False", " Neither") and dec.label == 0
    rte = get_task("RTE").instances([rec(label="not_entailment")], "seq2seq", "x")[0]
    assert rte.source == "rte sentence1: It rained. sentence2: It was wet." and rte.label == 1


def test_formats_wsc_wic_copa():
    wsc = {"text": "Tom thanked Bill because he helped .", "target": {"span1_index": 2, "span1_text": "Bill",
           "span2_index": 4, "span2_text": "he"}, "label": True, "idx": 3}
    enc, s2s = (get_task("WSC").instances([wsc], f, "x")[0] for f in ("encoder", "seq2seq"))
    assert enc.text_b == 'Does "he" refer to "Bill"?' and enc.label == 1
    assert s2s.source == "wsc: Tom thanked #Bill# because *he* helped ."
    wic = {"word": "bank", "sentence1": "A river bank.", "sentence2": "A bank loan.", "label": False}
    assert get_task("WiC").instances([wic], "encoder", "x")[0].text_a == "bank: A river bank."
    copa = {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "I laughed.", "question": "cause", "label": 0, "idx": 5}
    enc = get_task("COPA").instances([copa], "encoder", "x")
    assert [(i.uid, i.text_a, i.text_b, i.label, i.group) for i in enc] == [
        ("5-c0", "The man fell. What was the cause?", "He slipped.", 1, "5"),
        ("5-c1", "The man fell. What was the cause?", "I laughed.", 0, "5")]
    dec = get_task("COPA").instances([copa], "decoder", "x")[0]
    assert dec.source == "The man fell because" and dec.candidates == (" he slipped.", " I laughed.")
    s2s = get_task("COPA").instances([copa], "seq2seq", "x")[0]
    assert s2s.candidates == ("choice1", "choice2") and s2s.source.startswith("copa choice1: He slipped. choice2:")


RECORD = {"idx": 1, "passage": {"text": "Ann met Bob in Paris.\n@highlight\nBob left",
                                "entities": [{"start": 0, "end": 2}, {"start": 8, "end": 10},
                                             {"start": 15, "end": 19}, {"start": 8, "end": 10}]},
          "qas": [{"query": "Later @placeholder went home.", "idx": 7,
                   "answers": [{"start": 8, "end": 10, "text": "Bob"}]}]}


def test_formats_record():
    task = get_task("ReCoRD")
    enc = task.instances([RECORD], "encoder", "r")
    assert [i.text_b for i in enc] == ["Later Ann went home.", "Later Bob went home.", "Later Paris went home."]
    assert [i.label for i in enc] == [0, 1, 0] and {i.group for i in enc} == {"q7"} and enc[0].uid == "q7-c0"
    assert enc[0].text_a == "Ann met Bob in Paris. Bob left" and enc[1].meta["answers"] == ["Bob"]
    s2s = task.instances([RECORD], "seq2seq", "r")[0]
    assert s2s.source.startswith("record query: Later @placeholder went home. entities: Ann, Bob, Paris passage:")
    assert s2s.candidates == ("Ann", "Bob", "Paris") and s2s.label == 1
    dec = task.instances([RECORD], "decoder", "r")[0]
    assert dec.source.endswith("Bob left\nLater") and dec.candidates[1] == " Bob went home."


# ----------------------------------------------------------------------------- evaluation
def inst(label, group=None, **meta):
    return Instance(str(len(meta)), "a", None, "", (), label, group, meta)


def test_evaluate_cb_perfect_and_wrong():
    cb = get_task("CB")
    insts = [inst(g) for g in (0, 1, 2, 2)]
    assert cb.evaluate(insts, [0, 1, 2, 2], "encoder") == {"accuracy": 1.0, "f1_macro": 1.0, "score": 1.0, "n": 4.0}
    res = cb.evaluate(insts, [0, 1, 2, -1], "seq2seq")  # an unmatched T5 output counts as wrong
    # F1: classes 0 and 1 exact, class 2 precision 1 recall 1/2 -> 2/3; macro (1 + 1 + 2/3) / 3 = 8/9
    assert res["accuracy"] == 0.75 and res["f1_macro"] == pytest.approx(8 / 9)
    assert res["score"] == pytest.approx((0.75 + 8 / 9) / 2)
    with pytest.raises(ValueError, match="3 predictions for 4 instances"):
        cb.evaluate(insts, [0, 1, 2], "encoder")


def test_evaluate_copa_group_argmax():
    copa = get_task("COPA")
    recs = [{"premise": "p", "choice1": "a", "choice2": "b", "question": "effect", "label": lab, "idx": i}
            for i, lab in enumerate([0, 1, 1])]
    insts = copa.instances(recs, "encoder", "x")
    scores = [2.0, -1.0, 0.5, 0.7, 3.0, 1.0]  # record 0 right, 1 right, 2 wrong
    res = copa.evaluate(insts, scores, "encoder")
    assert res["accuracy"] == pytest.approx(2 / 3) and res["n"] == 3
    assert copa.submission(insts, scores, "encoder") == [{"idx": 0, "label": 0}, {"idx": 1, "label": 1},
                                                         {"idx": 2, "label": 0}]
    gen = copa.instances(recs, "decoder", "x")
    assert copa.evaluate(gen, [0, 1, 0], "decoder")["accuracy"] == pytest.approx(2 / 3)


MRC = {"idx": 4, "passage": {"text": "T", "questions": [
    {"question": "Q1", "idx": 10, "answers": [{"text": "a", "idx": 0, "label": 1}, {"text": "b", "idx": 1, "label": 0}]},
    {"question": "Q2", "idx": 11, "answers": [{"text": "c", "idx": 2, "label": True}, {"text": "d", "idx": 3, "label": False},
                                               {"text": "e", "idx": 4, "label": 1}]}]}}


def test_evaluate_multirc_em_groups():
    task = get_task("MultiRC")
    insts = task.instances([MRC], "encoder", "m")
    assert [i.uid for i in insts][:2] == ["p4-q10-a0", "p4-q10-a1"] and insts[2].group == "p4-q11"
    assert insts[0].text_a == "Q1 a" and insts[0].text_b == "T"
    res = task.evaluate(insts, [1, 0, 1, 0, 0], "encoder")  # question 10 exact, question 11 not
    assert res["em"] == 0.5 and res["n"] == 2
    assert res["f1a"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert res["score"] == pytest.approx((res["em"] + res["f1a"]) / 2)
    assert task.evaluate(insts, [1, 0, 1, 0, 1], "seq2seq")["em"] == 1.0


def test_submission_multirc_nesting():
    task = get_task("MultiRC")
    insts = task.instances([MRC], "seq2seq", "m")
    sub = task.submission(insts, [1, 0, 1, -1, 1], "seq2seq")
    assert sub == [{"idx": 4, "passage": {"questions": [
        {"idx": 10, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]},
        {"idx": 11, "answers": [{"idx": 2, "label": 1}, {"idx": 3, "label": 0}, {"idx": 4, "label": 1}]}]}}]
    assert json.loads(json.dumps(sub)) == sub


def test_evaluate_record_both_families():
    task = get_task("ReCoRD")
    enc = task.instances([RECORD], "encoder", "r")
    assert task.evaluate(enc, [0.1, 0.9, 0.3], "encoder") == {"f1": 1.0, "em": 1.0, "score": 1.0, "n": 1.0}
    assert task.evaluate(enc, [0.1, 0.0, 0.3], "encoder")["em"] == 0.0
    assert task.submission(enc, [0.1, 0.0, 0.3], "encoder") == [{"idx": 7, "label": "Paris"}]
    gen = task.instances([RECORD], "seq2seq", "r")
    assert task.evaluate(gen, [1], "seq2seq")["f1"] == 1.0
    assert task.evaluate(gen, [-1], "seq2seq")["f1"] == 0.0
    assert task.submission(gen, [1], "seq2seq") == [{"idx": 7, "label": "Bob"}]


def test_evaluate_axg_parity_and_axb():
    axg = get_task("AX-g")
    recs = [{"premise": "p", "hypothesis": "h", "label": "entailment", "idx": i, "pair_id": 100 + 2 * i}
            for i in range(4)]
    insts = axg.instances(recs, "encoder", "g")
    res = axg.evaluate(insts, [0, 0, 0, 1], "encoder")  # pair 0 same, pair 1 differs
    assert res["gender_parity"] == 0.5 and res["accuracy"] == 0.75 and res["score"] == pytest.approx(0.625)
    assert axg.evaluate(insts[:3], [0, 0, 0], "encoder")["gender_parity"] == 1.0  # incomplete pair skipped
    axb = get_task("AX-b")
    recs = [{"sentence1": "a", "sentence2": "b", "label": lab, "idx": str(i)}
            for i, lab in enumerate(["entailment", "not_entailment"] * 2)]
    insts = axb.instances(recs, "decoder", "b")
    assert axb.evaluate(insts, [0, 1, 0, 1], "decoder")["matthews"] == 1.0
    assert axb.main_metric == "matthews"
    assert axb.submission(insts, [0, 1, 1, 1], "decoder")[2] == {"idx": "2", "label": "not_entailment"}


def test_submission_cb_and_bool_tasks():
    cb = get_task("CB")
    insts = cb.instances([rec(idx=i) for i in range(3)], "encoder", "x")
    assert cb.submission(insts, [0, 1, 2], "encoder") == [
        {"idx": 0, "label": "entailment"}, {"idx": 1, "label": "contradiction"}, {"idx": 2, "label": "neutral"}]
    bq = get_task("BoolQ")
    insts = bq.instances([{"question": "q", "passage": "p", "label": True, "idx": 9}], "decoder", "x")
    assert bq.submission(insts, [1], "decoder") == [{"idx": 9, "label": "true"}]


def test_invalid_generated_answer_is_a_class_of_its_own():
    """Before: an invalid answer (-1) counted as class (gold + 1) % k, a false positive of another class."""
    cb = get_task("CB")
    insts = cb.instances([{"premise": "p", "hypothesis": "h", "label": lab, "idx": i}
                          for i, lab in enumerate(["entailment", "contradiction", "neutral"])], "seq2seq", "x")
    res = cb.evaluate(insts, [0, -1, 2], "seq2seq")
    # class 0 and 2: F1 1; class 1: never predicted, F1 0; the invalid answer is nobody's false positive
    assert res["accuracy"] == pytest.approx(2 / 3) and res["f1_macro"] == pytest.approx(2 / 3)
    axb = get_task("AX-b")
    rows = [{"sentence1": "a", "sentence2": "b", "label": lab, "idx": i}
            for i, lab in enumerate(["entailment", "not_entailment", "entailment", "not_entailment"])]
    from resprompt.tasks.metrics import matthews

    res = axb.evaluate(axb.instances(rows, "seq2seq", "x"), [0, 1, -1, 1], "seq2seq")
    assert res["matthews"] == pytest.approx(matthews([0, 1, 2, 1], [0, 1, 0, 1]))
    assert res["matthews"] != pytest.approx(matthews([0, 1, 1, 1], [0, 1, 0, 1]))


def test_keep_ends_drops_the_middle():
    from resprompt.tasks.features import keep_ends

    assert keep_ends(list(range(10)), 10) == list(range(10))
    assert keep_ends(list(range(10)), 5) == [0, 1, 7, 8, 9]
    assert keep_ends(list(range(10)), 4) == [0, 1, 8, 9]
    assert keep_ends([1, 2, 3], 1) == [3]


def test_seq2seq_source_too_long_keeps_the_question(tiny_model_dirs):
    """Before: T5 sources were cut from the right, so BoolQ's question (after a long passage) was lost."""
    from transformers import AutoTokenizer

    from resprompt.tasks.features import featurize

    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["t5"])
    rec = {"question": "is the sky green", "passage": "word " * 400, "label": True, "idx": 0}
    inst = get_task("BoolQ").instances([rec], "seq2seq", "x")
    feat = featurize(inst, tok, "seq2seq", 48, train=True)[0]
    text = tok.decode(feat.input_ids, skip_special_tokens=True)
    assert len(feat.input_ids) == 48 and text.startswith("boolq passage") and text.endswith("question : is the sky green")
    assert feat.input_ids[-1] == tok(rec["question"])["input_ids"][-1]  # the end-of-source token survives


def test_torch_and_numpy_integer_predictions_score_as_ints():
    """Before: a torch integer (no numbers.Integral) counted as an invalid answer: accuracy 0, labels[0] written."""
    import numpy as np
    import torch

    task = get_task("RTE")
    insts = task.instances([rec(label="entailment"), rec(label="not_entailment"), rec(label="entailment")],
                           "encoder", "rte.jsonl")
    golds = [i.label for i in insts]
    for preds in (golds, list(np.array(golds)), list(torch.tensor(golds)), torch.tensor(golds)):
        assert task.evaluate(insts, preds, "encoder")["accuracy"] == 1.0
        assert [r["label"] for r in task.submission(insts, preds, "encoder")] == [
            "entailment", "not_entailment", "entailment"]
    # bools, floats and non-scalar tensors are no class ids: wrong answers, as before
    for bad in ([True, False, True], [0.0, 1.0, 0.0], list(torch.tensor(golds, dtype=torch.bool)),
                [torch.tensor([g]) for g in golds]):
        assert task.evaluate(insts, bad, "encoder")["accuracy"] == 0.0


def _record(idx, ents, answers, query_idx=None, line=1):
    text = "Alice met Bob in Paris. " + " ".join(ents)
    spans = [{"start": text.index(e), "end": text.index(e) + len(e) - 1} for e in ents]
    q = {"query": "@placeholder went home.", "answers": [{"text": a} for a in answers]}
    if query_idx is not None:
        q["idx"] = query_idx
    return {"idx": idx, "passage": {"text": text, "entities": spans}, "qas": [q],
            "__file__": "rec.jsonl", "__line__": line}


def test_record_queries_without_idx_stay_apart_across_passages():
    """Before: each passage's first query fell back to id 0: the encoder merged them into one group."""
    task = get_task("ReCoRD")
    recs = [_record(0, ["Alice", "Bob"], ["Alice"], line=1), _record(1, ["Alice", "Bob"], ["Bob"], line=2)]
    for family in FAMILIES:
        insts = task.instances(recs, family, "rec.jsonl")
        assert len({i.group or i.uid for i in insts}) == 2
    insts = task.instances(recs, "encoder", "rec.jsonl")
    golds = [i.label for i in insts]  # the oracle: every query right
    assert task.evaluate(insts, golds, "encoder")["n"] == 2.0
    assert len(task.submission(insts, golds, "encoder")) == 2


def test_record_passage_without_entities_and_answers_matching_none_are_refused():
    from resprompt.tasks.features import featurize
    from resprompt.tasks.records import DataError

    task = get_task("ReCoRD")
    with pytest.raises(DataError, match=r"rec.jsonl:3: passage.entities is empty"):
        task.instances([_record(0, [], ["Alice"], line=3)], "decoder", "rec.jsonl")
    # an answer that matches no entity (case differs): decoder training used the last entity as its target,
    # seq2seq dropped the labels of the whole batch
    insts = task.instances([_record(0, ["Alice", "Bob"], ["alice"], line=4)], "decoder", "rec.jsonl")
    with pytest.raises(DataError, match=r"rec.jsonl:4: qas\[0\]: no gold candidate to train towards \(answers "
                                        r"\['alice'\] match none of the entities\)"):
        featurize(insts, _Tok(), "decoder", 64, train=True)
    assert featurize(insts, _Tok(), "decoder", 64, train=False)  # scoring it is fine: F1 against the answer


class _Tok:
    """Whitespace tokenizer: enough for featurize."""
    bos_token_id = 1

    def __call__(self, text, *a, **k):
        return {"input_ids": [2 + len(w) for w in text.split()]}


def test_axg_without_a_complete_pair_leaves_parity_out():
    """Before: no complete minimal pair scored gender parity 0.0 and halved the score of perfect answers."""
    task = get_task("AX-g")
    insts = task.instances([rec(idx=0, label="entailment"), rec(idx=2, label="not_entailment")], "encoder", "axg")
    res = task.evaluate(insts, [0, 1], "encoder")
    assert "gender_parity" not in res and res["score"] == res["accuracy"] == 1.0
    pair = task.instances([rec(idx=0, label="entailment"), rec(idx=1, label="entailment")], "encoder", "axg")
    assert task.evaluate(pair, [0, 0], "encoder")["gender_parity"] == 1.0
