"""Configuration of a soft prompt and its reparameterisation, as one validated dataclass.

Every field is checked in ``__post_init__``; a bad value raises ``ValueError`` naming the
field, the value and what is allowed. ``to_dict``/``from_dict`` round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .placement import PLACEMENTS as _PLACEMENT_FUNCTIONS

REPARAMS = ("residual", "none", "mlp", "lstm")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")
INITS = ("uniform", "vocab", "text", "saved")
PLACEMENTS = ("auto", *_PLACEMENT_FUNCTIONS)
BRANCH_SCALES = ("paper", "embedding")
POOLINGS = ("auto", "native", "pooler", "cls", "mean")


@dataclass
class ResidualPromptConfig:
    """How the soft prompt is built, initialised and placed."""

    num_tokens: int = field(default=10, metadata={"help": "Number of soft prompt tokens n."})
    reparam: str = field(
        default="residual",
        metadata={"help": "residual (the method), none (plain prompt tuning), mlp (no skip), lstm (P-tuning)."},
    )
    bottleneck: int = field(default=400, metadata={"help": "Bottleneck width m of the MLP."})
    activation: str = field(default="relu", metadata={"help": "Activation inside the MLP: relu, gelu, tanh, silu."})
    layer_norm: bool = field(default=True, metadata={"help": "LayerNorm on the MLP branch output."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout after the activation inside the MLP."})
    shared: bool = field(default=True, metadata={"help": "One network for all tokens (True) or one per token."})
    num_blocks: int = field(default=1, metadata={"help": "Number of MLP blocks applied in sequence (untied)."})
    branch_scale: str = field(
        default="paper",
        metadata={
            "help": "paper: LayerNorm gain 1 (branch norm ~ sqrt(d)); embedding: LayerNorm gain "
            "initialised to the RMS of the backbone's word embeddings, so branch and skip match in scale."
        },
    )
    lstm_hidden: int | None = field(default=None, metadata={"help": "LSTM hidden size (lstm only; default d // 2)."})
    init: str = field(default="uniform", metadata={"help": "uniform, vocab, text or saved."})
    init_range: float = field(default=0.5, metadata={"help": "uniform init draws from [-r, r]."})
    init_vocab_top_k: int | None = field(
        default=None, metadata={"help": "vocab init samples only among the k lowest (most frequent) token ids."}
    )
    init_text: str | None = field(default=None, metadata={"help": "text init: the string whose embeddings start P."})
    init_path: str | None = field(default=None, metadata={"help": "saved init: a saved prompt folder or PEFT adapter."})
    init_seed: int | None = field(default=None, metadata={"help": "Seed for the prompt initialiser (None: global RNG)."})
    placement: str = field(
        default="auto",
        metadata={
            "help": "auto (encoders: after [CLS]; decoders: after BOS when present; seq2seq: prefix), "
            "prefix (before all real tokens), after_first (after the first real token) or after_bos "
            "(after the first token where it is BOS, else before it)."
        },
    )
    pooling: str = field(
        default="auto",
        metadata={
            "help": "Encoder classification readout: auto (what the checkpoint declares in 1_Pooling/config.json, "
            "else native), native (the architecture's own), pooler, cls (first text token) or mean (mean of the "
            "text tokens, prompt slots excluded)."
        },
    )
    train_head: bool = field(
        default=True, metadata={"help": "Train the task head of a classification backbone with the prompt."}
    )

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"ResidualPromptConfig.{name}={getattr(self, name)!r} is invalid: expected {allowed}")

        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "a positive integer")

        for name, allowed in (
            ("reparam", REPARAMS),
            ("activation", ACTIVATIONS),
            ("init", INITS),
            ("placement", PLACEMENTS),
            ("branch_scale", BRANCH_SCALES),
            ("pooling", POOLINGS),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, "one of " + ", ".join(allowed))
        positive_int("num_tokens")
        positive_int("bottleneck")
        positive_int("num_blocks")
        if self.lstm_hidden is not None:
            positive_int("lstm_hidden")
        if self.init_vocab_top_k is not None:
            positive_int("init_vocab_top_k")
        for name in ("layer_norm", "shared", "train_head"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "a number in [0, 1)")
        if not isinstance(self.init_range, (int, float)) or not math.isfinite(self.init_range) or self.init_range <= 0:
            raise bad("init_range", "a positive finite number")
        if self.init == "text" and not self.init_text:
            raise bad("init_text", "a non-empty string when init='text'")
        if self.init == "saved" and not self.init_path:
            raise bad("init_path", "a prompt folder when init='saved'")
        if self.reparam == "lstm" and not self.shared:
            raise bad("shared", "True for reparam='lstm' (the LSTM runs across tokens)")
        if self.branch_scale == "embedding" and not self.layer_norm:
            raise bad("branch_scale", "'paper' when layer_norm is False (the scale is the LayerNorm gain)")
        if self.branch_scale == "embedding" and self.reparam not in ("residual", "mlp"):
            raise bad("branch_scale", f"'paper' for reparam={self.reparam!r}, which has no LayerNorm branch to scale")
        seed = self.init_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
            raise bad("init_seed", "an integer in [0, 2**64) or None")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResidualPromptConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ResidualPromptConfig field(s): {', '.join(unknown)}")
        return cls(**data)
