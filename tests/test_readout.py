"""Encoder readouts (pooler / cls / mean, auto from the checkpoint's declaration) against hand computations."""

import json

import pytest
import torch
import transformers

from conftest import VOCAB, batch, tiny_bert
from resprompt import ResidualPromptConfig, ResidualPromptModel
from resprompt.experiments.baselines import HeadOnlyModel
from resprompt.heads import HeadError
from resprompt.io import META_FILE

ROWS = [[2, 5, 6, 7, 8, 9], [2, 10, 11, 3]]  # row 1 right-padded by 2
N = 3


def _model(bb, pooling, **kw):
    torch.manual_seed(1)
    m = ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=N, bottleneck=8, pooling=pooling, **kw))
    with torch.no_grad():
        for p in m.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def _by_hand(m, ids, mask):
    """The prompted hidden states, computed step by step: [CLS], prompt, text (after_first)."""
    bb = m.backbone
    emb = bb.get_input_embeddings()(ids)  # [B, T, d]
    p = m.fold().unsqueeze(0).expand(ids.shape[0], -1, -1)
    embeds = torch.cat([emb[:, :1], p, emb[:, 1:]], 1)
    full_mask = torch.cat([mask[:, :1], torch.ones(ids.shape[0], N, dtype=mask.dtype), mask[:, 1:]], 1)
    out = bb.bert(inputs_embeds=embeds, attention_mask=full_mask,
                  token_type_ids=torch.zeros_like(full_mask))
    return out, full_mask


def test_three_readouts_on_tiny_bert_match_a_hand_computation():
    ids, mask = batch(ROWS)
    bb = tiny_bert()
    with torch.no_grad():
        for pooling in ("pooler", "cls", "mean"):
            m = _model(bb, pooling)
            assert m.pooling == pooling
            out, full_mask = _by_hand(m, ids, mask)
            h = out.last_hidden_state  # [B, T + n, d]
            if pooling == "pooler":
                pooled = out.pooler_output
            elif pooling == "cls":
                pooled = h[:, 0]
            else:  # text tokens only: [CLS] and the real tokens after the prompt, no prompt slots, no pads
                text = full_mask.clone().float()
                text[:, 1:1 + N] = 0
                pooled = (h * text.unsqueeze(-1)).sum(1) / text.sum(1, keepdim=True)
                assert text[1].sum() == 4 and text[0].sum() == 6
            expected = m.head["classifier"](pooled)
            got = m(ids, mask, token_type_ids=torch.zeros_like(ids)).logits
            assert (got - expected).abs().max() <= 1e-5, pooling


def test_cls_reads_the_first_text_token_even_after_a_prefix_prompt():
    ids, mask = batch(ROWS)
    m = _model(tiny_bert(), "cls", placement="prefix")
    with torch.no_grad():
        p = m.fold().unsqueeze(0).expand(2, -1, -1)
        embeds = torch.cat([p, m.backbone.get_input_embeddings()(ids)], 1)
        full = torch.cat([torch.ones(2, N, dtype=mask.dtype), mask], 1)
        h = m.backbone.bert(inputs_embeds=embeds, attention_mask=full).last_hidden_state
        assert (m(ids, mask).logits - m.head["classifier"](h[:, N])).abs().max() <= 1e-5


def test_auto_follows_the_checkpoints_pooling_config_and_save_load_keeps_it(tmp_path):
    folder = tmp_path / "st-bert"
    tiny_bert().save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True,
                                                                  "pooling_mode_cls_token": False}))
    declared = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    m = _model(declared, "auto")
    assert m.pooling == "mean" and _model(tiny_bert(), "auto").pooling == "pooler"  # no declaration: native
    m.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / META_FILE).read_text())["config"]["pooling"] == "mean"
    loaded = ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p")  # a copy without 1_Pooling/
    ids, mask = batch(ROWS)
    with torch.no_grad():
        assert loaded.pooling == "mean" and torch.allclose(loaded(ids, mask).logits, m(ids, mask).logits, atol=1e-6)


def test_auto_falls_back_to_the_heads_own_readout_when_it_cannot_read_the_declared_one(tmp_path, caplog):
    """Before: the default pooling ('auto') raised on a sentence-transformers DistilBERT declaring mean."""
    folder = tmp_path / "st-distilbert"
    transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, hidden_dim=37, max_position_embeddings=64,
        num_labels=3)).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    bb = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with caplog.at_level("WARNING", logger="resprompt.readout"):
        m = _model(bb, "auto")
    assert m.pooling == "cls" and m._native_readout
    assert "declares pooling 'mean', which its head (pre_classifier, classifier) cannot read" in caplog.text
    with pytest.raises(HeadError, match=r"pooling='mean': the head of DistilBertForSequenceClassification"):
        _model(bb, "mean")  # asked for by name: refused, as before


