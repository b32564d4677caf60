"""Saving, loading, resuming, corrupt files, mismatched backbones and PEFT interop."""

import json

import pytest
import torch

import resprompt
from conftest import batch, tiny_bert, tiny_gpt2, tiny_llama, tiny_t5
from resprompt import PromptFileError, ResidualPromptConfig, ResidualPromptModel, import_peft_prompt
from resprompt.io import META_FILE, PROMPT_FILE, embedding_fingerprint

ROWS = [[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]]


def _trained(backbone, **kw):
    torch.manual_seed(3)
    m = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=4, bottleneck=8, **kw)).eval()
    with torch.no_grad():
        for p in m.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def test_metadata_records_backbone_and_method(tmp_path):
    m = _trained(tiny_bert())
    m.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / META_FILE).read_text())
    assert meta["num_tokens"] == 4 and meta["hidden_size"] == 32 and meta["vocab_size"] == 99
    assert meta["config"]["reparam"] == "residual" and meta["library_version"] == resprompt.__version__
    assert meta["head"] == "classifier"
    assert meta["embedding_fingerprint"] == embedding_fingerprint(tiny_bert().get_input_embeddings())
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [PROMPT_FILE, META_FILE]


def test_other_hidden_size_refused(tmp_path):
    _trained(tiny_gpt2()).save_pretrained(tmp_path / "p")
    import transformers

    other = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=99, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(PromptFileError, match=r"hidden size 32 \(unknown\), this backbone has 16"):
        ResidualPromptModel.from_pretrained(other, tmp_path / "p")


def test_other_weights_refused_unless_allowed(tmp_path):
    saved = _trained(tiny_gpt2())
    saved.save_pretrained(tmp_path / "p")
    torch.manual_seed(123)
    other = tiny_gpt2()
    with torch.no_grad():
        other.get_input_embeddings().weight.add_(0.5)
    with pytest.raises(PromptFileError, match=r"embedding_fingerprint '[0-9a-f]{32}' of the prompt's backbone .* "
                                              r"differs from this backbone's .*pass allow_mismatch=True"):
        ResidualPromptModel.from_pretrained(other, tmp_path / "p")
    m = ResidualPromptModel.from_pretrained(other, tmp_path / "p", allow_mismatch=True)
    assert m.is_folded and torch.equal(m.fold(), saved.fold())


def test_corrupt_and_missing_files(tmp_path):
    _trained(tiny_gpt2()).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / PROMPT_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(PromptFileError, match=r"prompt\.safetensors: not a readable safetensors file"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "p")
    (tmp_path / "p" / META_FILE).write_text("{not json")
    with pytest.raises(PromptFileError, match=r"resprompt_config\.json: not valid JSON"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "p")
    with pytest.raises(PromptFileError, match="nope: prompt folder not found"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptFileError, match=r"empty: neither a resprompt prompt \(resprompt_config\.json\) "
                                              r"nor a PEFT adapter \(adapter_config\.json\)"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "empty")


def test_prompt_brings_its_own_label_count(tmp_path):
    """A 3-label prompt on a backbone loaded with 2 labels scores 3 classes, as on a 3-label backbone:
    the head is the prompt's (serving CB and RTE prompts from one backbone needs this)."""
    _trained(tiny_bert(num_labels=3)).save_pretrained(tmp_path / "p")
    ids, mask = batch(ROWS)
    on3 = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=3), tmp_path / "p")(ids, mask).logits
    on2 = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), tmp_path / "p")(ids, mask)
    assert on2.logits.shape == (2, 3) and torch.allclose(on2.logits, on3, atol=1e-6)
    loaded = ResidualPromptModel.from_pretrained(tiny_bert(num_labels=2), tmp_path / "p")
    loss = loaded(ids, mask, labels=torch.tensor([2, 0])).loss
    assert torch.isfinite(loss) and loss > 0


def test_crash_while_saving_leaves_previous_prompt_intact(tmp_path, monkeypatch):
    m = _trained(tiny_gpt2())
    m.save_pretrained(tmp_path / "p")
    before = (tmp_path / "p" / PROMPT_FILE).read_bytes()
    import resprompt.formats as export

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_json", boom)
    with torch.no_grad():
        m.prompt_encoder.embedding.add_(1.0)
    with pytest.raises(RuntimeError, match="disk full"):
        m.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / PROMPT_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary folder left


