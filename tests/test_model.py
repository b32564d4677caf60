"""The wrapper on tiny random backbones of every family: masks, positions, labels, grads, generate."""

import pytest
import torch

from conftest import batch, tiny_bert, tiny_gpt2, tiny_t5
from resprompt import ResidualPromptConfig, ResidualPromptModel
from resprompt.prompt.init import init_uniform, init_vocab

ROWS = [[1, 5, 6, 7, 8], [1, 9, 10]]


def _wrap(backbone, **kw):
    torch.manual_seed(1)
    cfg = ResidualPromptConfig(num_tokens=4, bottleneck=8, init_seed=0, **kw)
    return ResidualPromptModel(backbone, cfg).eval()


def _forward(model, name, ids, mask, **kw):
    if name == "t5":
        kw.setdefault("decoder_input_ids", torch.zeros(ids.shape[0], 1, dtype=torch.long))
    return model(ids, mask, **kw).logits


def test_family_and_default_placement(any_backbone):
    name, bb = any_backbone
    m = _wrap(bb)
    expected = {"bert": ("encoder", "after_first"), "t5": ("seq2seq", "prefix"),
                "gpt2": ("decoder", "after_bos"), "llama": ("decoder", "after_bos")}[name]
    assert (m.family, m.placement_mode) == expected


def test_backbone_frozen_and_exact_trainable_count(any_backbone):
    name, bb = any_backbone
    m = _wrap(bb)
    d, n, mb = 32, 4, 8
    count = n * d + (d * mb + mb) + (mb * d + d) + 2 * d
    if name == "bert":
        count += d * 3 + 3  # classifier head
    assert m.num_trainable() == count
    assert all(k.startswith(("prompt_encoder.", "head.classifier.")) for k in m.trainable_parameters())
    assert not any(p.requires_grad for p in bb.parameters())  # the prompt's head is its own copy


def test_only_prompt_network_and_head_get_gradients(any_backbone):
    name, bb = any_backbone
    m = _wrap(bb).train()
    ids, mask = batch(ROWS)
    kw = {}
    if name == "t5":
        kw["labels"] = torch.tensor([[5, 6, 1], [7, 1, -100]])
    elif name == "bert":
        kw["labels"] = torch.tensor([0, 2])
    else:
        kw["labels"] = ids.masked_fill(mask == 0, -100)
    m(ids, mask, **kw).loss.backward()
    for k, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, k
        else:
            assert p.grad is None, k


def test_fold_parity_and_folded_inference(any_backbone, tmp_path):
    name, bb = any_backbone
    m = _wrap(bb, dropout=0.1)
    with torch.no_grad():  # make the head and network non-trivial
        for p in m.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.1)
    ids, mask = batch(ROWS)
    with torch.no_grad():
        ref = _forward(m, name, ids, mask)
        m.save_pretrained(tmp_path / "p")
        loaded = ResidualPromptModel.from_pretrained(bb, tmp_path / "p")
        assert loaded.is_folded and loaded.num_trainable() == (0 if name != "bert" else 3 * 32 + 3)
        out = _forward(loaded, name, ids, mask)
    assert (out - ref).abs().max() <= 1e-5


def test_decoder_left_padding_matches_unpadded_rows(decoder_backbone):
    name, bb = decoder_backbone
    m = _wrap(bb)
    ids, mask = batch(ROWS, pad_left=True)
    with torch.no_grad():
        logits = m(ids, mask).logits  # [B, T, V]: real-token positions only
        assert logits.shape[:2] == ids.shape
        for i, row in enumerate(ROWS):
            alone = m(torch.tensor([row])).logits[0]
            assert (logits[i, -len(row):] - alone).abs().max() < 1e-5
        right_ids, right_mask = batch(ROWS, pad_left=False)
        right = m(right_ids, right_mask).logits
        assert (right[1, :3] - logits[1, -3:]).abs().max() < 1e-5


