"""Batched decoding with a soft prompt per row, with or without the KV cache.

One loop for decoder-only and one for encoder-decoder backbones, written here rather than
delegated to ``backbone.generate`` so that what the cache holds is explicit: the prompted input
is run once, then one token per step, each row with its own positions (they count real tokens
only, so left padding does not shift them) and its own attention mask. ``use_cache=False``
recomputes the whole sequence every step: the reference the cached path must equal token for
token (tests/test_generation.py), the failure PEFT's prompt-tuning generation has had.

A decoder may start from a ``prefix.BatchPrefix``: the keys/values of each row's [BOS +] prompt,
computed once when the prompt is loaded; the rows then hold only the text after it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import TYPE_CHECKING

import torch

from .config import GenerationConfig

if TYPE_CHECKING:
    from ..model import ResidualPromptModel
    from .prefix import BatchPrefix


def cache_kwarg(backbone) -> str:
    """The name ``forward`` gives the KV cache: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    params = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache of a forward's output, whichever name this transformers gives it."""
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def row_generators(input_ids: torch.Tensor, attention_mask: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One sampler per row, seeded from ``seed`` and the row's own tokens: a row's draws depend on its input
    and the seed only, not on the other rows of its batch nor on its place there."""
    gens = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        real = [t for t, m in zip(ids, mask) if m]
        digest = hashlib.sha256(json.dumps([seed, real]).encode()).digest()
        gens.append(torch.Generator(device=input_ids.device).manual_seed(int.from_bytes(digest[:8], "little")))
    return gens


def pick_next(logits: torch.Tensor, config: GenerationConfig,
              generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """The next token of each row: argmax, or a draw from the tempered, nucleus-filtered distribution
    (with a list of generators, row r draws from the r-th).

    Args:
        logits: [B, V]. Returns: [B] long.
    """
    if not config.do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < config.top_p  # the top token always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    if isinstance(generator, list):
        return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def stop_token_ids(tokenizer, stop: tuple[str, ...]) -> list[int]:
    """Ids of the stop strings that are one special token (a chat template's end of turn: ``<|eot_id|>``,
    ``<end_of_turn>``): decoding drops those, so they stop a row by id, as EOS does."""
    ids, convert = [], getattr(tokenizer, "convert_tokens_to_ids", None)
    for s in stop if convert is not None else ():
        i = convert(s)
        if isinstance(i, int) and tokenizer.convert_ids_to_tokens(i) == s \
                and tokenizer.decode([i], skip_special_tokens=True) == "":
            ids.append(i)
    return ids


class _Stopper:
    """Marks rows finished at EOS, at a stop string's special token, or once their text contains a stop string."""

    def __init__(self, batch: int, eos_ids: list[int], config: GenerationConfig, tokenizer, device):
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stop, self.tokenizer = config.stop, tokenizer
        if self.stop and tokenizer is None:
            raise ValueError("stop strings need the tokenizer (pass tokenizer=...)")
        ends = list(eos_ids) + (stop_token_ids(tokenizer, self.stop) if self.stop else [])
        self.end_ids = torch.tensor(ends, dtype=torch.long, device=device)

    def update(self, tokens: list[torch.Tensor]) -> None:
        self.done |= torch.isin(tokens[-1], self.end_ids)
        if self.stop:
            rows = torch.stack(tokens, 1).cpu()  # one copy per step, not one per row
            for r in (~self.done).nonzero().flatten().tolist():
                text = self.tokenizer.decode(rows[r].tolist(), skip_special_tokens=True)
                if any(s in text for s in self.stop):
                    self.done[r] = True


def _keep_last_kw(backbone) -> dict:
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(backbone.forward).parameters else {}


def _decoder_loop(model: ResidualPromptModel, embeds, mask, positions, config, use_cache, cache, tokenizer,
                  eos_id, pad_id, generator=None) -> torch.Tensor:
    """Greedy / sampled decoding of a decoder from prompted inputs.

    Args:
        embeds: [B, T, d] the prompted rows; mask: [B, P + T] (P: cached prefix slots, 0 without one);
        positions: [B, T]; cache: a prefix cache holding the P slots, or None.
    Returns:
        [B, new] token ids; rows finished early hold ``pad_id`` after their EOS / stop.
    """
    run, embed = model.run_backbone, model.backbone.get_input_embeddings()
    key, keep = cache_kwarg(model.backbone), _keep_last_kw(model.backbone)
    if generator is None and config.do_sample:
        generator = torch.Generator(device=embeds.device).manual_seed(config.seed)
    stopper = _Stopper(embeds.shape[0], eos_id, config, tokenizer, embeds.device)
    step_embeds, step_pos = embeds, positions
    new: list[torch.Tensor] = []
    for _ in range(config.max_new_tokens):
        if use_cache:
            out = run({"inputs_embeds": step_embeds, "attention_mask": mask, "position_ids": step_pos},
                      **{key: cache}, use_cache=True, **keep)
            cache = output_cache(out)
        else:
            out = run({"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions},
                      use_cache=False, **keep)
        token = pick_next(out.logits[:, -1], config, generator)
        token = torch.where(stopper.done, torch.full_like(token, pad_id), token)
        new.append(token)
        stopper.update(new)
        if bool(stopper.done.all()):
            break
        step_embeds, step_pos = embed(token).unsqueeze(1), positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = torch.cat([positions, step_pos], dim=1)
        if not use_cache:
            embeds = torch.cat([embeds, step_embeds.to(embeds.dtype)], dim=1)
    return torch.stack(new, 1)


def _seq2seq_loop(model: ResidualPromptModel, inputs: dict, config, use_cache, tokenizer, eos_id,
                  pad_id, generator=None) -> torch.Tensor:
    """Decoding of an encoder-decoder: the prompted encoder runs once. Returns [B, new]."""
    backbone = model.backbone
    encoder_outputs = backbone.get_encoder()(inputs_embeds=inputs["inputs_embeds"],
                                             attention_mask=inputs["attention_mask"])
    start = backbone.config.decoder_start_token_id
    if start is None:
        raise ValueError(f"{type(backbone).__name__}: config has no decoder_start_token_id")
    b, device = inputs["inputs_embeds"].shape[0], inputs["inputs_embeds"].device
    decoder_ids = torch.full((b, 1), start, dtype=torch.long, device=device)
    key = cache_kwarg(backbone)
    if generator is None and config.do_sample:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    stopper = _Stopper(b, eos_id, config, tokenizer, device)
    cache, new = None, []
    for _ in range(config.max_new_tokens):
        common = {"encoder_outputs": encoder_outputs, "attention_mask": inputs["attention_mask"]}
        if use_cache:
            out = model.run_backbone({**common, "decoder_input_ids": decoder_ids[:, -1:]}, **{key: cache},
                                     use_cache=True)
            cache = output_cache(out)
        else:
            out = model.run_backbone({**common, "decoder_input_ids": decoder_ids}, use_cache=False)
        token = pick_next(out.logits[:, -1], config, generator)
        token = torch.where(stopper.done, torch.full_like(token, pad_id), token)
        new.append(token)
        stopper.update(new)
        decoder_ids = torch.cat([decoder_ids, token.unsqueeze(1)], dim=1)
        if bool(stopper.done.all()):
            break
    return torch.stack(new, 1)


def _ids(value) -> list[int]:
    """An id or a list of ids (as configs give EOS) as a list; None as []."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def end_ids(model: ResidualPromptModel, tokenizer=None) -> list[int]:
    """Every id that ends a row: the tokenizer's EOS, then the config's and the generation config's (chat
    models list several: Llama 3's <|eot_id|> and <|eom_id|>, Gemma's <end_of_turn>), as ``generate`` stops."""
    backbone = model.backbone
    found = _ids(getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None)
    found += _ids(getattr(backbone.config, "eos_token_id", None))
    found += _ids(getattr(getattr(backbone, "generation_config", None), "eos_token_id", None))
    return list(dict.fromkeys(found))


def special_ids(model: ResidualPromptModel, tokenizer=None) -> tuple[list[int], int]:
    """(end ids, pad id): ``end_ids``; the pad from the tokenizer, else the config, else the first end id, else 0."""
    ends = end_ids(model, tokenizer)
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    pad = pad if pad is not None else getattr(model.backbone.config, "pad_token_id", None)
    return ends, pad if pad is not None else (ends[0] if ends else 0)


def _check_decoder_rows(model, attention_mask: torch.Tensor, config: GenerationConfig, prefix) -> None:
    """Decoder rows must be left padded, and the prompt, the row and the new tokens must fit the positions."""
    from ..backbones import model_max_length

    if bool((attention_mask[:, -1] == 0).any()) and bool(attention_mask.sum(-1).gt(0).all()):
        raise ValueError("decoder rows must be left padded (a row ends with padding): the new tokens would "
                         "follow the pads")
    # positions count each row's own prefix and real tokens (left pads take none): check row by row, so a
    # long prompt in the batch does not refuse a short prompt's long input
    real = attention_mask.long().sum(-1).tolist()
    slots = [p.length for p in prefix.rows] if prefix is not None else [model.num_tokens] * len(real)
    need = [s + t + config.max_new_tokens - 1 for s, t in zip(slots, real)]  # the last new token is never fed
    limit = model_max_length(model.backbone, model.tokenizer)
    worst = max(range(len(need)), key=need.__getitem__, default=None)
    if worst is not None and need[worst] > limit:
        raise ValueError(f"the prompt ({slots[worst]} slots), {real[worst]} input tokens and max-new-tokens="
                         f"{config.max_new_tokens} need {need[worst]} positions; the backbone has {limit}")


@torch.no_grad()
def generate_ids(model: ResidualPromptModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 *, prompts: torch.Tensor | None = None, config: GenerationConfig | None = None,
                 use_cache: bool = True, prefix: BatchPrefix | None = None, tokenizer=None,
                 eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None) -> torch.Tensor:
    """New tokens for each row, the prompt in place.

    Args:
        input_ids: [B, T] (decoders: left padded; with ``prefix``, the text after the prefix only).
        attention_mask: [B, T] (default all ones).
        prompts: [n, d] or [B, n, d] (one per row); default the model's own. Not with ``prefix``.
        prefix: each row's precomputed [BOS +] prompt keys/values (decoders; see ``prefix``).
        tokenizer: needed for stop strings; gives EOS and pad ids. A row ends at any of ``end_ids``
            (or of ``eos_token_id``, an id or a list, when given).
    Returns:
        [B, new] new token ids (new <= config.max_new_tokens); after a row's EOS or stop, pad ids.
    """
    config = config or GenerationConfig()
    if model.family == "encoder":
        raise ValueError("generation needs a seq2seq or decoder backbone with a language-model head")
    device = model.backbone.get_input_embeddings().weight.device
    input_ids = input_ids.to(device)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    if prompts is not None:
        prompts = prompts.to(device)
    eos, pad = special_ids(model, tokenizer)
    eos = _ids(eos_token_id) if eos_token_id is not None else eos
    pad = pad_token_id if pad_token_id is not None else pad
    if model.family == "decoder":
        _check_decoder_rows(model, attention_mask, config, prefix)
    gens = row_generators(input_ids, attention_mask, config.seed) if config.do_sample else None
    if prefix is not None:
        if model.family != "decoder" or prompts is not None:
            raise ValueError("prefix= is for decoder backbones, and replaces prompts=")
        embeds, mask, positions, cache = prefix.inputs(model, input_ids, attention_mask)
        return _decoder_loop(model, embeds, mask, positions, config, True, cache, tokenizer, eos, pad, gens)
    inputs = model.prepare_inputs(input_ids, attention_mask, prompts)
    inputs.pop("_offsets")
    if model.family == "seq2seq":
        return _seq2seq_loop(model, inputs, config, use_cache, tokenizer, eos, pad, gens)
    return _decoder_loop(model, inputs["inputs_embeds"], inputs["attention_mask"], inputs["position_ids"], config,
                         use_cache, None, tokenizer, eos, pad, gens)


def decode_texts(tokens: torch.Tensor, tokenizer, config: GenerationConfig | None = None,
                 eos_token_id: int | list[int] | None = None) -> list[str]:
    """Texts of ``generate_ids`` rows: cut at the first end id (``eos_token_id``: an id or a list, as
    ``end_ids`` gives them; default the tokenizer's EOS) or stop token, special tokens dropped, cut before
    a stop string."""
    config = config or GenerationConfig()
    eos = _ids(eos_token_id if eos_token_id is not None else tokenizer.eos_token_id)
    ends = set(stop_token_ids(tokenizer, config.stop)) | set(eos)
    texts = []
    for row in tokens.tolist():
        row = row[: next((k for k, t in enumerate(row) if t in ends), len(row))]
        text = tokenizer.decode(row, skip_special_tokens=True)
        cuts = [text.index(s) for s in config.stop if s in text]
        texts.append(text[: min(cuts)] if cuts else text)
    return texts
