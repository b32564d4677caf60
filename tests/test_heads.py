"""Task heads: each prompt owns its head; heads outside the usual names; decoder, QA and multiple-choice models."""

import pytest
import torch
import transformers

from conftest import VOCAB, batch, tiny_bert
from resprompt import ResidualPromptConfig, ResidualPromptModel
from resprompt.heads import HeadError, head_module_names

CFG = ResidualPromptConfig(num_tokens=3, bottleneck=8)
ROWS = [[2, 5, 6, 7, 8, 9], [2, 10, 11, 3]]


def _perturbed(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def test_second_prompt_on_a_shared_backbone_leaves_the_first_unchanged(tmp_path):
    """Before: the head was written into the shared backbone, so A's logits moved by > 1 once B loaded."""
    backbone = tiny_bert()
    a = _perturbed(ResidualPromptModel(backbone, CFG), 1)
    b = _perturbed(ResidualPromptModel(tiny_bert(), CFG), 2)
    b.save_pretrained(tmp_path / "b")
    ids, mask = batch(ROWS)
    with torch.no_grad():
        a_alone = a(ids, mask).logits
        b_loaded = ResidualPromptModel.from_pretrained(backbone, tmp_path / "b")
        assert torch.equal(a(ids, mask).logits, a_alone)
        assert torch.allclose(b_loaded(ids, mask).logits, b(ids, mask).logits, atol=1e-6)
    assert not torch.allclose(a_alone, b(ids, mask).logits, atol=0.1)  # the two heads do differ


def test_training_one_prompt_does_not_touch_the_backbone():
    backbone = tiny_bert()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    m = ResidualPromptModel(backbone, CFG).train()
    ids, mask = batch(ROWS)
    opt = torch.optim.SGD(m.trainable_parameters().values(), lr=1.0)
    m(ids, mask, labels=torch.tensor([0, 2])).loss.backward()
    opt.step()
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(m.head_state()["classifier.weight"], before["classifier.weight"])


def _distilbert(num_labels=3):
    cfg = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                                        max_position_embeddings=64, num_labels=num_labels, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.DistilBertForSequenceClassification(cfg).eval()


def test_distilbert_pre_classifier_trains_and_is_saved(tmp_path):
    """Before: pre_classifier stayed frozen at its random init and was not saved (reload: other logits)."""
    m = ResidualPromptModel(_distilbert(), CFG)
    assert head_module_names(m.backbone) == ["pre_classifier", "classifier"]
    names = set(m.trainable_parameters())
    assert {"head.pre_classifier.weight", "head.pre_classifier.bias", "head.classifier.weight"} <= names
    ids, mask = batch(ROWS)
    m.train()(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    assert m.head["pre_classifier"].weight.grad.abs().sum() > 0
    _perturbed(m, 4).save_pretrained(tmp_path / "p")
    again = ResidualPromptModel.from_pretrained(_distilbert(), tmp_path / "p")
    with torch.no_grad():
        assert torch.allclose(again(ids, mask).logits, m(ids, mask).logits, atol=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pad_id", [0, None])
def test_decoder_sequence_classifier_pools_the_last_real_token(kind, side, pad_id):
    """Before: given inputs_embeds the classifier pooled position -1, a pad under right padding (0.10 off).
    Checkpoints such as gpt2 have no pad id in their config: a batch then raised inside transformers."""
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=pad_id, num_labels=3)
        bb = transformers.GPT2ForSequenceClassification(cfg).eval()
    else:
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=pad_id, num_labels=3)
        bb = transformers.LlamaForSequenceClassification(cfg).eval()
    m = _perturbed(ResidualPromptModel(bb, CFG), 5)
    rows = [[1, 5, 6, 7, 8, 9], [1, 10, 11]]
    ids, mask = batch(rows, pad_left=side == "left")
    with torch.no_grad():
        together = m(ids, mask).logits
        for i, row in enumerate(rows):
            alone = m(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long)).logits
            assert (together[i] - alone[0]).abs().max() <= 1e-5


def test_question_answering_logits_are_trimmed_to_the_real_tokens():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    m = ResidualPromptModel(transformers.BertForQuestionAnswering(cfg).eval(), CFG)
    ids, mask = batch(ROWS)
    with torch.no_grad():
        out = m(ids, mask)
        m.strip_prompt_logits = False
        full = m(ids, mask)
    assert out.start_logits.shape == (2, 6) and out.end_logits.shape == (2, 6)
    assert full.start_logits.shape == (2, 9) and full.end_logits.shape == (2, 9)
    real = [0, 4, 5, 6, 7, 8]  # [CLS], then the 3 prompt slots, then the other tokens
    assert torch.equal(out.start_logits, full.start_logits[:, real])
    assert torch.equal(out.end_logits, full.end_logits[:, real])
    assert head_module_names(m.backbone) == ["qa_outputs"]


def test_multiple_choice_models_are_refused_with_a_clear_message():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    with pytest.raises(HeadError, match=r"BertForMultipleChoice: multiple-choice models take \[batch, choices, "
                                        r"tokens\] inputs"):
        ResidualPromptModel(transformers.BertForMultipleChoice(cfg), CFG)


def test_from_pretrained_builds_no_network_and_draws_no_random_numbers(tmp_path):
    """Before: it built and randomly initialised the whole reparameterisation network, then dropped it."""
    _perturbed(ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=3, bottleneck=64)), 6) \
        .save_pretrained(tmp_path / "p")
    backbone = tiny_bert()
    state = torch.get_rng_state()
    m = ResidualPromptModel.from_pretrained(backbone, tmp_path / "p")
    assert torch.equal(torch.get_rng_state(), state)
    assert m.prompt_encoder is None and m.is_folded
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in backbone.parameters()) + 32 * 3 + 3