def test_decoder_prompt_after_bos_only_when_present(decoder_backbone):
    _, bb = decoder_backbone
    m = _wrap(bb)
    ids, mask = batch([[1, 5, 6], [5, 6, 7]], pad_left=True)
    inputs = m.prepare_inputs(ids, mask, labels=ids)
    assert inputs["_offsets"].tolist() == [1, 0]
    assert inputs["labels"][0].tolist() == [1, -100, -100, -100, -100, 5, 6]
    assert inputs["labels"][1].tolist() == [-100] * 4 + [5, 6, 7]
    assert inputs["attention_mask"].tolist() == [[1] * 7] * 2


def test_decoder_loss_ignores_prompt_positions(decoder_backbone):
    _, bb = decoder_backbone
    m = _wrap(bb)
    ids, mask = batch(ROWS, pad_left=True)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = m(ids, mask, labels=labels)
        # manual next-token loss over real tokens with the trimmed logits
        lp = out.logits[:, :-1].log_softmax(-1)
        tgt = labels[:, 1:]
        keep = tgt != -100
        manual = -lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].mean()
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_encoder_prompt_after_cls_and_token_types():
    m = _wrap(tiny_bert())
    ids, mask = batch([[2, 5, 6, 3], [2, 7, 3]])
    inputs = m.prepare_inputs(ids, mask, token_type_ids=torch.ones_like(ids))
    assert inputs["_offsets"].tolist() == [1, 1]
    assert inputs["token_type_ids"][0].tolist() == [1, 0, 0, 0, 0, 1, 1, 1]
    assert inputs["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    assert torch.equal(inputs["inputs_embeds"][0, 1:5], m.prompt().detach())


def test_two_prompts_in_one_batch(any_backbone):
    name, bb = any_backbone
    m = _wrap(bb)
    ids, mask = batch(ROWS, pad_left=name in ("gpt2", "llama"))
    p1, p2 = torch.randn(4, 32), torch.randn(4, 32)
    with torch.no_grad():
        both = _forward(m, name, ids, mask, prompts=torch.stack([p1, p2]))
        first = _forward(m, name, ids, mask, prompts=p1)
        second = _forward(m, name, ids, mask, prompts=p2)
    assert torch.allclose(both[0], first[0], atol=1e-5) and torch.allclose(both[1], second[1], atol=1e-5)
    assert (first[1] - second[1]).abs().max() > 1e-5


def test_decoder_generate_left_padded_matches_single_rows(decoder_backbone):
    _, bb = decoder_backbone
    m = _wrap(bb)
    ids, mask = batch(ROWS, pad_left=True)
    out = m.generate(ids, mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, : ids.shape[1]], ids)
    for i, row in enumerate(ROWS):
        alone = m.generate(torch.tensor([row]), max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert out[i, ids.shape[1]:].tolist() == alone[0, len(row):].tolist()


def test_seq2seq_generate():
    m = _wrap(tiny_t5())
    ids, mask = batch(ROWS)
    out = m.generate(ids, mask, max_new_tokens=4, do_sample=False)
    for i, row in enumerate(ROWS):
        alone = m.generate(torch.tensor([row]), max_new_tokens=4, do_sample=False)
        assert out[i, : alone.shape[1]].tolist() == alone[0].tolist()


def test_text_too_long_is_refused_not_prompt_truncated():
    m = _wrap(tiny_gpt2())
    assert m.max_text_length == 64 - 4
    with pytest.raises(ValueError, match="input has 61 tokens but only 60 fit beside the 4-token prompt"):
        m(torch.ones(1, 61, dtype=torch.long))
    assert m(torch.ones(1, 60, dtype=torch.long)).logits.shape == (1, 60, 99)


def test_prompt_shape_errors():
    m = _wrap(tiny_gpt2())
    ids, mask = batch(ROWS)
    with pytest.raises(ValueError, match=r"prompts have shape \(3, 32\), expected \[\.\.\., 4, 32\]"):
        m(ids, mask, prompts=torch.zeros(3, 32))
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        m(ids, mask, prompts=torch.zeros(3, 4, 32))


def test_parameter_groups():
    m = _wrap(tiny_bert())
    g = m.parameter_groups()
    assert [p.shape for p in g["prompt"]] == [(4, 32)]
    assert [tuple(p.shape) for p in g["network"]] == [(8, 32), (8,), (32, 8), (32,), (32,), (32,)]  # down, up, LN
    assert [tuple(p.shape) for p in g["head"]] == [(3, 32), (3,)]
    assert g["head"][0] is m.head["classifier"].weight


@pytest.mark.parametrize("init", ["uniform", "vocab"])
def test_init_modes_on_backbone(init):
    bb = tiny_gpt2()
    m = ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=3, init=init, init_seed=1))
    raw = m.prompt_encoder.embedding
    if init == "vocab":
        rows = bb.get_input_embeddings().weight
        assert all((rows == r).all(-1).any() for r in raw)
        assert torch.equal(raw, init_vocab(bb.get_input_embeddings(), 3, seed=1))
    else:
        assert raw.abs().max() <= 0.5 and torch.equal(raw, init_uniform(3, 32, 0.5, seed=1))