def test_prompts_saved_before_the_option_load_with_the_native_readout(tmp_path):
    m = _model(tiny_bert(), "native")
    assert m.pooling == "pooler"
    m.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / META_FILE).read_text())
    del meta["config"]["pooling"]
    (tmp_path / "p" / META_FILE).write_text(json.dumps(meta))
    assert ResidualPromptModel.from_pretrained(tiny_bert(), tmp_path / "p").pooling == "pooler"


def _roberta():
    cfg = transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=70, num_labels=3, pad_token_id=1)
    torch.manual_seed(0)
    return transformers.RobertaForSequenceClassification(cfg).eval()


def test_classification_heads_over_the_first_position_read_mean_too():
    ids, mask = batch(ROWS, pad_id=1)
    native = _model(_roberta(), "native")
    assert native.pooling == "cls" and native._native_readout
    m = _model(_roberta(), "mean")
    with torch.no_grad():
        p = m.fold().unsqueeze(0).expand(2, -1, -1)
        emb = m.backbone.get_input_embeddings()(ids)
        embeds = torch.cat([emb[:, :1], p, emb[:, 1:]], 1)
        full = torch.cat([mask[:, :1], torch.ones(2, N, dtype=mask.dtype), mask[:, 1:]], 1)
        h = m.backbone.roberta(inputs_embeds=embeds, attention_mask=full).last_hidden_state
        text = full.clone().float()
        text[:, 1:1 + N] = 0
        pooled = (h * text.unsqueeze(-1)).sum(1) / text.sum(1, keepdim=True)
        assert (m(ids, mask).logits - m.head["classifier"](pooled.unsqueeze(1))).abs().max() <= 1e-5
    with pytest.raises(HeadError, match="pooling='pooler': RobertaForSequenceClassification has no pooler feeding"):
        _model(_roberta(), "pooler")


def test_cls_reads_the_first_text_token_when_a_prompt_slot_comes_first(tmp_path):
    """Before: on RoBERTa pooling='cls' with placement='prefix' ran the backbone's own head, over prompt slot 0."""
    ids, mask = batch(ROWS, pad_id=1)
    for pooling, at in (("cls", N), ("native", 0)):  # the first text token <s>; the slot, as PEFT reads it
        m = _model(_roberta(), pooling, placement="prefix")
        with torch.no_grad():
            p = m.fold().unsqueeze(0).expand(2, -1, -1)
            embeds = torch.cat([p, m.backbone.get_input_embeddings()(ids)], 1)
            full = torch.cat([torch.ones(2, N, dtype=mask.dtype), mask], 1)
            h = m.backbone.roberta(inputs_embeds=embeds, attention_mask=full).last_hidden_state
            expected = m.head["classifier"](h[:, at:at + 1])
            assert (m(ids, mask).logits - expected).abs().max() <= 1e-5
            m.save_pretrained(tmp_path / pooling)  # what is saved loads as the same readout
            meta = json.loads((tmp_path / pooling / META_FILE).read_text())
            assert meta["config"]["pooling"] == pooling
            loaded = ResidualPromptModel.from_pretrained(_roberta(), tmp_path / pooling)
            assert (loaded(ids, mask).logits - expected).abs().max() <= 1e-5
    distil = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, hidden_dim=37, max_position_embeddings=64, num_labels=3))
    assert _model(distil, "native", placement="prefix")._native_readout
    with pytest.raises(HeadError, match=r"pooling='cls' with placement='prefix': the head of "
                                        r"DistilBertForSequenceClassification \(pre_classifier, classifier\) reads only "
                                        r"the first position, a prompt slot there"):
        _model(distil, "cls", placement="prefix")


def test_two_layer_heads_refuse_a_foreign_readout():
    cfg = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                                        max_position_embeddings=64, num_labels=3)
    bb = transformers.DistilBertForSequenceClassification(cfg)
    assert _model(bb, "cls").pooling == "cls"  # its own readout
    with pytest.raises(HeadError, match=r"pooling='mean': the head of DistilBertForSequenceClassification "
                                        r"\(pre_classifier, classifier\) reads only its own readout \(cls\)"):
        _model(bb, "mean")


def test_head_only_probe_uses_the_same_readout():
    ids, mask = batch(ROWS)
    bb = tiny_bert()
    probe = HeadOnlyModel(bb, None, "encoder", "mean").eval()
    with torch.no_grad():
        h = bb.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        assert (probe(ids, mask).logits - bb.classifier(pooled)).abs().max() <= 1e-5
        assert torch.equal(HeadOnlyModel(tiny_bert(), None, "encoder", "native").eval()(ids, mask).logits,
                           tiny_bert()(input_ids=ids, attention_mask=mask).logits)
    assert set(probe.trainable_parameters()) == {"backbone.classifier.weight", "backbone.classifier.bias"}
