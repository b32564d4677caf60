"""Does a saved prompt fit this backbone: what identifies a backbone, and the checks made on loading.

A prompt records the backbone it was trained on (``backbone_meta``): class, family, hidden and
vocab size, an embedding fingerprint. On loading, another hidden size is always refused; another
task-model kind (sequence vs token classification, question answering, none), another family,
vocab or fingerprint is refused unless ``allow_mismatch``. A stock PEFT adapter records only its
``task_type``, which ``PEFT_TASK_TYPES`` turns into the same claims (FEATURE_EXTRACTION claims
nothing). Metadata without a field is not checked on it.

The family a prompt runs as: the caller's ``family=``, else the saved one, else detection. The
caller's word (or detection) is what the saved family is checked against: a prompt saved with a
family that detection contradicts (one trained with ``family=`` on that backbone) needs the same
``family=`` again, or ``allow_mismatch`` (then it runs as saved).
"""

from __future__ import annotations

from pathlib import Path

from .backbones import BackboneError, detect_family
from .heads import kind_of_class
from .io import PromptFileError, embedding_fingerprint

# PEFT task_type -> what it says of the backbone: its family and / or its task-model kind (None: an LM)
PEFT_TASK_TYPES = {
    "SEQ_CLS": {"head_kind": "ForSequenceClassification"},
    "TOKEN_CLS": {"head_kind": "ForTokenClassification"},
    "QUESTION_ANS": {"head_kind": "ForQuestionAnswering"},
    "SEQ_2_SEQ_LM": {"family": "seq2seq"},
    "CAUSAL_LM": {"family": "decoder", "head_kind": None},
}

KIND_WORDS = {"ForSequenceClassification": "a sequence classification head",
              "ForTokenClassification": "a token classification head",
              "ForQuestionAnswering": "a question answering head", None: "no task head"}

ALLOW = "pass allow_mismatch=True (CLI: --allow-backbone-mismatch) to load it anyway"


def backbone_meta(bb, family: str) -> dict:
    """What identifies a backbone (of ``family``) that a prompt is trained on."""
    emb = bb.get_input_embeddings()
    return {
        "backbone": getattr(bb.config, "_name_or_path", "") or getattr(bb, "name_or_path", ""),
        "backbone_class": type(bb).__name__,
        "model_type": getattr(bb.config, "model_type", None),
        "family": family,
        "hidden_size": int(emb.weight.shape[1]),
        "vocab_size": int(emb.weight.shape[0]),
        "embedding_fingerprint": embedding_fingerprint(emb),
    }


def peft_task_type(meta: dict) -> str:
    """The PEFT task_type to export a prompt saved with ``meta`` under (read back by ``claims``)."""
    family, kind = meta.get("family"), kind_of_class(meta.get("backbone_class") or "")
    if family == "seq2seq":
        return "SEQ_2_SEQ_LM"
    if meta.get("head"):  # metadata without the class: a sequence classifier, as before
        return next((t for t, c in PEFT_TASK_TYPES.items() if kind and c.get("head_kind") == kind), "SEQ_CLS")
    return "CAUSAL_LM" if family == "decoder" else "FEATURE_EXTRACTION"


def detected_family(backbone) -> str | None:
    """``backbones.detect_family``, or None where it cannot tell."""
    try:
        return detect_family(backbone)
    except BackboneError:
        return None


def claims(meta: dict) -> dict:
    """What saved metadata says of its backbone's kind and family: ``head_kind`` / ``family`` where known."""
    if "task_type" in meta:
        return dict(PEFT_TASK_TYPES.get(meta["task_type"], {}))
    out = {"head_kind": kind_of_class(meta["backbone_class"])} if "backbone_class" in meta else {}
    return {**out, **({"family": meta["family"]} if meta.get("family") else {})}


def describe(meta: dict) -> str:
    """``BertForTokenClassification (a token classification head, family encoder)``, or a PEFT task_type."""
    said = claims(meta)
    words = [KIND_WORDS[said["head_kind"]]] if "head_kind" in said else []
    words += [f"family {said['family']}"] if "family" in said else []
    name = f"PEFT task_type {meta['task_type']}" if "task_type" in meta else meta.get("backbone_class", "a backbone")
    return f"{name} ({', '.join(words)})" if words else name


def check_backbone(saved: dict, model_meta: dict, where: Path, allow_mismatch: bool) -> None:
    """Refuses a prompt trained on another backbone: hidden size always; task-model kind, family, vocab and
    fingerprint unless ``allow_mismatch``. A PEFT adapter records only its hidden size and task_type."""
    if saved.get("hidden_size") != model_meta["hidden_size"]:
        raise PromptFileError(
            f"{where}: prompt was trained on a backbone with hidden size {saved.get('hidden_size')} "
            f"({saved.get('backbone') or 'unknown'}), this backbone has {model_meta['hidden_size']}"
        )
    if allow_mismatch:
        return
    said, own = claims(saved), claims(model_meta)
    if any(k in own and said[k] != own[k] for k in said):
        same_class = saved.get("backbone_class") == model_meta["backbone_class"]
        hint = f"pass family={said['family']!r} to run it as saved, or " if same_class and "family" in own else "pass "
        raise PromptFileError(f"{where}: saved {'as' if 'task_type' in saved else 'on'} {describe(saved)}, "
                              f"this backbone is {describe(model_meta)}; {hint}{ALLOW.removeprefix('pass ')}")
    for key in ("vocab_size", "embedding_fingerprint"):
        if key in saved and saved[key] != model_meta[key]:
            raise PromptFileError(
                f"{where}: {key} {saved.get(key)!r} of the prompt's backbone ({saved.get('backbone') or 'unknown'}) "
                f"differs from this backbone's {model_meta[key]!r} ({model_meta['backbone'] or 'unknown'}); {ALLOW}"
            )