@pytest.mark.parametrize("kw", [{}, {"shared": False, "num_blocks": 2}, {"reparam": "lstm"}])
def test_trainable_state_round_trip(tmp_path, kw):
    m = _trained(tiny_bert(), **kw)
    m.save_trainable(tmp_path / "t")
    fresh = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=4, bottleneck=8, **kw))
    assert not torch.equal(fresh.fold(), m.fold())
    fresh.load_trainable(tmp_path / "t")
    assert any(k.startswith("head.") for k in m.state_dict())
    for k, v in m.state_dict().items():
        if k.startswith(("prompt_encoder.", "head.")):
            assert torch.equal(fresh.state_dict()[k], v), k
    other_cfg = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=4, bottleneck=9))
    with pytest.raises(PromptFileError, match="prompt config differs from the model's: .*'bottleneck': 8"):
        other_cfg.load_trainable(tmp_path / "t")


# ---------------------------------------------------------------------------------------------- PEFT
def _peft_logits(backbone, path, ids, mask, **kw):
    from peft import PeftModel

    pm = PeftModel.from_pretrained(backbone, str(path)).eval()
    with torch.no_grad():
        return pm, pm(input_ids=ids, attention_mask=mask, **kw).logits


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "t5"])
def test_stock_peft_loads_our_export_with_same_logits(tmp_path, name):
    build = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama, "t5": tiny_t5}[name]
    m = _trained(build(), placement="prefix")
    m.save_pretrained(tmp_path / "peft", format="peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 4
    ids, mask = batch(ROWS)
    kw = {"decoder_input_ids": torch.tensor([[0, 5], [0, 6]])} if name == "t5" else {}
    with torch.no_grad():
        ours = m(ids, mask, **kw).logits
    pm, theirs = _peft_logits(build(), tmp_path / "peft", ids, mask, **kw)
    if name in ("gpt2", "llama"):
        theirs = theirs[:, 4:]  # PEFT returns logits on prompt slots too
    assert (ours - theirs).abs().max() <= 1e-5
    if name == "bert":
        return
    g_ours = m.generate(ids, mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    if name == "t5":
        g_theirs = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    else:
        # PEFT 0.21's own cached generate() drifts from its own forward after a few tokens on
        # these models, so the reference is greedy decoding with PEFT's forward.
        g_theirs = ids
        with torch.no_grad():
            for _ in range(4):
                nxt = pm(input_ids=g_theirs).logits[:, -1].argmax(-1, keepdim=True)
                g_theirs = torch.cat([g_theirs, nxt], 1)
    assert g_ours.tolist() == g_theirs.tolist()


def test_import_peft_adapter_as_init_and_as_prompt(tmp_path):
    m = _trained(tiny_gpt2(), placement="prefix")
    m.save_pretrained(tmp_path / "peft", format="peft")
    assert torch.allclose(import_peft_prompt(tmp_path / "peft"), m.fold())
    init = ResidualPromptModel(tiny_gpt2(), ResidualPromptConfig(num_tokens=4, init="saved",
                                                                  init_path=str(tmp_path / "peft")))
    assert torch.allclose(init.prompt_encoder.embedding, m.fold())
    loaded = ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "peft")
    assert loaded.placement_mode == "prefix" and torch.allclose(loaded.fold(), m.fold())
    with pytest.raises(ValueError, match=r"shape \(4, 32\), expected \(5, 32\)"):
        ResidualPromptModel(tiny_gpt2(), ResidualPromptConfig(num_tokens=5, init="saved",
                                                               init_path=str(tmp_path / "peft")))


def test_peft_export_of_bert_head_round_trips_through_our_loader(tmp_path):
    m = _trained(tiny_bert(), placement="prefix")
    m.save_pretrained(tmp_path / "peft", format="peft")
    loaded = ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "peft")
    ids, mask = batch(ROWS)
    with torch.no_grad():
        assert (loaded(ids, mask).logits - m(ids, mask).logits).abs().max() <= 1e-5


