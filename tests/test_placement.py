"""Where the prompt goes: exact checks of the pure placement functions."""

import torch

from resprompt.prompt import placement as pl


def test_offsets_prefix_after_first_after_bos_under_padding():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    ids = torch.tensor([[7, 5, 6, 0], [0, 0, 7, 5], [0, 0, 0, 0]])
    assert pl.prompt_offsets(mask, "prefix").tolist() == [0, 2, 3]
    assert pl.prompt_offsets(mask, "after_first").tolist() == [1, 3, 4]
    assert pl.prompt_offsets(mask, "after_bos", ids, bos_token_id=7).tolist() == [1, 3, 3]
    assert pl.prompt_offsets(mask, "after_bos", ids, bos_token_id=None).tolist() == [0, 2, 3]


def test_insert_prompt_exact():
    embeds = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # [2, 3, 1]
    prompt = torch.tensor([[[10.0], [11.0]], [[20.0], [21.0]]])  # [2, 2, 1]
    out = pl.insert_prompt(embeds, prompt, torch.tensor([1, 3]))
    assert out.squeeze(-1).tolist() == [[1, 10, 11, 2, 3], [4, 5, 6, 20, 21]]
    shared = pl.insert_prompt(embeds, prompt[0], torch.tensor([0, 2]))
    assert shared.squeeze(-1).tolist() == [[10, 11, 1, 2, 3], [4, 5, 10, 11, 6]]


def test_insert_constant_and_remove_are_inverse():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    off = torch.tensor([0, 2])
    y = pl.insert_constant(x, -100, off, 2)
    assert y.tolist() == [[-100, -100, 1, 2, 3], [4, 5, -100, -100, 6]]
    assert torch.equal(pl.remove_prompt(y, off, 2), x)
    z = torch.arange(2 * 5 * 3).view(2, 5, 3)
    assert pl.remove_prompt(z, off, 2)[1].tolist() == [z[1, 0].tolist(), z[1, 1].tolist(), z[1, 4].tolist()]


def test_gradient_flows_to_prompt():
    prompt = torch.ones(2, 3, requires_grad=True)
    out = pl.insert_prompt(torch.zeros(2, 4, 3), prompt, torch.tensor([0, 1]))
    out.sum().backward()
    assert torch.equal(prompt.grad, torch.full((2, 3), 2.0))


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert pl.position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_remove_prompt_causal_takes_last_prompt_slot_for_token_before_prompt():
    y = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])  # BOS p p a b / p p a b c
    off = torch.tensor([1, 0])
    assert pl.remove_prompt(y, off, 2, causal=True).tolist() == [[12, 13, 14], [22, 23, 24]]
    assert pl.remove_prompt(y, off, 2).tolist() == [[10, 13, 14], [22, 23, 24]]


def test_uniform_offset_fast_path_equals_gather_path():
    torch.manual_seed(0)
    embeds, prompt = torch.randn(3, 5, 4), torch.randn(3, 2, 4)
    x = torch.arange(15).view(3, 5)
    for o in (0, 1, 5):
        same = torch.full((3,), o)
        mixed = torch.tensor([o, o, (o + 1) % 6])  # forces the gather path for the first rows
        fast, slow = pl.insert_prompt(embeds, prompt, same), pl.insert_prompt(embeds, prompt, mixed)
        assert pl.uniform_offset(same) == o and pl.uniform_offset(mixed) is None
        assert torch.equal(fast[:2], slow[:2])
        assert torch.equal(pl.insert_constant(x, -1, same, 2)[:2], pl.insert_constant(x, -1, mixed, 2)[:2])
