"""Serving generative prompts (decoder or seq2seq): a record -> one input row; rows -> generated text.

A record becomes the input ``resprompt predict`` gives it (``task.instances`` then
``genfeatures.generation_features``), and decoding is the same greedy loop with the prompt's saved
``max_new_tokens`` and stop strings, so a served text equals the one ``predict`` writes.

Decoders serve from a KV prefix: each prompt's [BOS +] prompt keys and values are computed once,
when the prompt loads (``generation.prefix.PromptPrefix``), and every row of
a mixed batch starts from its own prompt's prefix; the rows carry only their text. A row that does
not start with the BOS its prefix holds (or a prompt whose placement a prefix cannot hold) is run
with the prompt recomputed, grouped with rows of the same prompt length. Seq2seq rows run with one
prompt per row (``prompts=[B, n, d]``), grouped by prompt length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..generation.decode import decode_texts, end_ids, generate_ids
from ..generation.prefix import BatchPrefix
from ..tasks.generative import generative_task_from_metadata
from ..tasks.genfeatures import GenFeature, collate_generative, generation_features
from ..tasks.records import DataError
from .config import RegistryOptions
from .decoder_scoring import PrefixCache, pad_rows
from .prompts import LoadedPrompt, PromptSkipped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenRow:
    """One record of one prompt: its input ids (with the BOS where the tokenizer adds one)."""

    prompt: LoadedPrompt
    input_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.input_ids) + self.prompt.model.num_tokens


class GenerationHandler:
    """Task kind ``generation``: checks at load, prepares records, runs mixed batches."""

    kind = "generation"

    def __init__(self) -> None:
        self.prefix = PrefixCache()  # prompt -> its KV prefix (decoders), built once

    def task_for(self, meta: dict, where: str):
        try:
            return generative_task_from_metadata(meta, where)
        except DataError as e:
            raise PromptSkipped(str(e)) from None

    def check(self, prompt: LoadedPrompt) -> None:
        model = prompt.model
        if model.family not in ("decoder", "seq2seq") or model.head_kind is not None:
            raise PromptSkipped(f"{prompt.path}: a generative prompt needs a decoder or seq2seq backbone with a "
                                f"language-model head; this one is {type(model.backbone).__name__}")
        try:
            prompt.task.generation_config()
        except ValueError as e:
            raise PromptSkipped(f"{prompt.path}: {e}") from None
        if prompt.task.chat and not getattr(model.tokenizer, "chat_template", None):
            raise PromptSkipped(f"{prompt.path}: a chat prompt, but the backbone's tokenizer has no chat template")
        self.prefix(prompt)  # decoders: the KV prefix, computed once at load instead of on the first request

    def prepare(self, prompt: LoadedPrompt, record: dict, where: str, options: RegistryOptions) -> GenRow:
        model, task = prompt.model, prompt.task
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        record = {**record, "__file__": "request", "__line__": where}
        (instance,) = task.instances([record], model.family, "request")
        max_len = min(options.max_length, model.max_text_length)
        (feature,) = generation_features([instance], model.tokenizer, model.family, max_len, task.max_new_tokens)
        if options.strict_length:
            (full,) = generation_features([instance], model.tokenizer, model.family, 10**9, task.max_new_tokens)
            if len(full.input_ids) > len(feature.input_ids):
                raise DataError(f"request:{where}: the input has {len(full.input_ids)} tokens, more than the "
                                f"{len(feature.input_ids)} this prompt takes beside {task.max_new_tokens} new tokens "
                                "(the server runs with --strict-length)")
        return GenRow(prompt, tuple(feature.input_ids))

    def run(self, rows: Sequence[GenRow], options: RegistryOptions) -> list[dict]:
        """``{"text": ...}`` for each row, in order."""
        out: list[dict | None] = [None] * len(rows)
        for how, idx in self._groups(rows, options):
            try:
                texts: list = [{"text": t} for t in self._generate(how, [rows[i] for i in idx])]
            except Exception as e:  # noqa: BLE001 (one group's failure is reported to its own rows only)
                log.exception("generation over %d rows failed", len(idx))
                texts = [e] * len(idx)
            for i, prediction in zip(idx, texts):
                out[i] = prediction
        return out

    def _groups(self, rows: Sequence[GenRow], options: RegistryOptions) -> list[tuple[str, list[int]]]:
        """(how, row indices) per batch: rows sharing decoding settings, and a prefix or a prompt length."""
        keyed: dict[tuple, list[int]] = {}
        for i in sorted(range(len(rows)), key=lambda i: -rows[i].length):
            row = rows[i]
            pre = self.prefix(row.prompt)
            use_prefix = pre is not None and (not pre.bos or row.input_ids[:1] == (_bos(row.prompt),)) and (
                len(row.input_ids) > int(pre.bos))
            how = "prefix" if use_prefix else "prompts"
            shape = None if use_prefix else (row.prompt.model.num_tokens, row.prompt.model.placement_mode)
            key = (how, row.prompt.task.generation_config(), shape, id(row.prompt) if options.group_by_prompt else None)
            keyed.setdefault(key, []).append(i)
        size = options.max_batch_size
        return [(key[0], idx[s: s + size]) for key, idx in keyed.items() for s in range(0, len(idx), size)]

    @torch.no_grad()
    def _generate(self, how: str, rows: list[GenRow]) -> list[str]:
        model = rows[0].prompt.model  # all rows share the backbone, the family and the tokenizer
        tok, config = model.tokenizer, rows[0].prompt.task.generation_config()
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        if how == "prefix":
            prefixes = [self.prefix(r.prompt) for r in rows]
            ids = [list(r.input_ids[int(p.bos):]) for r, p in zip(rows, prefixes)]
            batch = pad_rows(ids, pad, left=True)
            new = generate_ids(model, *batch, prefix=BatchPrefix(prefixes), config=config, tokenizer=tok)
        else:
            batch = collate_generative([GenFeature(list(r.input_ids), None, 0) for r in rows], pad, model.family)
            prompts = torch.stack([r.prompt.model.prompt() for r in rows])  # [B, n, d]
            new = generate_ids(model, batch["input_ids"], batch["attention_mask"], prompts=prompts, config=config,
                               tokenizer=tok)
        return [t.strip() for t in decode_texts(new, tok, config, end_ids(model, tok))]


def _bos(prompt: LoadedPrompt) -> int | None:
    tok = prompt.model.tokenizer
    return getattr(tok, "bos_token_id", None)