# ------------------------------------------------------------------- adapters made by stock PEFT
def _stock_peft(backbone, task_type, path, n=4, seed=11):
    """A prompt-tuning adapter as a PEFT user makes it (get_peft_model + save_pretrained), with
    perturbed weights so that nothing matches by accident."""
    from peft import PromptTuningConfig, get_peft_model

    pm = get_peft_model(backbone, PromptTuningConfig(task_type=task_type, num_virtual_tokens=n))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    pm.save_pretrained(str(path))
    return pm.eval()


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_stock_peft_adapter_loads_with_peft_logits(tmp_path, name):
    build = {"bert": tiny_bert, "gpt2": tiny_gpt2}[name]
    pm = _stock_peft(build(), "SEQ_CLS" if name == "bert" else "CAUSAL_LM", tmp_path / "a")
    ids, mask = batch(ROWS)
    with torch.no_grad():
        theirs = pm(input_ids=ids, attention_mask=mask).logits
        ours = ResidualPromptModel.from_pretrained(build(), tmp_path / "a")
        assert ours.placement_mode == "prefix" and ours.num_tokens == 4
        mine = ours(ids, mask).logits
    if name == "gpt2":
        theirs = theirs[:, 4:]  # PEFT returns logits on prompt slots too
    assert (mine - theirs).abs().max() <= 1e-5


def test_stock_peft_t5_adapter_with_two_submodules_loads_as_n_tokens(tmp_path):
    """Before: PEFT's T5 default (num_transformer_submodules=2, prompt_embeddings [2n, d]) loaded as 2n tokens."""
    pm = _stock_peft(tiny_t5(), "SEQ_2_SEQ_LM", tmp_path / "t5")
    cfg = json.loads((tmp_path / "t5" / "adapter_config.json").read_text())
    assert cfg["num_transformer_submodules"] == 2
    ours = ResidualPromptModel.from_pretrained(tiny_t5(), tmp_path / "t5")
    assert ours.num_tokens == 4
    ids, mask = batch(ROWS)
    g_theirs = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    g_ours = ours.generate(ids, mask, max_new_tokens=5, do_sample=False)
    assert g_ours.tolist() == g_theirs.tolist()
    stored = pm.get_prompt(batch_size=1)[0]  # [2n, d]: encoder rows first
    assert torch.allclose(ours.fold(), stored[:4], atol=1e-6)


def test_stock_peft_adapter_as_init_and_import(tmp_path):
    pm = _stock_peft(tiny_gpt2(), "CAUSAL_LM", tmp_path / "a")
    stored = pm.get_prompt(batch_size=1)[0].detach()
    assert torch.allclose(import_peft_prompt(tmp_path / "a"), stored, atol=1e-6)
    init = ResidualPromptModel(tiny_gpt2(), ResidualPromptConfig(num_tokens=4, init="saved",
                                                                  init_path=str(tmp_path / "a")))
    assert torch.allclose(init.prompt_encoder.embedding, stored, atol=1e-6)


def test_saving_another_format_replaces_the_folders_prompt(tmp_path):
    """Before: a PEFT save into a folder holding a resprompt prompt left the old prompt winning on load."""
    old, new = _trained(tiny_gpt2()), _trained(tiny_gpt2(), placement="prefix")
    with torch.no_grad():
        new.prompt_encoder.embedding.add_(1.0)
    old.save_pretrained(tmp_path / "p")
    new.save_pretrained(tmp_path / "p", format="peft")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert torch.allclose(ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "p").fold(), new.fold())
    old.save_pretrained(tmp_path / "p")  # and back: the PEFT files go
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [PROMPT_FILE, META_FILE]
    assert torch.allclose(ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "p").fold(), old.fold())


def test_a_folder_with_both_formats_is_refused(tmp_path):
    _trained(tiny_gpt2()).save_pretrained(tmp_path / "p")
    _trained(tiny_gpt2(), placement="prefix").save_pretrained(tmp_path / "q", format="peft")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / "p" / f).write_bytes((tmp_path / "q" / f).read_bytes())
    with pytest.raises(PromptFileError, match=r"holds both a resprompt prompt \(resprompt_config.json\) and a PEFT"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "p")


