"""SuperGLUE metrics on small hand-worked examples (expected values derived in comments)."""

import math
import warnings

import pytest

from resprompt.tasks.metrics import (
    accuracy,
    f1_macro,
    gender_parity,
    matthews,
    multirc_scores,
    normalize_answer,
    record_scores,
)

# ---------------------------------------------------------------- accuracy


def test_accuracy_hand_worked():
    # right at positions 0 and 2 only -> 2 / 4
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)
    assert accuracy([2, 2], [2, 2]) == 1.0
    assert accuracy([0], [1]) == 0.0


def test_accuracy_returns_plain_float():
    assert type(accuracy([1, 0], [1, 1])) is float


# ---------------------------------------------------------------- macro F1 (CB)


def test_f1_macro_three_classes_one_never_predicted():
    golds = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 0, 0]
    # class 0: TP=1 (i0), FP=2 (i4, i5), FN=1 (i1): P=1/3, R=1/2, F1 = 2*(1/6)/(5/6) = 0.4
    # class 1: TP=2 (i2, i3), FP=1 (i1), FN=0:      P=2/3, R=1,   F1 = 2*(2/3)/(5/3) = 0.8
    # class 2: never predicted, TP=0:                              F1 = 0
    # macro = (0.4 + 0.8 + 0) / 3 = 0.4
    score = f1_macro(preds, golds, labels=[0, 1, 2])
    assert score == pytest.approx(0.4)
    assert type(score) is float


def test_f1_macro_class_absent_everywhere_counts_as_zero():
    # classes 0 and 1 perfect (F1 = 1 each), class 2 neither predicted nor gold -> 0
    # macro = (1 + 1 + 0) / 3 = 2/3
    assert f1_macro([0, 1], [0, 1], labels=[0, 1, 2]) == pytest.approx(2 / 3)
    # with only the labels that occur it is perfect
    assert f1_macro([0, 1], [0, 1], labels=[0, 1]) == pytest.approx(1.0)


def test_f1_macro_empty_label_set():
    with pytest.raises(ValueError, match="labels is empty; f1_macro needs the label set to average over"):
        f1_macro([0], [0], labels=[])


# ---------------------------------------------------------------- MultiRC


def test_multirc_two_questions():
    # question q1 has 3 options, q2 has 2
    qids = ["q1", "q1", "q1", "q2", "q2"]
    golds = [1, 0, 1, 0, 1]
    preds = [1, 0, 0, 0, 1]
    # pooled over the 5 options: TP=2 (i0, i4), FP=0, FN=1 (i2)
    # P = 1, R = 2/3, F1a = 2*1*(2/3) / (1 + 2/3) = (4/3) / (5/3) = 0.8
    # EM: q1 misses option i2 -> 0; q2 all right -> 1; EM = 1/2
    scores = multirc_scores(preds, golds, qids)
    assert set(scores) == {"f1a", "em"}
    assert scores["f1a"] == pytest.approx(0.8)
    assert scores["em"] == pytest.approx(0.5)
    assert all(type(v) is float for v in scores.values())


def test_multirc_non_contiguous_question_ids_and_false_positive():
    qids = [7, 8, 7, 8]
    golds = [0, 1, 0, 1]
    preds = [1, 1, 0, 1]
    # pooled: TP=2 (i1, i3), FP=1 (i0), FN=0 -> P=2/3, R=1, F1a = (4/3) / (5/3) = 0.8
    # EM: question 7 (i0, i2) has i0 wrong -> 0; question 8 (i1, i3) right -> 1; EM = 1/2
    scores = multirc_scores(preds, golds, qids)
    assert scores["f1a"] == pytest.approx(0.8)
    assert scores["em"] == pytest.approx(0.5)


def test_multirc_no_positives_anywhere():
    # no positive gold or prediction: F1a is 0 (zero_division=0); every question exact -> EM = 1
    scores = multirc_scores([0, 0, 0], [0, 0, 0], ["a", "a", "b"])
    assert scores == {"f1a": 0.0, "em": 1.0}


