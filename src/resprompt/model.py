"""ResidualPromptModel: a frozen Hugging Face backbone plus a trainable (residual) soft prompt.

The backbone family (encoder, seq2seq, decoder) is decided once, in ``backbones.detect_family``;
here it only selects the default placement and whether token logits are trimmed:

- encoder (BERT, RoBERTa, MPNet, MiniLM): the prompt follows [CLS]; the classification head trains.
- seq2seq (T5, BART): the prompt is prepended to the encoder input; labels are text.
- decoder (GPT-2, Llama, SmolLM, Qwen, Gemma): the prompt follows BOS where the row starts with
  one, right before each row's real tokens under left padding; labels are -100 on prompt slots;
  position ids count real tokens only; returned logits cover the real tokens only.

Trainable parameters are exactly ``prompt_encoder.*`` plus the head (``backbone.<head>.*``).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from . import placement as pl
from .config import ResidualPromptConfig
from .encoders import PromptEncoder
from .init import initial_prompt
from .io import embedding_rms

log = logging.getLogger(__name__)

HEAD_MODULES = ("classifier", "score", "classification_head", "qa_outputs")


def find_head(backbone: nn.Module) -> str | None:
    """Name of the task head a classification backbone adds on top of the pretrained body."""
    if not any(s in type(backbone).__name__ for s in ("ForSequenceClassification", "ForMultipleChoice",
                                                      "ForTokenClassification", "ForQuestionAnswering")):
        return None
    for name in HEAD_MODULES:
        if isinstance(getattr(backbone, name, None), nn.Module):
            return name
    return None


class ResidualPromptModel(nn.Module):
    """A frozen backbone with a soft prompt.

    Args:
        backbone: any ``transformers`` model (frozen here).
        config: the prompt configuration (default ``ResidualPromptConfig()``).
        tokenizer: needed for ``init='text'`` and to skip special tokens in ``init='vocab'``.
        family: override the detected family ("encoder", "seq2seq", "decoder").
    """

    def __init__(self, backbone: nn.Module, config: ResidualPromptConfig | None = None, tokenizer=None,
                 family: str | None = None, _init: torch.Tensor | None = None) -> None:
        super().__init__()
        from .backbones import detect_family

        self.config = config or ResidualPromptConfig()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.family = family or detect_family(backbone)
        self.strip_prompt_logits = True
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.head_name = find_head(backbone) if self.config.train_head else None
        if self.head_name is not None:
            for p in getattr(backbone, self.head_name).parameters():
                p.requires_grad_(True)
        emb = backbone.get_input_embeddings()
        init = _init if _init is not None else initial_prompt(self.config, emb, tokenizer)
        rms = embedding_rms(emb) if self.config.branch_scale == "embedding" else None
        self.prompt_encoder: PromptEncoder | None = PromptEncoder(self.config, init, rms).to(emb.weight.device)
        self.register_buffer("folded_prompt", None, persistent=False)

    # ------------------------------------------------------------------ prompt
    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def hidden_size(self) -> int:
        return self.backbone.get_input_embeddings().weight.shape[1]

    @property
    def is_folded(self) -> bool:
        return self.prompt_encoder is None

    @property
    def placement_mode(self) -> str:
        mode = self.config.placement
        if mode != "auto":
            return mode
        return {"encoder": "after_first", "seq2seq": "prefix", "decoder": "after_bos"}[self.family]

    @property
    def max_text_length(self) -> int:
        """How many text tokens fit beside the prompt (the text is truncated, never the prompt)."""
        from .backbones import model_max_length

        return model_max_length(self.backbone, self.tokenizer) - self.num_tokens

    def prompt(self) -> torch.Tensor:
        """The prompt the backbone sees: P' (differentiable) or the folded prompt. [n, d]"""
        if self.prompt_encoder is None:
            return self.folded_prompt
        return self.prompt_encoder()

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        """Computes P' once in eval mode, without gradients. Returns a detached [n, d] tensor."""
        if self.prompt_encoder is None:
            return self.folded_prompt.detach().clone()
        was_training = self.prompt_encoder.training
        self.prompt_encoder.eval()
        try:
            return self.prompt_encoder().detach().clone()
        finally:
            self.prompt_encoder.train(was_training)

    def fold_(self) -> ResidualPromptModel:
        """Replaces the encoder by its folded prompt in place (inference costs plain prompt tuning)."""
        if self.prompt_encoder is not None:
            self.set_folded_prompt(self.fold())
        return self

    def set_folded_prompt(self, prompt: torch.Tensor) -> None:
        n, d = self.num_tokens, self.hidden_size
        if tuple(prompt.shape) != (n, d):
            raise ValueError(f"folded prompt has shape {tuple(prompt.shape)}, expected ({n}, {d})")
        emb = self.backbone.get_input_embeddings().weight
        self.prompt_encoder = None
        self.folded_prompt = prompt.detach().to(device=emb.device, dtype=torch.float32)

    def head_state(self) -> dict[str, torch.Tensor]:
        """Head parameters keyed by their name under the backbone (e.g. ``classifier.weight``)."""
        if self.head_name is None:
            return {}
        head = getattr(self.backbone, self.head_name)
        return {f"{self.head_name}.{k}": v.detach() for k, v in head.state_dict().items()}

    # ----------------------------------------------------------------- batches
    def _offsets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bos = getattr(self.backbone.config, "bos_token_id", None)
        if self.tokenizer is not None and getattr(self.tokenizer, "bos_token_id", None) is not None:
            bos = self.tokenizer.bos_token_id
        return pl.prompt_offsets(attention_mask, self.placement_mode, input_ids, bos)

    def prepare_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       prompts: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None) -> dict:
        """Builds the backbone's keyword arguments with the prompt inserted.

        Args:
            input_ids: [B, T].
            attention_mask: [B, T] (default: all ones).
            prompts: override the prompt: [n, d] for all rows or [B, n, d], one per row.
            labels: [B] (classification), [B, T] (decoder LM; -100 added on prompt slots) or
                [B, L] (seq2seq targets, passed through).
            token_type_ids: [B, T] (encoders; 0 on prompt slots).
        Returns:
            dict with ``inputs_embeds`` [B, T + n, d], ``attention_mask`` [B, T + n], and where they
            apply ``labels``, ``token_type_ids``, ``position_ids``; plus ``_offsets`` [B].
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n = self.num_tokens
        limit = self.max_text_length
        if self.family != "seq2seq" and input_ids.shape[1] > limit:
            raise ValueError(
                f"input has {input_ids.shape[1]} tokens but only {limit} fit beside the {n}-token prompt: "
                f"truncate the text to model.max_text_length"
            )
        prompt = self.prompt() if prompts is None else prompts
        if prompt.shape[-2:] != (n, self.hidden_size):
            raise ValueError(f"prompts have shape {tuple(prompt.shape)}, expected [..., {n}, {self.hidden_size}]")
        if prompt.dim() == 3 and prompt.shape[0] != input_ids.shape[0]:
            raise ValueError(f"prompts carry {prompt.shape[0]} rows for a batch of {input_ids.shape[0]}")
        embeds = self.backbone.get_input_embeddings()(input_ids)  # [B, T, d]
        offsets = self._offsets(input_ids, attention_mask)
        out = {
            "inputs_embeds": pl.insert_prompt(embeds, prompt.to(embeds.dtype), offsets),  # [B, T + n, d]
            "attention_mask": pl.insert_constant(attention_mask, 1, offsets, n),  # [B, T + n]
            "_offsets": offsets,
        }
        if token_type_ids is not None:
            out["token_type_ids"] = pl.insert_constant(token_type_ids, 0, offsets, n)
        if labels is not None:
            token_labels = self.family != "seq2seq" and labels.dim() == 2 and labels.shape[1] == input_ids.shape[1]
            out["labels"] = pl.insert_constant(labels, -100, offsets, n) if token_labels else labels
        if self.family == "decoder":
            out["position_ids"] = pl.position_ids_from_mask(out["attention_mask"])
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                prompts: torch.Tensor | None = None, **kwargs):
        """Runs the backbone on the prompted batch; see ``prepare_inputs`` for shapes.

        Returns the backbone's output. Per-token logits of encoder and decoder backbones are
        trimmed to the real tokens ([B, T, V]) unless ``strip_prompt_logits`` is False; for
        decoders output i is the next-token distribution after real token i (see ``remove_prompt``).
        """
        inputs = self.prepare_inputs(input_ids, attention_mask, prompts, labels, token_type_ids)
        offsets = inputs.pop("_offsets")
        out = self.backbone(**inputs, **kwargs)
        logits = getattr(out, "logits", None)
        if (self.strip_prompt_logits and self.family != "seq2seq" and logits is not None
                and logits.dim() >= 3 and logits.shape[1] == input_ids.shape[1] + self.num_tokens):
            out.logits = pl.remove_prompt(logits, offsets, self.num_tokens, causal=self.family == "decoder")
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 prompts: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Generates with the prompt in place.

        Returns:
            seq2seq: the decoder's token ids, as ``backbone.generate``.
            decoder: [B, T + new] = the input ids followed by the new tokens (no prompt slots).
        """
        if self.family == "encoder":
            raise ValueError("generate() needs a seq2seq or decoder backbone with a language-model head")
        inputs = self.prepare_inputs(input_ids, attention_mask, prompts)
        inputs.pop("_offsets")
        inputs.pop("position_ids", None)  # generate derives positions from the attention mask
        new = self.backbone.generate(**inputs, **kwargs)
        if self.family == "seq2seq":
            return new
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    # ------------------------------------------------------------- parameters
    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {k: p for k, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split into ``prompt`` (raw P), ``network`` (reparameterisation) and ``head``."""
        groups: dict[str, list[nn.Parameter]] = {"prompt": [], "network": [], "head": []}
        for name, p in self.trainable_parameters().items():
            if name == "prompt_encoder.embedding":
                groups["prompt"].append(p)
            elif name.startswith("prompt_encoder."):
                groups["network"].append(p)
            else:
                groups["head"].append(p)
        return groups

    # ------------------------------------------------------------------- files
    def save_pretrained(self, path: str | os.PathLike, format: str = "resprompt", **kwargs) -> None:
        """Saves the folded prompt (and head) only: ``format`` is ``resprompt`` or ``peft``."""
        from . import export

        if format == "resprompt":
            export.save_folded(self, path, **kwargs)
        elif format == "peft":
            export.save_peft(self, path, **kwargs)
        else:
            raise ValueError(f"format={format!r} is invalid: expected resprompt or peft")

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, path: str | os.PathLike, tokenizer=None,
                        allow_mismatch: bool = False) -> ResidualPromptModel:
        """Loads a folded prompt (resprompt or PEFT format) onto ``backbone``, ready for inference."""
        from . import export

        return export.load_folded(cls, backbone, path, tokenizer=tokenizer, allow_mismatch=allow_mismatch)

    def save_trainable(self, path: str | os.PathLike) -> None:
        """Saves the full trainable state (raw P, network, head) to resume training."""
        from . import export

        export.save_trainable(self, path)

    def load_trainable(self, path: str | os.PathLike) -> None:
        from . import export

        export.load_trainable(self, path)