def test_peft_export_keeps_the_task_and_warns_about_the_readout(tmp_path, caplog):
    """Before: `resprompt export --format peft` (export_folder) never warned that PEFT reads the native
    readout, and the adapter lost the task, so `predict` and `serve` needed it again."""
    from resprompt.formats import TASK_FILE, export_folder, read_prompt
    from resprompt.tasks.superglue import get_task

    task = get_task("CB").metadata()
    model = ResidualPromptModel(tiny_bert(num_labels=3), ResidualPromptConfig(num_tokens=4, pooling="mean"), task=task)
    model.save_pretrained(tmp_path / "ours")
    for out, write in ((tmp_path / "exported", lambda o: export_folder(tmp_path / "ours", "peft", o)),
                       (tmp_path / "saved", lambda o: model.save_pretrained(o, format="peft"))):
        caplog.clear()
        with caplog.at_level("WARNING", logger="resprompt.formats"):
            write(out)
        assert any("native readout" in r.getMessage() and "pooling=mean" in r.getMessage() for r in caplog.records)
        assert json.loads((out / TASK_FILE).read_text()) == task
        assert read_prompt(out).task == task and read_prompt(out).format == "peft"
    (tmp_path / "ours" / TASK_FILE).write_text(json.dumps(task))  # a task twice: which one is meant?
    with pytest.raises(PromptFileError, match="records its task and resprompt_task.json gives one too"):
        read_prompt(tmp_path / "ours")


# ---------------------------------------------------------------- the task model a prompt was saved for
def _token_bert(num_labels=3):
    """A token classifier with tiny_bert's body (as from_pretrained of one checkpoint gives)."""
    import transformers

    seq = tiny_bert(num_labels)
    tok = transformers.BertForTokenClassification(seq.config).eval()
    tok.bert.load_state_dict(seq.bert.state_dict(), strict=False)
    return tok


def test_a_prompt_for_another_head_kind_is_refused_unless_allowed(tmp_path):
    """Before: a sequence-classification prompt loaded silently onto a token classifier."""
    _trained(tiny_bert()).save_pretrained(tmp_path / "p")
    with pytest.raises(PromptFileError, match=r"p: saved on BertForSequenceClassification \(a sequence "
                                              r"classification head, family encoder\), this backbone is "
                                              r"BertForTokenClassification \(a token classification head, family "
                                              r"encoder\); pass allow_mismatch=True"):
        ResidualPromptModel.from_pretrained(_token_bert(), tmp_path / "p")
    assert ResidualPromptModel.from_pretrained(_token_bert(), tmp_path / "p", allow_mismatch=True).is_folded
    meta = json.loads((tmp_path / "p" / META_FILE).read_text())
    del meta["backbone_class"], meta["family"]  # older metadata: nothing to compare, loads as before
    (tmp_path / "p" / META_FILE).write_text(json.dumps(meta))
    assert ResidualPromptModel.from_pretrained(_token_bert(), tmp_path / "p").head_kind == "ForTokenClassification"


def test_a_stock_peft_adapter_of_another_task_type_is_refused(tmp_path):
    """Before: adapter_config.json's task_type was never compared with the backbone."""
    _stock_peft(tiny_t5(), "SEQ_2_SEQ_LM", tmp_path / "t5")
    with pytest.raises(PromptFileError, match=r"t5: saved as PEFT task_type SEQ_2_SEQ_LM \(family seq2seq\), this "
                                              r"backbone is GPT2LMHeadModel \(no task head, family decoder\)"):
        ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "t5")
    _stock_peft(tiny_bert(), "SEQ_CLS", tmp_path / "seq")
    with pytest.raises(PromptFileError, match=r"seq: saved as PEFT task_type SEQ_CLS \(a sequence classification "
                                              r"head\), this backbone is BertForTokenClassification"):
        ResidualPromptModel.from_pretrained(_token_bert(), tmp_path / "seq")
    _stock_peft(_token_bert(), "TOKEN_CLS", tmp_path / "tok")
    assert ResidualPromptModel.from_pretrained(_token_bert(), tmp_path / "tok").head_kind == "ForTokenClassification"
    _stock_peft(tiny_gpt2(), "CAUSAL_LM", tmp_path / "lm")
    with pytest.raises(PromptFileError, match=r"lm: saved as PEFT task_type CAUSAL_LM \(no task head, family "
                                              r"decoder\), this backbone is T5ForConditionalGeneration"):
        ResidualPromptModel.from_pretrained(tiny_t5(), tmp_path / "lm")
    cfg = json.loads((tmp_path / "t5" / "adapter_config.json").read_text())
    (tmp_path / "t5" / "adapter_config.json").write_text(json.dumps({**cfg, "task_type": "FEATURE_EXTRACTION"}))
    assert ResidualPromptModel.from_pretrained(tiny_gpt2(), tmp_path / "t5").family == "decoder"  # no claim made