# ---------------------------------------------------------------- ReCoRD


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The  Quick, brown fox!  ", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theater Anthem", "theater anthem"),  # articles only as whole words
        ("U.S.A.", "usa"),
        ("THE", ""),
        ("tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_record_scores_hand_worked():
    preds = ["The Eiffel Tower!", "a big red car", "Paris"]
    golds = [["Eiffel Tower", "tower"], ["the red car", "car."], ["London"]]
    # q1: "eiffel tower" == "eiffel tower" -> EM 1, F1 1
    # q2: pred "big red car"; vs "red car": overlap 2, P=2/3, R=1, F1=(4/3)/(5/3)=0.8
    #                          vs "car":     overlap 1, P=1/3, R=1, F1=(2/3)/(4/3)=0.5
    #     max F1 = 0.8, EM 0
    # q3: no overlap -> F1 0, EM 0
    # F1 = (1 + 0.8 + 0) / 3 = 0.6, EM = 1/3
    scores = record_scores(preds, golds)
    assert set(scores) == {"f1", "em"}
    assert scores["f1"] == pytest.approx(0.6)
    assert scores["em"] == pytest.approx(1 / 3)
    assert all(type(v) is float for v in scores.values())


def test_record_scores_repeated_tokens_counted_by_multiset():
    # pred "the the cat cat" -> "cat cat"; gold "cat": common = min(2, 1) = 1
    # P = 1/2, R = 1, F1 = 1 / (3/2) = 2/3; EM 0
    scores = record_scores(["the the cat cat"], [["Cat"]])
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["em"] == 0.0


def test_record_scores_best_gold_chosen_per_metric():
    # EM comes from the second gold; F1 from it too (exact -> 1)
    scores = record_scores(["an Obama"], [["Barack Obama", "obama"]])
    assert scores == {"f1": 1.0, "em": 1.0}


def test_record_scores_bad_gold_lists():
    with pytest.raises(ValueError, match=r"gold_answers\[1\]"):
        record_scores(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match=r"gold_answers\[0\] is a string; expected a sequence of answers"):
        record_scores(["a"], ["a"])


# ---------------------------------------------------------------- MCC (AX-b)


def test_matthews_against_formula():
    golds = [1, 0, 0, 0, 1]
    preds = [1, 1, 0, 0, 1]
    # TP=2 (i0, i4), FP=1 (i1), TN=2 (i2, i3), FN=0
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (4 - 0) / sqrt(3 * 2 * 3 * 2) = 4 / 6 = 2/3
    tp, fp, tn, fn = 2, 1, 2, 0
    by_formula = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    score = matthews(preds, golds)
    assert score == pytest.approx(2 / 3)
    assert score == pytest.approx(by_formula)
    assert type(score) is float


def test_matthews_extremes_and_undefined():
    assert matthews([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert matthews([1, 0], [1, 0]) == pytest.approx(1.0)
    # constant predictions: a zero factor in the denominator -> 0.0, no warning escapes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert matthews([1, 1, 1], [1, 0, 1]) == 0.0
        assert matthews([1, 1], [1, 1]) == 0.0


# ---------------------------------------------------------------- gender parity (AX-g)


def test_gender_parity_three_pairs():
    pair_ids = ["p1", "p2", "p1", "p3", "p2", "p3"]
    preds = [0, 1, 0, 2, 1, 0]
    # p1: (0, 0) same; p2: (1, 1) same; p3: (2, 0) differ -> 2/3
    score = gender_parity(preds, pair_ids)
    assert score == pytest.approx(2 / 3)
    assert type(score) is float


def test_gender_parity_all_and_none():
    assert gender_parity([1, 1, 0, 0], [1, 1, 2, 2]) == 1.0
    assert gender_parity([1, 0, 0, 1], [1, 1, 2, 2]) == 0.0


@pytest.mark.parametrize(
    ("pair_ids", "bad", "count"),
    [
        (["a", "a", "b"], "'b'", 1),
        (["a", "a", "a", "b", "b"], "'a'", 3),
    ],
)
def test_gender_parity_bad_pair_sizes(pair_ids, bad, count):
    with pytest.raises(ValueError, match=f"pair id {bad} has {count} member"):
        gender_parity([0] * len(pair_ids), pair_ids)


# ---------------------------------------------------------------- input validation


_CALLS = {
    "accuracy": lambda a, b: accuracy(a, b),
    "f1_macro": lambda a, b: f1_macro(a, b, labels=[0, 1]),
    "multirc": lambda a, b: multirc_scores(a, b, list(range(len(a)))),
    "matthews": lambda a, b: matthews(a, b),
    "gender_parity": lambda a, b: gender_parity(a, b),
}


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_length_mismatch(name):
    with pytest.raises(ValueError, match=r"different lengths: preds=3, (golds|pair_ids)=2"):
        _CALLS[name]([0, 1, 0], [0, 1])


@pytest.mark.parametrize("name", sorted(_CALLS))
def test_empty_inputs(name):
    with pytest.raises(ValueError, match="preds is empty; a metric needs at least one example"):
        _CALLS[name]([], [])


def test_multirc_question_ids_length_mismatch():
    with pytest.raises(ValueError, match="question_ids=1"):
        multirc_scores([0, 1], [0, 1], ["q"])


def test_record_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="different lengths: pred_texts=2, gold_answers=1"):
        record_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="pred_texts is empty; a metric needs at least one example"):
        record_scores([], [])