def test_seq2seq_input_too_long_for_learned_positions_is_a_clear_error():
    """Before: BART at its maximum length ended in a traceback (the length check skipped seq2seq)."""
    cfg = transformers.BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                                  decoder_ffn_dim=37, max_position_embeddings=32, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(0)
    m = ResidualPromptModel(transformers.BartForConditionalGeneration(cfg).eval(), CFG)
    assert m.max_text_length == 32 - 3
    ids = torch.randint(3, VOCAB, (1, 32))
    with pytest.raises(ValueError, match="input has 32 tokens but only 29 fit beside the 3-token prompt"):
        m(ids, labels=torch.tensor([[5, 6]]))
    assert m(ids[:, :29], labels=torch.tensor([[5, 6]])).logits.shape == (1, 2, VOCAB)


def test_save_pretrained_takes_the_transformers_keywords(tmp_path):
    """Before: save_pretrained(dir, safe_serialization=True) raised TypeError."""
    m = ResidualPromptModel(tiny_bert(), CFG)
    m.save_pretrained(tmp_path / "p", safe_serialization=True)
    assert (tmp_path / "p" / "prompt.safetensors").is_file()
    m.save_pretrained(tmp_path / "q", is_main_process=False)
    assert not (tmp_path / "q").exists()
    with pytest.raises(ValueError, match="safe_serialization=False is not supported"):
        m.save_pretrained(tmp_path / "r", safe_serialization=False)


@pytest.mark.parametrize("name", ["Bart", "T5"])
def test_an_encoder_decoder_sequence_classifier_is_refused_clearly(name):
    """Before: accepted, then every forward raised NotImplementedError inside transformers (it finds EOS in
    input_ids, which the prompt replaces by embeddings)."""
    if name == "Bart":
        cfg = transformers.BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1,
                                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                                      decoder_ffn_dim=37, max_position_embeddings=64)
        bb = transformers.BartForSequenceClassification(cfg)
    else:
        bb = transformers.T5ForSequenceClassification(transformers.T5Config(
            vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4, decoder_start_token_id=0))
    with pytest.raises(HeadError, match=f"{name}ForSequenceClassification: an encoder-decoder classifier .*"
                                        "ForConditionalGeneration"):
        ResidualPromptModel(bb, CFG)


def _llama_for(cls):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0, num_labels=3)
    torch.manual_seed(0)
    return getattr(transformers, cls)(cfg).eval()


@pytest.mark.parametrize("cls, key", [("LlamaForTokenClassification", "logits"),
                                      ("LlamaForQuestionAnswering", "start_logits")])
def test_decoder_per_token_outputs_are_each_tokens_own(cls, key):
    """Before: trimmed with the LM's next-token shift, so the BOS output was the last prompt slot's."""
    m = _perturbed(ResidualPromptModel(_llama_for(cls), CFG), 6)
    ids = torch.tensor([[1, 5, 6, 7]])  # the prompt goes after BOS: slots 1..3
    with torch.no_grad():
        trimmed = getattr(m(ids), key)
        m.strip_prompt_logits = False
        full = getattr(m(ids), key)
    assert torch.equal(trimmed, torch.cat([full[:, :1], full[:, 4:]], dim=1))


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_question_answering_positions_index_the_real_tokens(backbone):
    """Before: start/end positions reached the backbone unmoved, so its loss scored prompt slots, not the span."""
    import torch.nn.functional as F

    if backbone == "bert":
        cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
        torch.manual_seed(0)
        bb = transformers.BertForQuestionAnswering(cfg).eval()
    else:
        bb = _llama_for("LlamaForQuestionAnswering")
    m = _perturbed(ResidualPromptModel(bb, CFG), 7)
    ids, mask = batch(ROWS)
    start, end = torch.tensor([3, 1]), torch.tensor([4, 2])
    with torch.no_grad():
        out = m(ids, mask, start_positions=start, end_positions=end)
    expected = (F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)) / 2
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_head_weights_of_another_shape_are_refused_on_load(tmp_path):
    """Before: only the rank was checked: a [5, 7] classifier on hidden size 32 loaded, then F.linear raised."""
    from resprompt.heads import load_head

    m = ResidualPromptModel(tiny_bert(), ResidualPromptConfig(num_tokens=2, bottleneck=4))
    state = m.head_state()
    with pytest.raises(HeadError, match=r"w: head weight 'classifier.weight' has shape \(3, 7\), the backbone's has "
                                        r"\(3, 32\) \(only its first dimension, the label count, may differ\)"):
        load_head(m.head, {**state, "classifier.weight": torch.zeros(3, 7)}, "w")
    with pytest.raises(HeadError, match=r"w: head weight and bias of 'classifier' disagree on the label count"):
        load_head(m.head, {**state, "classifier.weight": torch.zeros(5, 32)}, "w")
    load_head(m.head, {"classifier.weight": torch.zeros(5, 32), "classifier.bias": torch.zeros(5)}, "w")
    assert m.head["classifier"].out_features == 5  # another label count: allowed, as before
    roberta = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=70, num_labels=3, pad_token_id=1))
    r = ResidualPromptModel(roberta, ResidualPromptConfig(num_tokens=2, bottleneck=4))
    with pytest.raises(HeadError, match=r"'classifier.dense.weight' has shape \(32, 8\), the backbone's has \(32, 32\)$"):
        load_head(r.head, {**r.head_state(), "classifier.dense.weight": torch.zeros(32, 8)}, "w")
