"""Decoding with soft prompts: cached == uncached, batched == alone, KV prefix == recomputed prompt."""

import pytest
import torch

from conftest import BUILDERS, batch
from resprompt.generation.config import GenerationConfig
from resprompt.generation.decode import decode_texts, generate_ids, pick_next
from resprompt.generation.prefix import BatchPrefix, PromptPrefix
from resprompt.model import ResidualPromptModel
from resprompt.prompt.config import ResidualPromptConfig

ROWS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14], [1, 15]]


def _model(kind: str, n: int = 4) -> ResidualPromptModel:
    model = ResidualPromptModel(BUILDERS[kind](), ResidualPromptConfig(num_tokens=n)).eval()
    return model.fold_()


def _prompts(b: int, n: int = 4, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(b, n, 32, generator=g) * scale


GREEDY = GenerationConfig(max_new_tokens=8)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_cached_equals_uncached_on_a_mixed_batch(kind):
    model = _model(kind)
    ids, mask = batch(ROWS, pad_left=kind != "t5")
    prompts = _prompts(len(ROWS))
    cached = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, eos_token_id=-1)
    uncached = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, use_cache=False, eos_token_id=-1)
    assert cached.shape == (4, 8)
    assert torch.equal(cached, uncached)
    assert len({tuple(r) for r in cached.tolist()}) > 1  # the rows' prompts lead to different outputs


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_each_row_equals_the_row_alone(kind):
    model = _model(kind)
    ids, mask = batch(ROWS, pad_left=kind != "t5")
    prompts = _prompts(len(ROWS))
    together = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, eos_token_id=-1)
    for i, row in enumerate(ROWS):
        alone = generate_ids(model, torch.tensor([row]), prompts=prompts[i], config=GREEDY, use_cache=False,
                             eos_token_id=-1)
        assert alone[0].tolist() == together[i].tolist(), i


def test_right_padding_is_refused_nowhere_but_left_padding_is_what_decoders_equal():
    # decoders need left padding: the same rows right padded would put pads after the text
    model = _model("llama")
    ids, mask = batch(ROWS, pad_left=True)
    out = model.generate(ids, mask, max_new_tokens=3, prompts=_prompts(4), eos_token_id=-1)
    assert out.shape == (4, ids.shape[1] + 3)
    assert torch.equal(out[:, : ids.shape[1]], ids)


def test_rows_stop_at_eos_and_are_padded_after():
    model = _model("llama")
    ids, mask = batch(ROWS, pad_left=True)
    prompts = _prompts(4)
    free = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, eos_token_id=-1)
    # a token that first appears at position j > 0 of some row: make it the EOS
    r, j = next((r, j) for r, row in enumerate(free.tolist()) for j in range(1, 8) if row[j] not in row[:j])
    eos = int(free[r, j])
    out = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, eos_token_id=eos, pad_token_id=0)
    row = out[r].tolist()
    assert row[: j + 1] == free[r, : j + 1].tolist()
    assert all(t == 0 for t in row[j + 1:]) and len(row) > j + 1 or out.shape[1] == j + 1


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_kv_prefix_equals_recomputing_the_prompt(kind):
    model = _model(kind)
    prompts = _prompts(len(ROWS))
    ids, mask = batch(ROWS, pad_left=True)
    recomputed = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, use_cache=False, eos_token_id=-1)
    prefix = BatchPrefix([PromptPrefix.build(model, prompts[i]) for i in range(len(ROWS))])
    assert prefix.rows[0].length == 5 and prefix.rows[0].bos  # BOS + 4 prompt vectors
    text, text_mask = batch([r[1:] for r in ROWS], pad_left=True)  # the prefix holds the BOS
    cached = generate_ids(model, text, text_mask, prefix=prefix, config=GREEDY, eos_token_id=-1)
    assert torch.equal(cached, recomputed)


