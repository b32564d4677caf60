"""Decoding settings: one validated dataclass shared by ``eval``, ``predict``, Python and serving."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode.

    Args:
        max_new_tokens: at most this many new tokens per row (EOS included).
        do_sample: sample from the (temperature, top-p) distribution; greedy otherwise.
        temperature: divides the logits before sampling (> 0).
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.
        seed: seeds the sampler (one generator per row, seeded by this and the row's tokens;
            torch's global RNG is not used).
        stop: strings that end a row; the returned text stops before the first one.
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(name, expected):
            return ValueError(f"{name.replace('_', '-')}={getattr(self, name)!r} is invalid: expected {expected}")

        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "a positive integer")
        if not isinstance(self.do_sample, bool):
            raise bad("do_sample", "true or false")
        for name, ok in (("temperature", lambda v: v > 0), ("top_p", lambda v: 0 < v <= 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise bad(name, "a number > 0" if name == "temperature" else "a number in (0, 1]")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise bad("seed", "a whole number >= 0")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        stop = tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise bad("stop", "non-empty strings")
        object.__setattr__(self, "stop", stop)

    def to_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed, "stop": list(self.stop)}