@pytest.mark.parametrize("kind, task_type", [("token", "TOKEN_CLS"), ("qa", "QUESTION_ANS")])
def test_peft_export_names_the_heads_task_type(tmp_path, kind, task_type):
    """Before: token-classification and QA heads were exported as SEQ_CLS, which PEFT's
    AutoPeftModelForTokenClassification / ForQuestionAnswering refuse."""
    import transformers
    from peft import PeftModel

    def build():
        if kind == "token":
            return _token_bert()
        torch.manual_seed(0)
        return transformers.BertForQuestionAnswering(tiny_bert(num_labels=2).config).eval()

    m = _trained(build(), placement="prefix")
    m.save_pretrained(tmp_path / "peft", format="peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["task_type"] == task_type and cfg["modules_to_save"] == [m.head_name]
    pm = PeftModel.from_pretrained(build(), str(tmp_path / "peft")).eval()
    assert type(pm).__name__ == {"token": "PeftModelForTokenClassification",
                                 "qa": "PeftModelForQuestionAnswering"}[kind]
    ids, mask = batch(ROWS)
    key = "logits" if kind == "token" else "start_logits"
    with torch.no_grad():
        ours, theirs = getattr(m(ids, mask), key), getattr(pm(input_ids=ids, attention_mask=mask), key)[:, 4:]
        assert (ours - theirs).abs().max() <= 1e-5
        loaded = ResidualPromptModel.from_pretrained(build(), tmp_path / "peft")
        assert (getattr(loaded(ids, mask), key) - ours).abs().max() <= 1e-5


# ------------------------------------------------------------------------- the family a prompt runs as
def _undetectable_bert():
    import transformers

    class MyConfig(transformers.BertConfig):
        model_type = "mybert"

    cfg = MyConfig(**{k: v for k, v in tiny_bert().config.to_dict().items() if k != "model_type"})
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).eval()


def _decoder_bert():
    import transformers

    cfg = transformers.BertConfig(**{**tiny_bert().config.to_dict(), "is_decoder": True})
    torch.manual_seed(0)
    return transformers.BertLMHeadModel(cfg).eval()


def test_the_saved_family_loads_a_model_type_detection_cannot_tell(tmp_path):
    """Before: a prompt saved with family='encoder' on an undetectable model type could never be loaded."""
    m = ResidualPromptModel(_undetectable_bert(), ResidualPromptConfig(num_tokens=4), family="encoder").eval()
    m.save_pretrained(tmp_path / "p")
    loaded = ResidualPromptModel.from_pretrained(_undetectable_bert(), tmp_path / "p")
    ids, mask = batch(ROWS)
    with torch.no_grad():
        assert loaded.family == "encoder" and torch.equal(loaded(ids, mask).logits, m(ids, mask).logits)
    assert ResidualPromptModel.from_pretrained(_undetectable_bert(), tmp_path / "p", family="encoder").is_folded
    with pytest.raises(ValueError, match=r"family='encoders' is invalid: expected one of encoder, seq2seq, decoder"):
        ResidualPromptModel.from_pretrained(_undetectable_bert(), tmp_path / "p", family="encoders")


