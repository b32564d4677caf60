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

import dataclasses
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import heads as heads_mod
from . import readout
from .backbones import check_family, detect_family, model_max_length, position_limit
from .io import embedding_rms
from .prompt import placement as pl
from .prompt.config import ResidualPromptConfig
from .prompt.encoders import PromptEncoder
from .prompt.init import initial_prompt

log = logging.getLogger(__name__)


def parameter_group(name: str) -> str:
    """``prompt`` (the raw prompt P), ``network`` (its reparameterisation) or ``head``, by parameter name.

    Shared by our model and the baselines: ours are ``prompt_encoder.embedding`` and
    ``prompt_encoder.<network>``; PEFT's are ``...prompt_encoder.default.embedding.weight`` and
    ``...prompt_encoder.default.<mlp/lstm>``; everything outside a prompt encoder is the head.
    """
    if "prompt_encoder" not in name:
        return "head"
    return "prompt" if name.endswith("prompt_encoder.embedding") or ".embedding." in name else "network"


def group_parameters(named: dict[str, nn.Parameter]) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters split by ``parameter_group`` into ``prompt`` / ``network`` / ``head`` lists."""
    groups: dict[str, list[nn.Parameter]] = {"prompt": [], "network": [], "head": []}
    for name, p in named.items():
        groups[parameter_group(name)].append(p)
    return groups


def optimizer_param_groups(model: TrainableParameters, lr: float, lr_network: float | None = None,
                           lr_head: float | None = None, weight_decay: float = 0.0,
                           weight_decay_network: float | None = None,
                           weight_decay_head: float | None = None) -> list[dict]:
    """The ``model.parameter_groups()`` as torch optimizer param groups, one per non-empty group.

    ``lr`` / ``weight_decay`` are the raw prompt's; the network's and the head's default to them.
    Each dict carries ``params``, ``lr``, ``weight_decay`` and ``name`` (``prompt`` / ``network`` /
    ``head``), e.g. ``torch.optim.AdamW(optimizer_param_groups(model, lr=0.3, lr_head=0.03))``.
    """
    settings = {
        "prompt": (lr, weight_decay),
        "network": (lr if lr_network is None else lr_network,
                    weight_decay if weight_decay_network is None else weight_decay_network),
        "head": (lr if lr_head is None else lr_head, weight_decay if weight_decay_head is None else weight_decay_head),
    }
    groups = model.parameter_groups()
    return [{"params": groups[name], "lr": g_lr, "weight_decay": wd, "name": name}
            for name, (g_lr, wd) in settings.items() if groups[name]]


class TrainableParameters:
    """What the optimizer needs of a model (ours and the baselines alike): an ``nn.Module`` mixin."""

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {k: p for k, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split into ``prompt`` (raw P), ``network`` (reparameterisation) and ``head``."""
        return group_parameters(self.trainable_parameters())


