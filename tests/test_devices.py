"""--device and --dtype for eval, predict and serve: what each names, what is refused, and the same
predictions wherever the backbone runs (the CUDA comparison runs only where torch sees a GPU)."""

import json

import pytest
import torch

from resprompt.cli import main
from resprompt.devices import resolve_device, resolve_dtype
from resprompt.serving.config import ServeConfig
from resprompt.serving.registry import PromptRegistry
from resprompt.training.runconfig import ConfigError
from serving_prompts import standard_prompts

CUDA = torch.cuda.is_available()


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_auto_and_cuda_name_the_first_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_a_gpu_index_beyond_the_count_is_refused(two_gpus):
    with pytest.raises(ConfigError, match=r"--device cuda:2: there are 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_cuda_without_a_gpu_is_refused_not_replaced_by_the_cpu(no_gpu):
    with pytest.raises(ConfigError, match=r"--device cuda: torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"--device mps: torch sees no MPS device"):
        resolve_device("mps")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "", "tpu:0"])
def test_unknown_device_names_are_refused(spec):
    with pytest.raises(ConfigError, match=r"--device must be auto, cpu, cuda, cuda:N or mps, got"):
        resolve_device(spec)


def test_dtypes():
    assert resolve_dtype("auto") is None
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("Float16") is torch.float16
    with pytest.raises(ConfigError, match=r"--dtype must be one of auto, float32, bfloat16, float16, got 'fp8'"):
        resolve_dtype("fp8")


def test_serve_config_refuses_a_device_before_loading(no_gpu):
    with pytest.raises(ConfigError, match="--device cuda:0: torch sees no CUDA device"):
        ServeConfig(model="m", prompts="p", device="cuda:0")
    with pytest.raises(ConfigError, match="--dtype must be one of"):
        ServeConfig(model="m", prompts="p", dtype="half")


def test_cli_refuses_a_device_in_one_line(tiny_model_dirs, tmp_path, capsys, no_gpu):
    root = tmp_path / "prompts"
    standard_prompts(tiny_model_dirs["bert"], root)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"premise": "a", "hypothesis": "b"}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(root / "cb"), "--input", str(src),
            "--output", str(out)]
    for extra, message in ((["--device", "cuda"], "--device cuda: torch sees no CUDA device"),
                           (["--dtype", "fp8"], "--dtype must be one of")):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert f"resprompt: error: {message}" in err and "Traceback" not in err
        assert not out.exists()
    assert main(["serve", "--model", tiny_model_dirs["bert"], "--prompts", str(root), "--device", "gpu"]) == 2
    assert "resprompt: error: --device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'" in capsys.readouterr().err


def test_predict_in_bfloat16_agrees_with_float32(tiny_model_dirs, tmp_path, capsys):
    root = tmp_path / "prompts"
    specs = standard_prompts(tiny_model_dirs["bert"], root)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in specs["cb"][1]))
    runs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.jsonl"
        code = main(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(root / "cb"), "--input", str(src),
                     "--output", str(out), "--dtype", dtype, "--device", "cpu"])
        assert code == 0, capsys.readouterr().err
        runs[dtype] = [json.loads(x)["label"] for x in out.read_text().splitlines()]
    agree = sum(a == b for a, b in zip(runs["float32"], runs["bfloat16"])) / len(runs["float32"])
    assert agree >= 0.8, runs


def test_registry_in_bfloat16_scores_close_to_float32(tiny_model_dirs, tmp_path):
    root = tmp_path / "prompts"
    specs = standard_prompts(tiny_model_dirs["bert"], root)
    pairs = [(name, rec) for name, (_, recs) in specs.items() for rec in recs[:4]]
    full = PromptRegistry.load(tiny_model_dirs["bert"], root).predict(pairs)
    half_registry = PromptRegistry.load(tiny_model_dirs["bert"], root, dtype=torch.bfloat16)
    assert half_registry.backbone.dtype == torch.bfloat16
    half = half_registry.predict(pairs)
    for a, b in zip(full, half):  # bfloat16 keeps 8 significant bits: errors scale with the row's largest score
        scale = max(1.0, *(abs(v) for v in a["scores"].values()))
        assert all(abs(a["scores"][k] - b["scores"][k]) <= 0.02 * scale for k in a["scores"]), (a, b)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_registry_on_cuda_equals_the_cpu(tiny_model_dirs, tmp_path):
    root = tmp_path / "prompts"
    specs = standard_prompts(tiny_model_dirs["bert"], root)
    pairs = [(name, rec) for name, (_, recs) in specs.items() for rec in recs]
    cpu = PromptRegistry.load(tiny_model_dirs["bert"], root).predict(pairs)
    gpu = PromptRegistry.load(tiny_model_dirs["bert"], root, device=torch.device("cuda", 0)).predict(pairs)
    for a, b in zip(cpu, gpu):
        assert a["label"] == b["label"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) < 1e-4


