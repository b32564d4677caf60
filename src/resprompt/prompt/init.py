"""Initialisers for the raw soft prompt P: each returns a fresh ``[n, d]`` float32 tensor.

- ``uniform``: U(-r, r), r = ``init_range`` (0.5 as in the paper).
- ``vocab``: embeddings of token ids sampled without replacement (when possible) from the
  vocabulary, optionally among the ``k`` lowest ids only. For SentencePiece and BPE vocabularies
  low ids are the frequent pieces (Lester et al. sample from T5's 5,000 first ids); special tokens
  and BERT's ``[unused*]`` slots are skipped when the tokenizer is known.
- ``text``: embeddings of the tokens of ``init_text``, repeated or cut to n.
- ``saved``: a folded prompt saved by this library, or a PEFT prompt-tuning adapter.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ResidualPromptConfig


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def init_uniform(n: int, d: int, r: float = 0.5, seed: int | None = None) -> torch.Tensor:
    """Returns U(-r, r) of shape [n, d]."""
    return (torch.rand(n, d, generator=_generator(seed)) * 2 - 1) * r


def _candidate_ids(vocab_size: int, tokenizer=None, top_k: int | None = None) -> torch.Tensor:
    ids = torch.arange(vocab_size)
    if tokenizer is not None:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        keep = [
            i for i, tok in enumerate(tokens)
            if i not in special and tok is not None and not str(tok).startswith(("[unused", "<unused", "<extra_id"))
        ]
        ids = torch.tensor(keep, dtype=torch.long)
    if top_k is not None:
        ids = ids[:top_k]
    if len(ids) == 0:
        raise ValueError("vocab init: no candidate token ids left after filtering")
    return ids


def init_vocab(embedding: nn.Embedding, n: int, tokenizer=None, top_k: int | None = None,
               seed: int | None = None) -> torch.Tensor:
    """Returns the embeddings of n sampled token ids, [n, d]."""
    ids = _candidate_ids(embedding.weight.shape[0], tokenizer, top_k)
    gen = _generator(seed)
    if len(ids) >= n:
        pick = ids[torch.randperm(len(ids), generator=gen)[:n]]
    else:
        pick = ids[torch.randint(len(ids), (n,), generator=gen)]
    return embedding.weight[pick].detach().float().clone()


def init_text(embedding: nn.Embedding, n: int, text: str, tokenizer) -> torch.Tensor:
    """Returns the embeddings of ``text``'s tokens repeated or cut to n tokens, [n, d]."""
    if tokenizer is None:
        raise ValueError("init='text' needs a tokenizer: pass tokenizer= to ResidualPromptModel")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"init_text={text!r} tokenizes to no tokens")
    ids = (ids * (n // len(ids) + 1))[:n]
    return embedding.weight[torch.tensor(ids)].detach().float().clone()


def initial_prompt(config: ResidualPromptConfig, embedding: nn.Embedding, tokenizer=None) -> torch.Tensor:
    """Builds the initial raw prompt for ``config``, [n, d]."""
    n, d = config.num_tokens, embedding.weight.shape[1]
    if config.init == "uniform":
        return init_uniform(n, d, config.init_range, config.init_seed)
    if config.init == "vocab":
        return init_vocab(embedding, n, tokenizer, config.init_vocab_top_k, config.init_seed)
    if config.init == "text":
        return init_text(embedding, n, config.init_text, tokenizer)
    from ..formats import read_prompt  # any saved prompt: ours, a PEFT adapter, a run folder

    prompt = read_prompt(config.init_path).prompt
    if prompt.shape != (n, d):
        raise ValueError(
            f"init_path={config.init_path!r} holds a prompt of shape {tuple(prompt.shape)}, expected ({n}, {d})"
        )
    return prompt.float().clone()
