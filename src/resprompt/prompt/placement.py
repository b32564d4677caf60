"""Where the soft prompt goes in a batch: pure functions on tensors, no model involved.

A row's prompt starts at its *offset*: the index, in the unprompted row, before which the n
prompt vectors are inserted. Every row may have its own offset (left padding, BOS or not) and
its own prompt (multi-task batches). Inserting shifts the tokens at and after the offset right by n.

Example, n = 2, offset = 1 (after [CLS]):  [CLS] a b [PAD]  ->  [CLS] p0 p1 a b [PAD]
Example, left padding, offset = 2 (first real token, prefix): [PAD] [PAD] a b -> [PAD] [PAD] p0 p1 a b
"""

from __future__ import annotations

import torch


def first_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first attended position (0 for an all-padding row).

    Args:
        attention_mask: [B, T], 1 on real tokens.
    Returns:
        [B] long.
    """
    return (attention_mask.cumsum(-1) == 0).sum(-1).clamp(max=max(attention_mask.shape[-1] - 1, 0))


def _prefix(first: torch.Tensor, seq_len: int, input_ids, bos_token_id) -> torch.Tensor:
    """Before the first real token."""
    return first


def _after_first(first: torch.Tensor, seq_len: int, input_ids, bos_token_id) -> torch.Tensor:
    """After the first real token ([CLS] of an encoder, as in the paper)."""
    return (first + 1).clamp(max=seq_len)


def _after_bos(first: torch.Tensor, seq_len: int, input_ids, bos_token_id) -> torch.Tensor:
    """After the first real token where it is BOS, before it elsewhere (decoders)."""
    if bos_token_id is None or input_ids is None:
        return first
    is_bos = input_ids.gather(1, first.unsqueeze(1)).squeeze(1) == bos_token_id
    return first + is_bos.long()


# The placements: name -> f(first real index [B], T, input_ids, bos id) -> offsets [B]. Adding an
# entry here is all a new placement needs (the config's allowed values come from this table).
PLACEMENTS = {"prefix": _prefix, "after_first": _after_first, "after_bos": _after_bos}
# What placement="auto" means for each backbone family.
AUTO_PLACEMENT = {"encoder": "after_first", "seq2seq": "prefix", "decoder": "after_bos"}


def resolve_placement(mode: str, family: str) -> str:
    """The concrete placement: ``mode`` itself, or the family's default when ``mode == "auto"``."""
    return AUTO_PLACEMENT[family] if mode == "auto" else mode


def prompt_offsets(
    attention_mask: torch.Tensor,
    mode: str,
    input_ids: torch.Tensor | None = None,
    bos_token_id: int | None = None,
) -> torch.Tensor:
    """Insertion offsets for each row.

    Args:
        attention_mask: [B, T].
        mode: a key of ``PLACEMENTS``: ``prefix`` (before the first real token), ``after_first``
            (after it) or ``after_bos`` (after it only where that token is ``bos_token_id``).
        input_ids: [B, T], needed for ``after_bos``.
        bos_token_id: BOS id for ``after_bos`` (None: same as ``prefix``).
    Returns:
        [B] long offsets in [0, T].
    """
    if mode not in PLACEMENTS:
        raise ValueError(f"unknown placement mode {mode!r}, expected one of {', '.join(PLACEMENTS)}")
    return PLACEMENTS[mode](first_real_index(attention_mask), attention_mask.shape[-1], input_ids, bos_token_id)


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves each row's padding to its left, keeping the real tokens in order.

    Rows must hold one contiguous run of real tokens (right or left padding). Pad slots keep their
    token ids (they are masked). Args: [B, T] each. Returns: ([B, T], [B, T]).
    """
    t = attention_mask.shape[1]
    length = attention_mask.long().sum(-1, keepdim=True)  # [B, 1]
    first = first_real_index(attention_mask).unsqueeze(1)  # [B, 1]
    j = torch.arange(t, device=input_ids.device).unsqueeze(0)  # [1, T]
    # output j holds real token j - (T - length) of the row, i.e. source first + j - (T - length)
    src = (first + j - (t - length)).clamp(0, max(t - 1, 0))
    real = j >= t - length
    ids = torch.where(real, input_ids.gather(1, src), input_ids)
    return ids, real.to(attention_mask.dtype)


def uniform_offset(offsets: torch.Tensor) -> int | None:
    """The common offset when every row has the same one (no left padding), else None.

    Lets the insertion use slicing and one concatenation, as cheap as plain prefixing; rows with
    different offsets take the gather path.
    """
    o = offsets[0]
    return int(o) if bool((offsets == o).all()) else None


def _layout(offsets: torch.Tensor, n: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output position: is it a prompt slot, its source token index, its prompt index.

    Returns:
        is_prompt [B, T + n] bool, src [B, T + n] long in [0, T), pidx [B, T + n] long in [0, n).
    """
    j = torch.arange(seq_len + n, device=offsets.device).unsqueeze(0)  # [1, T + n]
    off = offsets.unsqueeze(1)  # [B, 1]
    is_prompt = (j >= off) & (j < off + n)
    src = torch.where(j < off, j, j - n).clamp(0, max(seq_len - 1, 0))
    pidx = (j - off).clamp(0, n - 1)
    return is_prompt, src, pidx


