"""Scale of a prompt against a backbone's token embeddings, per backbone.

Prints, for each backbone, the median L2 norm of its token embeddings and the norms a prompt vector
starts at: U(-0.5, 0.5) (our ``uniform`` init), N(0, 1) (PEFT's random PromptTuning init), the
paper's LayerNorm branch (norm sqrt(d) at gain 1) and the ``embedding`` branch scale (gain = the
embedding RMS, norm = RMS * sqrt(d)). These numbers explain why the branch scale matters on a
decoder without an embedding LayerNorm (README, "Branch scale").

    python benchmarks/embedding_scale.py                 # minilm smollm2
    python benchmarks/embedding_scale.py --models smollm2 --json out.json
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from resprompt.backbones import BackboneError, load_backbone  # noqa: E402
from resprompt.io import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.models:
        try:
            backbone, _, family = load_backbone(name, head="auto", num_labels=2)
        except BackboneError as e:
            raise SystemExit(f"embedding_scale.py: --models: {e}") from None
        emb = backbone.get_input_embeddings().weight.detach().float()
        d = emb.shape[1]
        rms = emb.pow(2).mean().sqrt().item()
        rows.append({
            "model": name, "family": family, "hidden": d,
            "token_embedding_norm_median": emb.norm(dim=-1).median().item(),
            "uniform_init_norm": math.sqrt(d / 12.0),  # E|x|^2 = d * (1/12) for U(-0.5, 0.5)
            "peft_random_init_norm": math.sqrt(d),
            "paper_branch_norm": math.sqrt(d),
            "embedding_branch_norm": rms * math.sqrt(d),
        })
        del backbone
    cols = list(rows[0])[3:]
    print("model      family   d    " + "  ".join(c.replace("_norm", "").replace("_median", "") for c in cols))
    for r in rows:
        print(f"{r['model']:<10} {r['family']:<8} {r['hidden']:<4} " + "  ".join(
            f"{r[c]:>{len(c.replace('_norm', '').replace('_median', ''))}.2f}" for c in cols))
    if args.json:
        write_json(args.json, rows)  # atomic: never a half-written file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
