"""Baselines the grid compares against: the head-only probe and PEFT's prompt tuning / P-tuning.

Each offers what the training loop and ``tasks.evaluation.predict`` use of a
``ResidualPromptModel`` (forward, the parameter groups, saving the trainable state); the
parameter groups come from the model's own ``group_parameters``, so every method's optimizer
treats prompt, network and head alike.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import readout
from ..backbones import model_max_length
from ..heads import head_module_names
from ..io import atomic_dir, read_safetensors
from ..model import TrainableParameters
from ..prompt.config import REPARAMS
from ..training.runconfig import ConfigError


class _Baseline(TrainableParameters, nn.Module):
    """What the trainer and ``evaluation.predict`` use of a ResidualPromptModel, for a baseline."""

    num_tokens = 0

    def __init__(self, backbone, tokenizer, family):
        super().__init__()
        self.tokenizer, self.family = tokenizer, family
        object.__setattr__(self, "_backbone", backbone)  # a reference, not a second submodule

    @property
    def max_text_length(self) -> int:
        return model_max_length(self._backbone, self.tokenizer) - self.num_tokens

    def save_trainable(self, path) -> None:
        from safetensors.torch import save_file

        state = {k: p.detach().cpu().contiguous() for k, p in self.trainable_parameters().items()}
        with atomic_dir(path) as tmp:
            save_file(state, str(tmp / "trainable.safetensors"))

    def load_trainable(self, path, allow_mismatch: bool = False) -> None:  # no fingerprint to check
        state, params = read_safetensors(Path(path) / "trainable.safetensors"), self.trainable_parameters()
        if set(state) != set(params):
            raise ValueError(f"{path}: saved parameters {sorted(state)} do not match {sorted(params)}")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state[k].to(p.device))

    def save_pretrained(self, path, **kwargs) -> None:
        self.save_trainable(path)


class HeadOnlyModel(_Baseline):
    """The frozen backbone without a prompt; only its classification head trains: the linear probe of
    the frozen features, through the same readout (``pooling``) the prompted model uses."""

    def __init__(self, backbone, tokenizer, family, pooling: str = "native"):
        super().__init__(backbone, tokenizer, family)
        names = head_module_names(backbone)
        if not names:
            raise ConfigError(f"method head_only needs a classification backbone; this {family} one has no head")
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        for name in names:
            for p in getattr(backbone, name).parameters():
                p.requires_grad_(True)
        heads = nn.ModuleDict({name: getattr(backbone, name) for name in names})  # the backbone's own
        self.pooling = readout.resolve_pooling(pooling, backbone, heads)
        self._native = self.pooling == readout.native_pooling(backbone, heads)
        object.__setattr__(self, "_heads", heads)  # not a second registration of the same modules

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None, **kwargs):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self._native:
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **extra, **kwargs)
        from transformers.modeling_outputs import SequenceClassifierOutput

        from ..prompt.placement import first_real_index

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        body = getattr(self.backbone, self.backbone.base_model_prefix)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = readout.pool(hidden, attention_mask, first_real_index(attention_mask), self.pooling)
        logits = readout.apply_head(self.backbone, self._heads, pooled)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PeftPromptModel(_Baseline):
    """PEFT's own prompt tuning / P-tuning; decoder logits lose the n virtual positions PEFT puts first."""

    def __init__(self, backbone, tokenizer, family, method: str, num_tokens: int, hidden: int):
        import peft

        super().__init__(backbone, tokenizer, family)
        task = {"encoder": "SEQ_CLS", "decoder": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}[family]
        if method == "peft_prompt_tuning":
            pcfg = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=num_tokens)
        else:
            pcfg = peft.PromptEncoderConfig(task_type=task, num_virtual_tokens=num_tokens, encoder_hidden_size=hidden)
        self.num_tokens = num_tokens
        self.peft = peft.get_peft_model(backbone, pcfg)

    def forward(self, input_ids, attention_mask=None, labels=None, token_type_ids=None, **kwargs):
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.peft(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        if self.family == "decoder" and out.logits.shape[1] == input_ids.shape[1] + self.num_tokens:
            out.logits = out.logits[:, self.num_tokens:]  # output j of the real tokens predicts token j + 1
        return out

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs):
        return self.peft.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def model_builder(method: str, prompt_cfg):
    """``trainer.train``'s ``build_model`` for a baseline method (None: our ResidualPromptModel)."""
    if method in REPARAMS:
        return None

    def build(backbone, config, tokenizer, family):
        if method == "head_only":
            return HeadOnlyModel(backbone, tokenizer, family, prompt_cfg.pooling)
        return PeftPromptModel(backbone, tokenizer, family, method, prompt_cfg.num_tokens, prompt_cfg.bottleneck)

    return build