def insert_prompt(embeds: torch.Tensor, prompt: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Inserts each row's prompt vectors at its offset.

    Args:
        embeds: [B, T, H] token embeddings.
        prompt: [B, n, H] (one prompt per row) or [n, H] (shared).
        offsets: [B].
    Returns:
        [B, T + n, H].
    """
    b, t, h = embeds.shape
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(b, -1, -1)
    n = prompt.shape[1]
    o = uniform_offset(offsets)
    if o is not None:
        return torch.cat([embeds[:, :o], prompt.to(embeds.dtype), embeds[:, o:]], dim=1)
    is_prompt, src, pidx = _layout(offsets, n, t)
    tokens = embeds.gather(1, src.unsqueeze(-1).expand(-1, -1, h))  # [B, T + n, H]
    prompts = prompt.gather(1, pidx.unsqueeze(-1).expand(-1, -1, h))  # [B, T + n, H]
    return torch.where(is_prompt.unsqueeze(-1), prompts.to(tokens.dtype), tokens)


def insert_constant(x: torch.Tensor, value: int | float, offsets: torch.Tensor, n: int) -> torch.Tensor:
    """Inserts n copies of ``value`` at each row's offset (attention mask: 1, labels: -100, token types: 0).

    Args:
        x: [B, T].
    Returns:
        [B, T + n].
    """
    o = uniform_offset(offsets)
    if o is not None:
        return torch.cat([x[:, :o], x.new_full((x.shape[0], n), value), x[:, o:]], dim=1)
    is_prompt, src, _ = _layout(offsets, n, x.shape[1])
    return torch.where(is_prompt, torch.full_like(src, value, dtype=x.dtype), x.gather(1, src))


def remove_prompt(x: torch.Tensor, offsets: torch.Tensor, n: int, causal: bool = False) -> torch.Tensor:
    """Inverse of the insertion: keeps one output per real token.

    With ``causal=True`` (next-token logits of a decoder) the real token just before the prompt
    (BOS) takes the output of the last prompt slot instead of its own, because that slot is what
    predicts the first token after the prompt. Output i then predicts real token i + 1, as in an
    unprompted model.

    Args:
        x: [B, T + n, ...].
    Returns:
        [B, T, ...].
    """
    b, tn = x.shape[:2]
    t = tn - n
    i = torch.arange(t, device=x.device).unsqueeze(0)  # [1, T]
    keep_below = offsets.unsqueeze(1) - (1 if causal else 0)
    src = torch.where(i < keep_below, i, i + n)  # [B, T]
    src = src.view(b, t, *([1] * (x.dim() - 2))).expand(b, t, *x.shape[2:])
    return x.gather(1, src)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so left padding does not shift them. [B, T] -> [B, T]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