class ResidualPromptModel(TrainableParameters, nn.Module):
    """A frozen backbone with a soft prompt and, for task models, the prompt's own head.

    Args:
        backbone: any ``transformers`` model (frozen here, never written to: several prompts may
            share it).
        config: the prompt configuration (default ``ResidualPromptConfig()``).
        tokenizer: needed for ``init='text'`` and to skip special tokens in ``init='vocab'``.
        family: override the detected family ("encoder", "seq2seq", "decoder").
        task: task metadata saved with the prompt (name, kind, labels, ...; see ``formats``).
    """

    # transformers.Trainer: never pass ``num_items_in_batch`` to forward. Our losses are per-batch means
    # (the classification loss is ours), and Trainer would count the labels unshifted (it recognises
    # causal LMs by ``loss_type``), so it must divide by the accumulation steps itself.
    accepts_loss_kwargs = False

    def __init__(self, backbone: nn.Module, config: ResidualPromptConfig | None = None, tokenizer=None,
                 family: str | None = None, task: dict | None = None, _folded: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config or ResidualPromptConfig()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.family = check_family(family) or detect_family(backbone)
        self.task = dict(task) if task else None
        self.strip_prompt_logits = True
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.head_kind = heads_mod.head_kind(backbone)
        if self.family == "seq2seq" and self.head_kind == "ForSequenceClassification":
            raise heads_mod.HeadError(
                f"{type(backbone).__name__}: an encoder-decoder classifier finds its EOS tokens in input_ids, which a "
                "soft prompt replaces by embeddings; load it *ForConditionalGeneration and classify by verbaliser "
                "(resprompt's SuperGLUE tasks do), or use an encoder or decoder classifier")
        self.head = heads_mod.copy_head(backbone)  # this prompt's own head (empty for LM backbones)
        for p in self.head.parameters():
            p.requires_grad_(self.config.train_head)
        self.pooling: str | None = None  # the encoder classifier's readout (``readout``), resolved once
        self._native_readout = True
        if self.family == "encoder" and self.head_kind == "ForSequenceClassification":
            self.pooling = readout.resolve_pooling(self.config.pooling, backbone, self.head)
            self._native_readout = readout.reads_natively(self.config.pooling, self.pooling, backbone, self.head,
                                                          slot_first=self.placement_mode == "prefix")
            if not self._native_readout and readout.head_style(self.head) == "other":
                raise heads_mod.HeadError(
                    f"pooling={self.config.pooling!r} with placement='prefix': the head of {type(backbone).__name__} "
                    f"({', '.join(self.head)}) reads only the first position, a prompt slot there, not the first text "
                    "token; use placement='after_first' (the default) or pooling='native' (the slot, as PEFT reads it)")
        elif self.config.pooling not in ("auto", "native"):
            if _folded is None:  # a new prompt: the readout asked for would be silently ignored
                raise heads_mod.HeadError(
                    f"pooling={self.config.pooling!r} chooses what an encoder sequence classifier's head reads; "
                    f"{type(backbone).__name__} ({self.family}, {self.head_kind or 'no task head'}) has no such "
                    "choice (a decoder classifier reads the last position): use pooling='auto'")
            self.config = dataclasses.replace(self.config, pooling="auto")  # saved so by mistake: it never applied
        # a decoder classifier's rows are left aligned, so it reads the last position; read here, since the
        # backbone's own forward refuses a batch when its config has no pad id
        self._read_here = not self._native_readout or (self.family == "decoder"
                                                         and self.head_kind == "ForSequenceClassification")
        emb = backbone.get_input_embeddings()
        self.register_buffer("folded_prompt", None, persistent=False)
        self.prompt_encoder: PromptEncoder | None = None
        if _folded is not None:  # loading a folded prompt: no network is built (nor random numbers drawn)
            self.set_folded_prompt(_folded)
            return
        init = initial_prompt(self.config, emb, tokenizer)
        rms = embedding_rms(emb) if self.config.branch_scale == "embedding" else None
        self.prompt_encoder = PromptEncoder(self.config, init, rms).to(emb.weight.device)

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
    def head_name(self) -> str | None:
        """The head's module names joined by ``+`` (``classifier``; ``pre_classifier+classifier``), or None."""
        return "+".join(self.head) or None

    @property
    def placement_mode(self) -> str:
        return pl.resolve_placement(self.config.placement, self.family)

    @property
    def max_text_length(self) -> int:
        """How many text tokens fit beside the prompt (the text is truncated, never the prompt)."""
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
        """Head weights keyed by their name under the backbone (e.g. ``classifier.weight``)."""
        return {k: v.detach() for k, v in heads_mod.head_tensors(self.head).items()}

    def load_head_state(self, state: dict[str, torch.Tensor], where: str = "head") -> None:
        """Replaces this prompt's head weights (keys as ``head_state``); the backbone is untouched."""
        heads_mod.load_head(self.head, state, where)

    # ----------------------------------------------------------------- batches
    def _offsets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bos = getattr(self.backbone.config, "bos_token_id", None)
        if self.tokenizer is not None and getattr(self.tokenizer, "bos_token_id", None) is not None:
            bos = self.tokenizer.bos_token_id
        return pl.prompt_offsets(attention_mask, self.placement_mode, input_ids, bos)

    def _check_length(self, length: int) -> None:
        limit = self.max_text_length
        if self.family == "seq2seq" and position_limit(self.backbone) is None:
            return  # relative positions (T5): no hard limit on the encoder input
        if length > limit:
            raise ValueError(
                f"input has {length} tokens but only {limit} fit beside the {self.num_tokens}-token prompt: "
                f"truncate the text to model.max_text_length"
            )

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
        self._check_length(input_ids.shape[1])
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

    def run_backbone(self, inputs: dict, **kwargs):
        """The backbone's forward with this prompt's head weights in place of the backbone's own."""
        if not len(self.head):
            return self.backbone(**inputs, **kwargs)
        return functional_call(self.backbone, heads_mod.head_tensors(self.head), args=(),
                               kwargs={**inputs, **kwargs}, strict=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                prompts: torch.Tensor | None = None, **kwargs):
        """Runs the backbone on the prompted batch; see ``prepare_inputs`` for shapes.

        Returns the backbone's output. Per-token outputs of encoder and decoder backbones (logits,
        QA start/end logits) are trimmed to the real tokens ([B, T, ...]) unless
        ``strip_prompt_logits`` is False; for decoders output i is the next-token distribution
        after real token i (see ``remove_prompt``). Sequence classifiers get their loss computed
        here, from the logits of this prompt's head (as the backbone's ``config.problem_type`` says:
        cross-entropy, MSE for regression, BCE for multi-label).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.family == "decoder" and self.head_kind == "ForSequenceClassification":
            # the classifier pools the last position: move each row's padding to its left
            input_ids, attention_mask = pl.left_align(input_ids, attention_mask)
        seq_labels = labels if self.head_kind == "ForSequenceClassification" else None
        inputs = self.prepare_inputs(input_ids, attention_mask, prompts,
                                     None if seq_labels is not None else labels, token_type_ids)
        offsets = inputs.pop("_offsets")
        # QA targets index the real tokens: the loss is ours, over them only (never a prompt slot)
        span = [kwargs.pop(k, None) for k in ("start_positions", "end_positions")]
        if not self._read_here:
            out = self.run_backbone(inputs, **kwargs)
        else:
            out = self._read_out(inputs, attention_mask, offsets, **kwargs)
        if seq_labels is not None:
            out.loss = _classification_loss(out.logits, seq_labels, getattr(self.backbone.config, "problem_type", None))
        if span[0] is not None and span[1] is not None:
            real = [pl.remove_prompt(getattr(out, k), offsets, self.num_tokens) for k in ("start_logits", "end_logits")]
            out.loss = _span_loss(real, span)
        if self.strip_prompt_logits and self.family != "seq2seq":
            width = input_ids.shape[1] + self.num_tokens
            for key in ("logits", "start_logits", "end_logits"):
                value = getattr(out, key, None)
                if value is not None and value.dim() >= 2 and value.shape[1] == width and (
                        value.dim() >= 3 or key != "logits"):
                    setattr(out, key, pl.remove_prompt(value, offsets, self.num_tokens,  # LM logits predict the next
                                                       causal=self.family == "decoder" and self.head_kind is None))
        return out

    def _read_out(self, inputs: dict, attention_mask: torch.Tensor, offsets: torch.Tensor, **kwargs):
        """Classification with a readout the backbone's forward does not compute: an encoder's cls / mean
        (the base model's last hidden states pooled over the text tokens), a decoder's last position (rows
        are left aligned), through this prompt's head."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        body = getattr(self.backbone, self.backbone.base_model_prefix)
        base = body(**inputs, **kwargs)
        hidden = base.last_hidden_state  # [B, T + n, d]
        if self.family == "decoder":
            pooled = hidden[:, -1]
        else:
            n = self.num_tokens
            text = pl.insert_constant(attention_mask, 0, offsets, n)  # [B, T + n]: real text tokens only
            first = pl.first_real_index(attention_mask)
            first = torch.where(first < offsets, first, first + n)  # the first text token, after insertion
            pooled = readout.pool(hidden, text, first, self.pooling)
        return SequenceClassifierOutput(logits=readout.apply_head(self.backbone, self.head, pooled),
                                        hidden_states=getattr(base, "hidden_states", None),
                                        attentions=getattr(base, "attentions", None))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 prompts: torch.Tensor | None = None, *, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
                 pad_token_id: int | None = None, eos_token_id: int | None = None) -> torch.Tensor:
        """Generates with the prompt in place (``generation.decode``; greedy unless ``do_sample``).

        Args:
            input_ids, attention_mask: [B, T] (decoders: left padded). prompts: [n, d] or [B, n, d].
        Returns:
            seq2seq: [B, 1 + new], the decoder start token then the new tokens (as ``backbone.generate``).
            decoder: [B, T + new] = the input ids followed by the new tokens (no prompt slots).
            Rows that finished early are padded with ``pad_token_id``.
        """
        from .generation.config import GenerationConfig
        from .generation.decode import generate_ids

        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                  top_p=top_p, seed=seed)
        new = generate_ids(self, input_ids, attention_mask, prompts=prompts, config=config, use_cache=use_cache,
                           tokenizer=self.tokenizer, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        if self.family == "seq2seq":
            start = torch.full_like(new[:, :1], self.backbone.config.decoder_start_token_id)
            return torch.cat([start, new], dim=1).to(input_ids.device)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

    # ------------------------------------------------------------------- files
    def save_pretrained(self, path: str | os.PathLike, format: str = "resprompt", *,
                        safe_serialization: bool = True, is_main_process: bool = True) -> None:
        """Saves the folded prompt, its head and task metadata: ``format`` is ``resprompt`` or ``peft``.

        The files are always safetensors + JSON (``safe_serialization=False`` is refused: no pickle);
        ``is_main_process=False`` writes nothing (the convention of ``transformers``).
        """
        from . import formats

        if safe_serialization is not True:
            raise ValueError("safe_serialization=False is not supported: resprompt writes safetensors only")
        if not is_main_process:
            return
        if format == "resprompt":
            formats.save_folded(self, path)
        elif format == "peft":
            formats.save_peft(self, path)
        else:
            raise ValueError(f"format={format!r} is invalid: expected resprompt or peft")

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, path: str | os.PathLike, tokenizer=None,
                        allow_mismatch: bool = False, family: str | None = None) -> ResidualPromptModel:
        """Loads a folded prompt (resprompt or PEFT format, or a run folder's best/) onto ``backbone``.

        The backbone may already carry other prompts: each model holds its own head. ``family``
        overrides detection, as in the constructor; without it the prompt runs as the family it was
        saved with, which must agree with detection unless ``allow_mismatch``.
        """
        from . import formats

        return formats.load_folded(cls, backbone, path, tokenizer=tokenizer, allow_mismatch=allow_mismatch,
                                   family=family)

    def save_trainable(self, path: str | os.PathLike) -> None:
        """Saves the full trainable state (raw P, network, head) to resume training."""
        from . import formats

        formats.save_trainable(self, path)

    def load_trainable(self, path: str | os.PathLike, allow_mismatch: bool = False) -> None:
        from . import formats

        formats.load_trainable(self, path, allow_mismatch)


def _span_loss(logits: list[torch.Tensor], positions: list[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the start and end logits ([B, T] each) at the given token indices ([B]); as in
    transformers, an index outside [0, T) is clamped to T and ignored."""
    t = logits[0].shape[1]
    losses = [F.cross_entropy(x.float(), p.to(x.device).long().clamp(0, t), ignore_index=t)
              for x, p in zip(logits, positions)]
    return sum(losses) / 2


def _classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None = None) -> torch.Tensor:
    """The loss of [B, C] logits as the backbone's ``config.problem_type`` says, inferred as transformers
    does when unset: ``regression`` (C == 1: MSE), ``single_label_classification`` (class ids [B]:
    cross-entropy), ``multi_label_classification`` (multi-hot float labels [B, C]: BCE)."""
    if problem_type is None:
        ids = labels.dim() == 1 or not labels.is_floating_point()  # [B] class ids, even stored as floats
        problem_type = ("regression" if logits.shape[-1] == 1 else
                        "single_label_classification" if ids else "multi_label_classification")
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.reshape(-1).float())
        return F.mse_loss(logits.float(), labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return F.cross_entropy(logits.float(), labels.reshape(-1).long())
