"""The prompt encoders and initialisers against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resprompt import MLPBlock, PromptEncoder, ResidualPromptConfig
from resprompt.prompt.init import init_text, init_uniform, init_vocab


def _set_block(block: MLPBlock) -> None:
    with torch.no_grad():
        block.down.weight.copy_(torch.tensor([[1.0, 1.0]]))  # [m=1, d=2]
        block.down.bias.zero_()
        block.up.weight.copy_(torch.tensor([[1.0], [2.0]]))  # [d=2, m=1]
        block.up.bias.zero_()


def _encoder(reparam, **kw):
    cfg = ResidualPromptConfig(num_tokens=1, reparam=reparam, bottleneck=1, **kw)
    enc = PromptEncoder(cfg, torch.tensor([[1.0, 2.0]]))
    if reparam in ("residual", "mlp"):
        _set_block(enc.blocks[0])
    return enc


def test_residual_block_hand_computed():
    # down: 1 + 2 = 3 -> relu 3 -> up: [3, 6] -> LN: mean 4.5, var 2.25 -> [-1.5, 1.5] / sqrt(2.25 + 1e-5)
    ln = 1.5 / math.sqrt(2.25 + 1e-5)
    out = _encoder("residual")()
    assert torch.allclose(out, torch.tensor([[1.0 - ln, 2.0 + ln]]), atol=1e-7)


def test_mlp_has_no_skip_and_none_is_identity():
    ln = 1.5 / math.sqrt(2.25 + 1e-5)
    assert torch.allclose(_encoder("mlp")(), torch.tensor([[-ln, ln]]), atol=1e-7)
    assert torch.equal(_encoder("none")(), torch.tensor([[1.0, 2.0]]))


def test_relu_cuts_negative_branch_and_no_layer_norm():
    enc = _encoder("residual", layer_norm=False)
    with torch.no_grad():
        enc.blocks[0].down.weight.copy_(torch.tensor([[-1.0, -1.0]]))  # -3 -> relu 0 -> up bias 0
    assert torch.equal(enc(), torch.tensor([[1.0, 2.0]]))


def test_embedding_branch_scale_sets_layer_norm_gain():
    cfg = ResidualPromptConfig(num_tokens=2, bottleneck=3, branch_scale="embedding")
    enc = PromptEncoder(cfg, torch.zeros(2, 4), embedding_rms=0.05)
    assert torch.equal(enc.blocks[0].norm.weight, torch.full((4,), 0.05))
    with pytest.raises(ValueError, match="embedding RMS"):
        PromptEncoder(cfg, torch.zeros(2, 4))


def test_separate_networks_are_per_token_and_untied():
    cfg = ResidualPromptConfig(num_tokens=3, bottleneck=2, shared=False, num_blocks=2)
    enc = PromptEncoder(cfg, torch.randn(3, 4))
    assert len(enc.blocks) == 3 and all(len(s) == 2 for s in enc.blocks)
    assert enc.blocks[0][0].down.weight.data_ptr() != enc.blocks[0][1].down.weight.data_ptr()
    out = enc()
    # token 1 only goes through its own stack
    x = enc.embedding[1]
    for b in enc.blocks[1]:
        x = x + b(x)
    assert torch.allclose(out[1], x)
    per_block = 4 * 2 + 2 + 2 * 4 + 4 + 2 * 4
    assert sum(p.numel() for p in enc.parameters()) == 3 * 4 + 3 * 2 * per_block


def test_lstm_shapes_and_count():
    cfg = ResidualPromptConfig(num_tokens=5, reparam="lstm", lstm_hidden=3)
    enc = PromptEncoder(cfg, torch.randn(5, 8))
    out, _ = enc.lstm(enc.embedding.unsqueeze(0))
    assert enc().shape == (5, 8) and torch.allclose(enc(), enc.lstm_head(out[0]))
    lstm = sum(p.numel() for p in nn.LSTM(8, 3, num_layers=2, bidirectional=True).parameters())
    head = (6 * 6 + 6) + (6 * 8 + 8)
    assert sum(p.numel() for p in enc.parameters()) == 5 * 8 + lstm + head


@pytest.mark.parametrize("act", ["gelu", "tanh", "silu"])
def test_activations(act):
    enc = PromptEncoder(ResidualPromptConfig(num_tokens=2, bottleneck=3, activation=act), torch.randn(2, 4))
    assert isinstance(enc.blocks[0].act, {"gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}[act])
    b, x = enc.blocks[0], enc.embedding
    h = {"gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu}[act](F.linear(x, b.down.weight, b.down.bias))
    expected = x + F.layer_norm(F.linear(h, b.up.weight, b.up.bias), (4,), b.norm.weight, b.norm.bias)
    assert enc().shape == (2, 4) and torch.allclose(enc(), expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reparam": "deep"}, "reparam='deep' is invalid: expected one of residual, none, mlp, lstm"),
        ({"num_tokens": 0}, "num_tokens=0 is invalid: expected a positive integer"),
        ({"bottleneck": -1}, "bottleneck=-1 is invalid: expected a positive integer"),
        ({"activation": "swish"}, "activation='swish' is invalid: expected one of relu, gelu, tanh, silu"),
        ({"dropout": 1.5}, "dropout=1.5 is invalid: expected a number in [0, 1)"),
        ({"init": "text"}, "init_text=None is invalid: expected a non-empty string when init='text'"),
        ({"init": "saved"}, "init_path=None is invalid: expected a prompt folder when init='saved'"),
        ({"reparam": "lstm", "shared": False},
         "shared=False is invalid: expected True for reparam='lstm' (the LSTM runs across tokens)"),
        ({"placement": "middle"},
         "placement='middle' is invalid: expected one of auto, prefix, after_first, after_bos"),
        ({"branch_scale": "embedding", "layer_norm": False},
         "branch_scale='embedding' is invalid: expected 'paper' when layer_norm is False (the scale is the LayerNorm "
         "gain)"),
        ({"shared": "yes"}, "shared='yes' is invalid: expected true or false"),
        # a setting that did nothing was accepted: no LayerNorm branch to scale, the prompt as with 'paper'
        ({"reparam": "none", "branch_scale": "embedding"},
         "branch_scale='embedding' is invalid: expected 'paper' for reparam='none', which has no LayerNorm branch "
         "to scale"),
        ({"reparam": "lstm", "branch_scale": "embedding"},
         "branch_scale='embedding' is invalid: expected 'paper' for reparam='lstm', which has no LayerNorm branch "
         "to scale"),
        # init_seed was not checked: torch raised later, deep in the model's constructor
        ({"init_seed": "7"}, "init_seed='7' is invalid: expected an integer in [0, 2**64) or None"),
        ({"init_seed": 1.5}, "init_seed=1.5 is invalid: expected an integer in [0, 2**64) or None"),
        ({"init_seed": True}, "init_seed=True is invalid: expected an integer in [0, 2**64) or None"),
        ({"init_seed": -1}, "init_seed=-1 is invalid: expected an integer in [0, 2**64) or None"),
        ({"init_seed": 2**70}, f"init_seed={2**70} is invalid: expected an integer in [0, 2**64) or None"),
    ],
)
def test_config_errors_name_field_and_value(kwargs, message):
    with pytest.raises(ValueError) as e:
        ResidualPromptConfig(**kwargs)
    assert str(e.value) == f"ResidualPromptConfig.{message}"


def test_config_round_trip_and_unknown_field():
    cfg = ResidualPromptConfig(num_tokens=7, activation="gelu")
    assert ResidualPromptConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown ResidualPromptConfig field\(s\): bogus"):
        ResidualPromptConfig.from_dict({"bogus": 1})


def test_init_uniform_range_and_seed():
    p = init_uniform(50, 20, 0.5, seed=3)
    assert p.shape == (50, 20) and p.abs().max() <= 0.5 and p.abs().max() > 0.45
    assert torch.equal(p, init_uniform(50, 20, 0.5, seed=3))
    assert torch.equal(p, (torch.rand(50, 20, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.5)


class _Tok:
    all_special_ids = [0]

    def convert_ids_to_tokens(self, ids):
        return ["[PAD]" if i == 0 else ("[unused1]" if i == 1 else f"t{i}") for i in ids]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(c) for c in text.split()]}


def test_init_vocab_rows_and_top_k():
    emb = nn.Embedding(10, 4)
    p = init_vocab(emb, 3, tokenizer=_Tok(), top_k=3, seed=0)
    rows = {tuple(emb.weight[i].tolist()) for i in (2, 3, 4)}  # ids 0 and 1 filtered, top 3 left
    assert {tuple(r.tolist()) for r in p} == rows


def test_init_text_repeats_and_cuts():
    emb = nn.Embedding(10, 4)
    p = init_text(emb, 5, "3 4", _Tok())
    assert torch.equal(p, emb.weight[[3, 4, 3, 4, 3]].detach())
    assert torch.equal(init_text(emb, 1, "3 4", _Tok()), emb.weight[[3]].detach())
