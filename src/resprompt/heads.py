"""Task heads: what a task model adds outside its pretrained body, owned by each prompt.

A ``*ForSequenceClassification`` (or token classification, question answering) model is a base
model (``backbone.<base_model_prefix>``) plus head modules (BERT: ``classifier``; DistilBERT:
``pre_classifier`` and ``classifier``; RoBERTa: ``classifier`` with its own dense layer; GPT-2 and
Llama: ``score``). The head is every top-level submodule outside the base model that holds
weights. A prompt keeps its own copy of those weights and runs the shared backbone with them
(``torch.func.functional_call``), so two prompts on one backbone never see each other's head and
the backbone itself is never written to.

Multiple-choice models take [B, choices, T] inputs, which a soft prompt of [n, d] does not fit:
they are refused here, with a message naming the class.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

HEAD_KINDS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


class HeadError(ValueError):
    """A backbone whose task head cannot be used with a soft prompt."""


def head_kind(backbone: nn.Module) -> str | None:
    """Which task-model kind ``backbone`` is (one of ``HEAD_KINDS``), or None for a bare / LM model."""
    name = type(backbone).__name__
    if "ForMultipleChoice" in name:
        raise HeadError(
            f"{name}: multiple-choice models take [batch, choices, tokens] inputs, which a soft prompt does "
            "not support; load the backbone as a sequence classifier (one row per choice, as resprompt's "
            "COPA and ReCoRD tasks do)"
        )
    return kind_of_class(name)


def kind_of_class(name: str) -> str | None:
    """The ``HEAD_KINDS`` entry a model class name carries (``BertForTokenClassification``), or None."""
    return next((k for k in HEAD_KINDS if k in name), None)


def head_module_names(backbone: nn.Module) -> list[str]:
    """Names of the top-level submodules with weights that the task model adds to its base model."""
    if head_kind(backbone) is None:
        return []
    body = getattr(backbone, "base_model_prefix", "")
    return [name for name, module in backbone.named_children()
            if name != body and any(True for _ in module.parameters())]


def copy_head(backbone: nn.Module) -> nn.ModuleDict:
    """A trainable copy of the backbone's head modules (empty for a model without a task head)."""
    heads = nn.ModuleDict()
    for name in head_module_names(backbone):
        heads[name] = copy.deepcopy(getattr(backbone, name))
    for p in heads.parameters():
        p.requires_grad_(True)
    return heads


def head_tensors(heads: nn.ModuleDict) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the head, keyed by their name in the backbone (``classifier.weight``)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in heads.items():
        for key, value in [*module.named_parameters(), *module.named_buffers()]:
            out[f"{name}.{key}"] = value
    return out


def output_linear(heads: nn.ModuleDict) -> str | None:
    """The name of the head's last linear layer (``classifier``, ``classifier.out_proj``): its outputs are the
    labels, the one size a prompt's head may change; None for a head without one."""
    names = [name for name, m in heads.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def head_outputs(heads: nn.ModuleDict) -> int | None:
    """How many outputs the head has (its last linear layer's), or None."""
    name = output_linear(heads)
    return None if name is None else heads.get_submodule(name).out_features


def load_head(heads: nn.ModuleDict, state: dict[str, torch.Tensor], where: str) -> None:
    """Replaces the head weights by ``state`` (keys as ``head_tensors``); shapes may differ (label count).

    Raises ``HeadError`` naming ``where`` when a key is missing or unexpected, or a tensor's shape differs
    from the backbone's anywhere but in the output layer's label count.
    """
    own = head_tensors(heads)
    if not state:
        return
    if not own:
        raise HeadError(f"{where}: holds a trained head ({', '.join(sorted(state))}) but the backbone has none")
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise HeadError(f"{where}: head weights differ from the backbone's head modules "
                        f"(missing {missing}, unexpected {extra})")
    out = output_linear(heads)
    labels = {f"{out}.weight", f"{out}.bias"} & set(state) if out else set()  # their first dim: the label count
    for key, value in state.items():
        got, want = tuple(value.shape), tuple(own[key].shape)
        if len(got) != len(want) or (got[1:] != want[1:] if key in labels else got != want):
            raise HeadError(f"{where}: head weight {key!r} has shape {got}, the backbone's has {want}"
                            + (" (only its first dimension, the label count, may differ)" if key in labels else ""))
    if len({state[k].shape[0] for k in labels}) > 1:
        raise HeadError(f"{where}: head weight and bias of {out!r} disagree on the label count: "
                        + ", ".join(f"{k} {tuple(state[k].shape)}" for k in sorted(labels)))
    with torch.no_grad():
        for key, value in state.items():
            module_name, _, attr_path = key.partition(".")
            owner = heads[module_name]
            *parents, attr = attr_path.split(".")
            for p in parents:
                owner = getattr(owner, p)
            old = getattr(owner, attr)
            new = value.detach().to(device=old.device, dtype=old.dtype).clone()
            if isinstance(old, nn.Parameter):
                setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                owner.register_buffer(attr, new)
    for module in heads.modules():  # a Linear whose label count changed keeps its attributes in step
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