def test_kv_prefixes_of_different_lengths_in_one_batch():
    short, long = _model("llama", n=2), _model("llama", n=6)  # same backbone weights (seeded builders)
    long.backbone = short.backbone
    p_short, p_long = _prompts(1, 2)[0], _prompts(1, 6)[0]
    prefix = BatchPrefix([PromptPrefix.build(short, p_short), PromptPrefix.build(long, p_long)])
    text, mask = batch([ROWS[0][1:], ROWS[1][1:]], pad_left=True)
    mixed = generate_ids(short, text, mask, prefix=prefix, config=GREEDY, eos_token_id=-1)
    for r, (m, p) in enumerate([(short, p_short), (long, p_long)]):
        alone = generate_ids(m, torch.tensor([ROWS[r]]), prompts=p, config=GREEDY, use_cache=False, eos_token_id=-1)
        assert mixed[r].tolist() == alone[0].tolist(), r


def test_a_long_prefix_in_the_batch_does_not_refuse_a_short_prefix_row_that_fits():
    """Row 0: BOS + 2 slots, 53 text tokens, 8 new need 63 of the 64 positions (the last new token is never
    fed); row 1: BOS + 6 slots, 2 tokens.
    Each row's positions continue after its own prefix, so the batch fits (the old check added the longest
    prefix to the longest row: 7 + 53 + 8 = 68 > 64, and refused both)."""
    short, long = _model("llama", n=2), _model("llama", n=6)
    long.backbone = short.backbone
    p_short, p_long = _prompts(1, 2)[0], _prompts(1, 6)[0]
    prefix = BatchPrefix([PromptPrefix.build(short, p_short), PromptPrefix.build(long, p_long)])
    rows = [[5 + i % 40 for i in range(53)], [10, 11]]
    text, mask = batch(rows, pad_left=True)
    mixed = generate_ids(short, text, mask, prefix=prefix, config=GREEDY, eos_token_id=-1)
    alone = generate_ids(short, torch.tensor([[1] + rows[0]]), prompts=p_short, config=GREEDY, use_cache=False,
                         eos_token_id=-1)
    assert mixed[0].tolist() == alone[0].tolist()
    with pytest.raises(ValueError, match=r"the prompt \(3 slots\), 55 input tokens and max-new-tokens=8 need 65"):
        generate_ids(short, *batch([rows[0] + [9, 9], rows[1]], pad_left=True), prefix=prefix, config=GREEDY)


def test_prefix_refuses_a_row_without_text():
    model = _model("llama")
    prefix = BatchPrefix([PromptPrefix.build(model)])
    with pytest.raises(ValueError, match="no text after its prefix"):
        generate_ids(model, torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), prefix=prefix)


def test_sampling_is_seeded_and_tiny_top_p_is_greedy():
    model = _model("llama")
    ids, mask = batch(ROWS, pad_left=True)
    prompts = _prompts(4)
    sample = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=2.0, seed=3)
    a = generate_ids(model, ids, mask, prompts=prompts, config=sample, eos_token_id=-1)
    b = generate_ids(model, ids, mask, prompts=prompts, config=sample, eos_token_id=-1)
    assert torch.equal(a, b)
    greedy = generate_ids(model, ids, mask, prompts=prompts, config=GREEDY, eos_token_id=-1)[:, :6]
    assert not torch.equal(a, greedy)  # temperature 2 over a 99-token vocabulary departs from argmax
    nucleus = GenerationConfig(max_new_tokens=6, do_sample=True, top_p=1e-6, seed=3)
    assert torch.equal(generate_ids(model, ids, mask, prompts=prompts, config=nucleus, eos_token_id=-1), greedy)


def test_pick_next_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    cfg = GenerationConfig(do_sample=True, top_p=0.8)
    g = torch.Generator().manual_seed(0)
    draws = {int(pick_next(logits, cfg, g)) for _ in range(300)}
    assert draws == {0, 1}


class _CharTokenizer:
    """Decodes ids as letters (id 2 = EOS), enough to test stop strings."""

    eos_token_id, pad_token_id = 2, 0

    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i in (0, 2) and skip_special_tokens else chr(ord("a") + i % 26) for i in ids)


