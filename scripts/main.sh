#!/usr/bin/env bash
# Sets everything up and runs the main job: trains a residual prompt on SuperGLUE CB (real data
# from ../shared/data, or RESPROMPT_DATA_DIR) with the real MiniLM backbone, then prints its
# validation metrics. Extra arguments go to `resprompt train` (e.g. --model smollm2 --epochs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
resprompt train --model minilm --task CB --method residual --prompt-length 10 --bottleneck 400 \
  --epochs 10 --batch-size 8 --lr 0.3 --lr-head 0.003 --seed 42 --output-dir runs/main-cb-minilm --overwrite "$@"
resprompt eval --model minilm --prompt runs/main-cb-minilm --task CB --split val