def _decoder_prompts(model_dir, root):
    """A generative prompt and a CB prompt on a tiny Llama; the (name, record) pairs to ask them."""
    from resprompt.backbones import load_backbone
    from resprompt.model import ResidualPromptModel
    from resprompt.prompt.config import ResidualPromptConfig
    from resprompt.tasks.generative import generative_task
    from resprompt.tasks.superglue import get_task
    from serving_prompts import jsonl

    qa = generative_task("qa", template="Q: {question} A:", target_field="answer", max_new_tokens=4)
    backbone, tok, _ = load_backbone(model_dir)
    for seed, (name, task, n) in enumerate([("qa", qa, 3), ("cb", get_task("CB"), 4)]):
        model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=n), tok, task=task.metadata())
        model.set_folded_prompt(torch.randn(n, model.hidden_size, generator=torch.Generator().manual_seed(seed)))
        model.save_pretrained(root / name)
    return [("qa", {"question": "what is the river"}), ("cb", jsonl("CB")[0]), ("qa", {"question": "a boat"})]


def test_decoder_registry_in_bfloat16_generates_and_scores(tiny_model_dirs, tmp_path):
    """The KV prefixes, the decoding loop and the verbaliser scores all run in the backbone's dtype."""
    pairs = _decoder_prompts(tiny_model_dirs["llama"], tmp_path)
    full = PromptRegistry.load(tiny_model_dirs["llama"], tmp_path).predict(pairs)
    half_registry = PromptRegistry.load(tiny_model_dirs["llama"], tmp_path, dtype=torch.bfloat16)
    assert half_registry.backbone.dtype == torch.bfloat16
    half = half_registry.predict(pairs)
    assert all(isinstance(half[i]["text"], str) for i in (0, 2))
    scale = max(1.0, *(abs(v) for v in full[1]["scores"].values()))
    assert all(abs(full[1]["scores"][k] - half[1]["scores"][k]) <= 0.02 * scale for k in full[1]["scores"])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_decoder_registry_on_cuda_equals_the_cpu(tiny_model_dirs, tmp_path):
    pairs = _decoder_prompts(tiny_model_dirs["llama"], tmp_path)
    cpu = PromptRegistry.load(tiny_model_dirs["llama"], tmp_path).predict(pairs)
    gpu = PromptRegistry.load(tiny_model_dirs["llama"], tmp_path, device=torch.device("cuda", 0)).predict(pairs)
    assert [cpu[i]["text"] for i in (0, 2)] == [gpu[i]["text"] for i in (0, 2)]
    assert cpu[1]["label"] == gpu[1]["label"]
    assert all(abs(cpu[1]["scores"][k] - gpu[1]["scores"][k]) < 1e-4 for k in cpu[1]["scores"])


def test_float16_keeps_the_prompts_fingerprint_check(tiny_model_dirs, tmp_path, capsys):
    """Before: an fp32 checkpoint loaded as float16 rounds its embeddings otherwise than bfloat16 does, so
    the fingerprint every saved prompt records differed and --dtype float16 refused them all."""
    root = tmp_path / "prompts"
    specs = standard_prompts(tiny_model_dirs["bert"], root)
    registry = PromptRegistry.load(tiny_model_dirs["bert"], root, dtype=torch.float16)
    assert registry.backbone.dtype == torch.float16 and registry.names() == sorted(specs)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in specs["cb"][1]))
    code = main(["predict", "--model", tiny_model_dirs["bert"], "--prompt", str(root / "cb"), "--input", str(src),
                 "--output", str(out), "--dtype", "float16"])
    assert code == 0, capsys.readouterr().err
    # the remembered fingerprint is the one of the weights as loaded, not a constant
    from resprompt.backbones import load_backbone
    from resprompt.devices import place
    from resprompt.io import embedding_fingerprint

    backbone, _, _ = load_backbone(tiny_model_dirs["bert"])
    before = embedding_fingerprint(backbone.get_input_embeddings())
    place(backbone, torch.device("cpu"), torch.float16)
    assert embedding_fingerprint(backbone.get_input_embeddings()) == before
    other, _, _ = load_backbone(tiny_model_dirs["bert"])
    assert embedding_fingerprint(other.get_input_embeddings().half()) != before  # float16 rounding differs


def test_place_keeps_the_modules_the_architecture_keeps_in_float32(tiny_model_dirs):
    """Before: casting after loading made T5's `wo` layers float16 too (they overflow there), where
    `from_pretrained(dtype=float16)` keeps them float32."""
    from resprompt.backbones import load_backbone
    from resprompt.devices import place

    loaded, _, _ = load_backbone(tiny_model_dirs["t5"], dtype=torch.float16)
    expected = {name: p.dtype for name, p in loaded.named_parameters()}
    assert torch.float32 in expected.values() and torch.float16 in expected.values()  # the check can fail
    backbone, _, _ = load_backbone(tiny_model_dirs["t5"])
    place(backbone, torch.device("cpu"), torch.float16)
    assert {name: p.dtype for name, p in backbone.named_parameters()} == expected
