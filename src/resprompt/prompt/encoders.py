"""Prompt encoders: the soft prompt P and its reparameterisation into P'.

All encoders map their raw prompt ``P [n, d]`` to ``P' [n, d]`` with no batch dimension; the
wrapper broadcasts P' over the batch. ``reparam`` picks the network:

- ``none``:     P' = P                                      (Lester et al., 2021)
- ``mlp``:      P' = f(P)                                   ("PT + MLP": no skip)
- ``residual``: P' = P + f(P), f(x) = LN(W_up act(W_down x + b_down) + b_up)   (the method)
- ``lstm``:     P' = MLP(BiLSTM(P))                         ("PT + LSTM", P-tuning style)

With ``num_blocks > 1`` the blocks apply in sequence (each with its own skip for ``residual``).
With ``shared=False`` each token has its own stack of blocks (an ``nn.ModuleList`` per token).
Every trainable parameter lives under this module, so the wrapper can select them by name.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ResidualPromptConfig

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLPBlock(nn.Module):
    """f(x) = LN(W_up · act(W_down · x + b_down) + b_up), applied token by token.

    Args:
        dim: hidden size d.
        bottleneck: width m.
        activation: key of ``_ACTIVATIONS``.
        layer_norm: if False the LayerNorm is an identity.
        dropout: dropout probability after the activation.
        ln_gain: initial LayerNorm gain (1.0 is the paper; the embedding RMS matches the scale
            of the branch to the backbone's word embeddings).
    """

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu", layer_norm: bool = True,
                 dropout: float = 0.0, ln_gain: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        self.norm = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        if layer_norm:
            with torch.no_grad():
                self.norm.weight.fill_(ln_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., d] -> [..., d]"""
        return self.norm(self.up(self.dropout(self.act(self.down(x)))))


class PromptEncoder(nn.Module):
    """Holds the raw prompt P and computes P'.

    Args:
        config: the prompt configuration.
        init: initial raw prompt, [n, d].
        embedding_rms: RMS of the backbone's word embeddings (used when
            ``config.branch_scale == "embedding"``).
    """

    def __init__(self, config: ResidualPromptConfig, init: torch.Tensor, embedding_rms: float | None = None) -> None:
        super().__init__()
        n, d = init.shape
        if n != config.num_tokens:
            raise ValueError(f"initial prompt has {n} tokens but config.num_tokens={config.num_tokens}")
        self.config = config
        self.embedding = nn.Parameter(init.detach().clone().float())  # raw P, [n, d]
        gain = 1.0
        if config.branch_scale == "embedding":
            if embedding_rms is None:
                raise ValueError("branch_scale='embedding' needs the backbone's embedding RMS")
            gain = float(embedding_rms)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                MLPBlock(d, config.bottleneck, config.activation, config.layer_norm, config.dropout, gain)
                for _ in range(config.num_blocks)
            )

        if config.reparam in ("residual", "mlp"):
            if config.shared:
                self.blocks = stack()
            else:  # one stack of blocks per token
                self.blocks = nn.ModuleList(stack() for _ in range(n))
        elif config.reparam == "lstm":
            h = config.lstm_hidden or max(1, d // 2)
            self.lstm = nn.LSTM(d, h, num_layers=2, bidirectional=True, batch_first=True)
            self.lstm_head = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, d))

    @property
    def num_tokens(self) -> int:
        return self.embedding.shape[0]

    def _apply_stack(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        residual = self.config.reparam == "residual"
        for block in blocks:
            x = x + block(x) if residual else block(x)
        return x

    def forward(self) -> torch.Tensor:
        """Returns P', [n, d]."""
        p = self.embedding  # [n, d]
        reparam = self.config.reparam
        if reparam == "none":
            return p
        if reparam == "lstm":
            out, _ = self.lstm(p.unsqueeze(0))  # [1, n, 2h]
            return self.lstm_head(out[0])  # [n, d]
        if self.config.shared:
            return self._apply_stack(self.blocks, p)
        return torch.stack([self._apply_stack(blocks, p[i]) for i, blocks in enumerate(self.blocks)])