def test_stop_strings_end_rows_and_cut_the_text():
    tok = _CharTokenizer()
    assert decode_texts(torch.tensor([[3, 4, 5, 2, 6], [7, 8, 9, 10, 11]]), tok,
                        GenerationConfig(stop=("jk",))) == ["def", "hi"]
    model = _model("llama")
    ids, mask = batch(ROWS[:1], pad_left=True)
    free = generate_ids(model, ids, mask, prompts=_prompts(1), config=GREEDY, eos_token_id=-1)
    text = tok.decode(free[0].tolist())
    stop = text[2:4]
    cut = generate_ids(model, ids, mask, prompts=_prompts(1), config=GenerationConfig(max_new_tokens=8, stop=(stop,)),
                       tokenizer=tok, eos_token_id=-1)
    assert cut.shape[1] == text.index(stop) + len(stop)  # generation stopped once the stop string appeared
    assert decode_texts(cut, tok, GenerationConfig(stop=(stop,)), eos_token_id=-1) == [text[: text.index(stop)]]


@pytest.mark.parametrize("settings, message", [
    ({"max_new_tokens": 0}, "max-new-tokens=0 is invalid"),
    ({"temperature": 0.0}, "temperature=0.0 is invalid"),
    ({"temperature": float("nan")}, "temperature=nan is invalid"),
    ({"top_p": 1.5}, "top-p=1.5 is invalid"),
    ({"seed": -1}, "seed=-1 is invalid"),
    ({"stop": ("",)}, "stop=('',) is invalid"),
])
def test_generation_config_refuses_bad_values(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GenerationConfig(**settings)


def test_encoders_cannot_generate():
    model = ResidualPromptModel(BUILDERS["bert"](), ResidualPromptConfig(num_tokens=2))
    with pytest.raises(ValueError, match="generation needs a seq2seq or decoder backbone"):
        generate_ids(model, torch.tensor([[1, 2]]))


def test_decoder_rows_must_be_left_padded_and_fit_the_positions():
    model = _model("gpt2")  # 64 positions
    ids, mask = batch(ROWS, pad_left=False)
    with pytest.raises(ValueError, match="decoder rows must be left padded"):
        generate_ids(model, ids, mask, config=GREEDY)
    ids, mask = batch(ROWS, pad_left=True)
    with pytest.raises(ValueError, match=r"the prompt \(4 slots\), 6 input tokens and max-new-tokens=60 need 69 "
                                         "positions; the backbone has 64"):
        generate_ids(model, ids, mask, config=GenerationConfig(max_new_tokens=60))
    # an exact fit generates, as backbone.generate does (it was refused by one): the last token is never fed back
    one = torch.tensor([[1, 5, 6, 7, 8, 9]])  # 4 slots + 6 tokens: 10 positions; 55 new use positions up to 63
    cfg = GenerationConfig(max_new_tokens=55)
    assert generate_ids(model, one, config=cfg, eos_token_id=-1).shape == (1, 55)
    with pytest.raises(ValueError, match="need 65 positions"):
        generate_ids(model, one, config=GenerationConfig(max_new_tokens=56), eos_token_id=-1)


def test_no_kv_prefix_under_a_sliding_window():
    import transformers

    from resprompt.generation.prefix import prefix_unsupported

    cfg = transformers.MistralConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     sliding_window=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = ResidualPromptModel(transformers.MistralForCausalLM(cfg), ResidualPromptConfig(num_tokens=2)).eval()
    assert "sliding window 4" in prefix_unsupported(model)
    with pytest.raises(ValueError, match="recompute the prompt instead"):
        PromptPrefix.build(model)
    assert prefix_unsupported(_model("llama")) is None



def _word_tokenizer(words, special):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[3]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=words[0], eos_token=words[2], unk_token=words[3],
                                   additional_special_tokens=[special])