def test_a_saved_family_that_detection_contradicts_needs_family_or_allow_mismatch(tmp_path):
    """Before: a prompt saved with family='decoder' on a BERT LM reloaded as an encoder (other logits)."""
    m = ResidualPromptModel(_decoder_bert(), ResidualPromptConfig(num_tokens=4), family="decoder").eval()
    m.save_pretrained(tmp_path / "p")
    with pytest.raises(PromptFileError, match=r"p: saved on BertLMHeadModel \(no task head, family decoder\), this "
                                              r"backbone is BertLMHeadModel \(no task head, family encoder\); pass "
                                              r"family='decoder' to run it as saved, or allow_mismatch=True"):
        ResidualPromptModel.from_pretrained(_decoder_bert(), tmp_path / "p")
    ids, mask = batch(ROWS)
    for kw in ({"family": "decoder"}, {"allow_mismatch": True}):
        loaded = ResidualPromptModel.from_pretrained(_decoder_bert(), tmp_path / "p", **kw)
        with torch.no_grad():
            assert loaded.family == "decoder" and torch.equal(loaded(ids, mask).logits, m(ids, mask).logits)
    with pytest.raises(PromptFileError, match=r"family encoder\); pass family='decoder' to run it as saved"):
        ResidualPromptModel.from_pretrained(_decoder_bert(), tmp_path / "p", family="encoder")


def _edit(folder, meta=None, tensors=None):
    """Rewrites a saved prompt's metadata (a function of it) and / or tensors (a function of them)."""
    from safetensors.torch import load_file, save_file

    if meta is not None:
        (folder / META_FILE).write_text(json.dumps(meta(json.loads((folder / META_FILE).read_text()))))
    if tensors is not None:
        save_file(tensors(load_file(str(folder / PROMPT_FILE))), str(folder / PROMPT_FILE))


@pytest.mark.parametrize("meta, tensors, message", [
    (None, lambda t: {**t, "prompt": torch.tensor(1.0)}, r"prompt\.safetensors: prompt tensor has shape \(\), "),
    (None, lambda t: {**t, "head.classifier.weight": t["head.classifier.weight"].long()},
     r"prompt\.safetensors: tensor 'head\.classifier\.weight' has dtype int64, expected float16, "),
    (None, lambda t: {**t, "prompt": t["prompt"] > 0}, r"tensor 'prompt' has dtype bool"),
    (lambda m: {**m, "task": {**m["task"], "name": 5}}, None, r"resprompt_config\.json: task\.name=5, expected a str"),
    (lambda m: {**m, "task": {**m["task"], "labels": 5}}, None, r"task\.labels=5, expected a list of strings"),
    (lambda m: {**m, "hidden_size": "32"}, None, r"resprompt_config\.json: hidden_size='32', expected an integer"),
    (lambda m: {**m, "format_version": 99}, None, r"format_version=99; this resprompt reads versions 1 to 1"),
])
def test_malformed_prompt_files_get_one_message_naming_the_file(tmp_path, meta, tensors, message):
    """Before: each of these raised IndexError / AttributeError / TypeError in eval, or loaded truncated
    weights (int64 head) or a 0/1 prompt (bool) silently, or read a newer format as if it were this one."""
    m = _trained(tiny_bert())
    m.task = {"name": "CB", "kind": "classification", "labels": ["a", "b", "c"]}
    m.save_pretrained(tmp_path / "p")
    _edit(tmp_path / "p", meta, tensors)
    with pytest.raises(PromptFileError, match=message):
        resprompt.read_prompt(tmp_path / "p")


def test_null_backbone_fields_read_as_unrecorded_and_deep_json_is_refused(tmp_path):
    _trained(tiny_bert()).save_pretrained(tmp_path / "p")
    _edit(tmp_path / "p", lambda m: {**m, "backbone_class": None})
    assert "backbone_class" not in resprompt.read_prompt(tmp_path / "p").backbone  # kind_of_class(None) raised
    assert ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p").is_folded
    (tmp_path / "p" / META_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PromptFileError, match=r"resprompt_config\.json: not valid JSON \(nested too deeply\)"):
        resprompt.read_prompt(tmp_path / "p")
