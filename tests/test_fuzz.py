"""Property-based tests of every reader: arbitrary bytes and near-misses give one of our errors (with a
location), never a traceback from below; valid inputs round-trip. Bounded so the fast tier stays fast."""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resprompt.formats import read_prompt
from resprompt.io import META_FILE, PEFT_CONFIG, PEFT_WEIGHTS, PROMPT_FILE, PromptFileError
from resprompt.tasks.data import DataError, read_csv, read_jsonl
from resprompt.tasks.superglue import TASKS
from resprompt.training.runconfig import ConfigError, load_yaml, split_settings

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_LEAF = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, allow_subnormal=False) | st.text(max_size=8)
JSON = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                     max_size=3), max_leaves=8)


@FUZZ
@given(data=st.binary(max_size=300))
def test_jsonl_reader_on_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "f.jsonl"
    p.write_bytes(data)
    try:
        rows = read_jsonl(p)
    except DataError as e:
        assert str(e).startswith(str(p))
        return
    assert all(isinstance(r, dict) and r["__file__"] == str(p) for r in rows)


@FUZZ
@given(records=st.lists(st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=5),
                                        JSON_LEAF | st.text(alphabet="a\u2028\u0085\r\"\\", max_size=4),
                                        max_size=4), max_size=5))
def test_jsonl_round_trip(tmp_path, records):
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    got = [{k: v for k, v in r.items() if not k.startswith("__")} for r in read_jsonl(p)]
    assert got == records


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('ab,\t"\n\r x')), max_size=120), suffix=st.sampled_from([".csv", ".tsv"]))
def test_csv_and_tsv_readers_on_near_misses(tmp_path, text, suffix):
    p = tmp_path / f"f{suffix}"
    p.write_text(text, encoding="utf-8")
    try:
        rows = read_csv(p)
    except DataError as e:
        assert str(e).startswith(f"{p}:") or str(e).startswith(f"{p}: ")
        return
    assert all(isinstance(r["__line__"], int) and r["__line__"] >= 2 for r in rows)


@FUZZ
@given(rows=st.lists(st.lists(st.text(alphabet=string.ascii_letters + ' "', min_size=1, max_size=6), min_size=2,
                              max_size=2), min_size=1, max_size=4))
def test_tsv_round_trip(tmp_path, rows):
    p = tmp_path / "r.tsv"
    p.write_text("a\tb\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    assert [[r["a"], r["b"]] for r in read_csv(p)] == rows


@FUZZ
@given(name=st.sampled_from(sorted(TASKS)), family=st.sampled_from(["encoder", "seq2seq", "decoder"]),
       record=st.dictionaries(st.sampled_from(["premise", "hypothesis", "label", "idx", "question", "passage",
                                               "word", "sentence1", "sentence2", "text", "target", "choice1",
                                               "choice2", "qas", "entities", "pair_id"]), JSON, max_size=8))
def test_record_validators_on_near_misses(name, family, record):
    task = TASKS[name]
    try:
        task.instances([{**record, "__file__": "f.jsonl", "__line__": 3}], family, "f.jsonl")
    except DataError as e:
        assert "f.jsonl" in str(e)


@pytest.mark.parametrize("text", ["~: 1\n", "3: x\n", "lr: 0.3\nnull: 2\n"])
def test_yaml_config_whose_key_is_not_text(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="a setting's name must be text, got"):
        load_yaml(str(p))


@FUZZ
@given(text=st.text(max_size=80))
def test_yaml_config_on_arbitrary_text(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        settings_ = load_yaml(str(p))
        split_settings(settings_)
    except ConfigError as e:
        assert str(e)
    except ValueError as e:  # a prompt-config value: ResidualPromptConfig names field and value
        assert "ResidualPromptConfig." in str(e) or "unknown task" in str(e), e


@FUZZ
@given(settings_=st.dictionaries(st.sampled_from(["lr", "seed", "epochs", "max_grad_norm", "warmup_steps",
                                                  "prompt_length", "method", "bottleneck", "dropout", "task",
                                                  "report_to", "weight_decay"]), JSON_LEAF, max_size=4))
def test_settings_never_crash(settings_):
    try:
        split_settings(settings_)
    except ValueError as e:  # ConfigError or the prompt config's ValueError: both name the setting
        assert any(k.replace("_", "-") in str(e) or k in str(e) for k in [*settings_, "reparam", "num_tokens"]), e


@FUZZ
@given(kind=st.sampled_from(["ours", "peft"]), meta=JSON, weights=st.binary(max_size=64))
def test_prompt_folders_with_garbage(tmp_path_factory, kind, meta, weights):
    folder = tmp_path_factory.mktemp("p")
    cfg, tensors = (META_FILE, PROMPT_FILE) if kind == "ours" else (PEFT_CONFIG, PEFT_WEIGHTS)
    (folder / cfg).write_text(json.dumps(meta))
    (folder / tensors).write_bytes(weights)
    with pytest.raises(PromptFileError, match=str(folder)):
        read_prompt(folder)