@pytest.mark.parametrize("problem_type", ["multi_label_classification", None])
def test_multi_label_classifier_gets_the_bce_loss(problem_type):
    """Before: the loss was always cross-entropy on labels.long(); multi-hot labels raised in torch."""
    import torch.nn.functional as F

    bb = tiny_bert(num_labels=3)
    bb.config.problem_type = problem_type  # unset: inferred from the float [B, C] labels, as transformers does
    m = ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=3, bottleneck=8)).eval()
    ids, mask = batch(ROWS)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = m(ids, mask, labels=labels)
    assert torch.allclose(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))


def test_classification_loss_follows_the_problem_type():
    import torch.nn.functional as F

    ids, mask = batch(ROWS)
    bb = tiny_bert(num_labels=2)
    bb.config.problem_type = "regression"  # two outputs regressed: MSE over both
    m = ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=3, bottleneck=8)).eval()
    targets = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    out = m(ids, mask, labels=targets)
    assert torch.allclose(out.loss, F.mse_loss(out.logits, targets))
    m = ResidualPromptModel(tiny_bert(num_labels=3), ResidualPromptConfig(num_tokens=3, bottleneck=8)).eval()
    for classes in (torch.tensor([2, 0]), torch.tensor([2.0, 0.0])):  # class ids, even stored as floats
        out = m(ids, mask, labels=classes)
        assert torch.allclose(out.loss, F.cross_entropy(out.logits, torch.tensor([2, 0])))
    m = ResidualPromptModel(tiny_bert(num_labels=1), ResidualPromptConfig(num_tokens=3, bottleneck=8)).eval()
    out = m(ids, mask, labels=torch.tensor([0.3, 1.2]))
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), torch.tensor([0.3, 1.2])))


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_a_readout_on_a_model_without_one_is_refused(pooling, tmp_path):
    """Before: a decoder classifier (or an LM) took any pooling, ignored it, and saved it as if it applied."""
    import transformers

    from resprompt.heads import HeadError

    gpt2_cls = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(**{
        **tiny_gpt2().config.to_dict(), "num_labels": 3, "pad_token_id": 0}))
    for bb in (gpt2_cls, tiny_gpt2(), tiny_t5()):
        with pytest.raises(HeadError, match=rf"pooling='{pooling}' chooses what an encoder sequence classifier's "
                                            r"head reads; \w+ \((decoder|seq2seq), .*\) has no such choice"):
            ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=2, bottleneck=4, pooling=pooling))
    # a prompt saved with one before the check still loads (the readout never applied), and saves 'auto'
    m = ResidualPromptModel(gpt2_cls, ResidualPromptConfig(num_tokens=2, bottleneck=4)).eval()
    m.save_pretrained(tmp_path / "p")
    meta = tmp_path / "p" / "resprompt_config.json"
    import json

    saved = json.loads(meta.read_text())
    saved["config"]["pooling"] = pooling
    meta.write_text(json.dumps(saved))
    loaded = ResidualPromptModel.from_pretrained(gpt2_cls, tmp_path / "p")
    assert loaded.config.pooling == "auto"
