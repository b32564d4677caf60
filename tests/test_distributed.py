"""Two CPU processes (gloo, torchrun) train exactly like one process with the same global batch."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file

import resprompt.training.trainer as trainer_mod
from resprompt.prompt.config import ResidualPromptConfig
from resprompt.training.runconfig import split_settings

pytestmark = pytest.mark.slow

# 24 examples = 3 full batches of 8: with a short last batch Accelerate's even_batches pads it with
# repeated examples on several processes, so the two runs would see different data
ARGS = ["--task", "CB", "--max-train-examples", "24", "--max-eval-examples", "16", "--batch-size", "8",
        "--epochs", "2", "--prompt-length", "3", "--bottleneck", "8", "--max-length", "48", "--no-progress",
        "--lr", "0.05"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tiny_model_dirs, data_root, tmp_path):
    if shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")):
        pytest.skip("torchrun not installed")
    # no backbone dropout, so both runs see the same function
    model_dir = tmp_path / "bert0"
    m = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dirs["bert"], num_labels=3, ignore_mismatched_sizes=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    m.save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(tiny_model_dirs["bert"]).save_pretrained(model_dir)
    common = ["--model", str(model_dir), "--data-dir", str(data_root / "superglue"), *ARGS]

    settings = dict(model=str(model_dir), data_dir=str(data_root / "superglue"), task="CB", max_train_examples=24,
                    max_eval_examples=16, batch_size=8, epochs=2, prompt_length=3, bottleneck=8, max_length=48,
                    progress=False, lr=0.05)  # the same run as ARGS
    cfg, prompt_cfg = split_settings({**settings, "output_dir": str(tmp_path / "one")})
    assert isinstance(prompt_cfg, ResidualPromptConfig)
    one = trainer_mod.train(cfg, prompt_cfg)

    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m",
                        "resprompt.cli", "train", *common, "--output-dir", str(tmp_path / "two")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["final"] == one["final"] and two["best_step"] == one["best_step"]
    a = load_file(str(tmp_path / "one" / "best" / "prompt.safetensors"))
    b = load_file(str(tmp_path / "two" / "best" / "prompt.safetensors"))
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), {k: float((a[k] - b[k]).abs().max()) for k in a}
    la = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [x["type"] for x in la] == [x["type"] for x in lb]
    for x, y in zip(la, lb):
        if x["type"] == "train":
            assert abs(x["loss"] - y["loss"]) < 1e-5