def test_a_stop_string_that_is_a_special_token_ends_the_row():
    """A chat end-of-turn token (here ``<eot>``) is dropped by decoding, so it must stop a row by its id."""
    tok = _word_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "cat", "dog", "<eot>", "red"], "<eot>")
    cfg = GenerationConfig(max_new_tokens=8, stop=("<eot>",))
    assert decode_texts(torch.tensor([[4, 5, 6, 7, 4], [5, 7, 0, 0, 0]]), tok, cfg) == ["cat dog", "dog red"]
    model = _model("llama")
    ids, mask = batch(ROWS[:1], pad_left=True)
    free = generate_ids(model, ids, mask, prompts=_prompts(1), config=GREEDY, eos_token_id=-1)[0].tolist()
    eot = free[2]  # the token generated third plays the end of turn
    assert eot > 3, "the seeded model must generate an ordinary token third"
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, model.backbone.config.vocab_size)]
    words[eot] = "<eot>"
    tok = _word_tokenizer(words, "<eot>")
    cut = generate_ids(model, ids, mask, prompts=_prompts(1), config=cfg, tokenizer=tok, eos_token_id=-1)
    assert cut[0].tolist() == free[: free.index(eot) + 1]  # stopped at the first end of turn
    assert decode_texts(cut, tok, cfg, eos_token_id=-1)[0] == " ".join(words[t] for t in free[: free.index(eot)])


def test_every_end_id_of_the_config_stops_a_row_as_generate_does():
    """Before: a list of EOS ids in the config was cut to its first (chat models list their end of turn
    second: Llama 3, Gemma), so rows ran past it to max_new_tokens where backbone.generate stops."""
    from conftest import tiny_llama
    from resprompt.generation.decode import end_ids

    bb = tiny_llama()
    model = ResidualPromptModel(bb, ResidualPromptConfig(num_tokens=4)).eval().fold_()
    ids = torch.tensor([[1, 5, 6, 7]])
    free = model.generate(ids, max_new_tokens=8, eos_token_id=-1)[0, 4:].tolist()
    end = free[2]  # the third new token plays a second end id
    assert end not in free[:2]
    bb.config.eos_token_id = bb.generation_config.eos_token_id = [2, end]
    assert end_ids(model) == [2, end]
    ours = model.generate(ids, max_new_tokens=8)[0, 4:].tolist()
    inputs = model.prepare_inputs(ids)
    inputs.pop("_offsets")
    theirs = bb.generate(inputs_embeds=inputs["inputs_embeds"], attention_mask=inputs["attention_mask"],
                         max_new_tokens=8, do_sample=False)[0].tolist()
    assert ours == theirs == free[:3]



def test_a_sampled_row_depends_on_its_input_and_the_seed_only():
    """Before: one generator for the batch: a row's draws depended on the rows before it (so --batch-size,
    the file's order or one more record changed every other row's sampled text)."""
    model = _model("llama")
    rows = [[1, 5, 6, 7], [1, 8, 9], [1, 10, 11, 12, 13], [1, 14]]
    sample = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=2.0, seed=3)
    prompt = _prompts(1)[0]
    together = generate_ids(model, *batch(rows, pad_left=True), prompts=prompt, config=sample, eos_token_id=-1)
    reverse = generate_ids(model, *batch(rows[::-1], pad_left=True), prompts=prompt, config=sample, eos_token_id=-1)
    for i, row in enumerate(rows):
        alone = generate_ids(model, torch.tensor([row]), prompts=prompt, config=sample, eos_token_id=-1)
        assert together[i].tolist() == alone[0].tolist() == reverse[len(rows) - 1 - i].tolist()
    other = generate_ids(model, torch.tensor([rows[0]]), prompts=prompt, eos_token_id=-1,
                         config=GenerationConfig(max_new_tokens=6, do_sample=True, temperature=2.0, seed=4))
    assert other[0].tolist() != together[0].tolist()  # the seed still matters
