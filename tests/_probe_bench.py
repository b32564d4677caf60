import json
from pathlib import Path
import resprompt.experiments.bench as bench
from test_bench import SMOKE, _grid
import resprompt.training.trainer as trainer_mod
import pytest

def test_probe_smoke(smoke_env, tmp_path):
    assert bench.run_grid(str(SMOKE), overrides=smoke_env) == 0
    rec = json.loads((tmp_path / "results" / "cells" / "main__method=residual__seed=1.json").read_text())
    print("DATA", rec["data_files"])
    print("RES", rec["results"])
    print("CURVE", rec["eval_curve"])
    print("EV", [x for x in rec["metrics"] if x["type"] == "eval"])

def test_probe_grids():
    for name in ("smoke", "small", "paper"):
        print("GRID", name, len(bench.load_grid(str(SMOKE.parent / f"{name}.yaml")).cells))

@pytest.mark.parametrize("kind,method", [("bert", "peft_prompt_tuning"), ("llama", "peft_prompt_tuning"),
                                         ("bert", "peft_p_tuning")])
def test_probe_peft(tiny_model_dirs, data_root, tmp_path, kind, method):
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    grid = _grid(tmp_path, tiny_model_dirs[kind], data, [{"name": "main", "axes": {"method": [method]}}])
    assert bench.run_grid(grid) == 0
    rec = json.loads((tmp_path / "res" / "cells" / f"main__method={method}__seed=1.json").read_text())
    print("PEFT", kind, method, rec["results"], rec["eval_curve"], [x for x in rec["metrics"] if x["type"] == "eval"])
