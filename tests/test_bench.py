"""Benchmark grids: expansion, one cell end to end, skip/resume bookkeeping, failures, baselines, report."""

import hashlib
import itertools
import json
from pathlib import Path

import pytest

import resprompt.experiments.bench as bench
import resprompt.training.trainer as trainer_mod
from resprompt.training.runconfig import ConfigError

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "grids" / "smoke.yaml"
REQUIRED = {"cell_id", "experiment", "settings", "results", "versions", "hardware", "data_files", "wall_time_s",
            "s_per_step", "peak_memory_mb", "eval_curve", "metrics"}


@pytest.fixture
def smoke_env(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RESPROMPT_BENCH_MODEL", tiny_model_dirs["bert"])
    monkeypatch.setenv("RESPROMPT_BENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("RESPROMPT_BENCH_REPORT", str(tmp_path / "docs" / "RESULTS.md"))
    monkeypatch.setenv("RESPROMPT_BENCH_PLOTS", str(tmp_path / "docs" / "img"))
    return {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}


def _grid(tmp_path, model, data, experiments, **defaults):
    return {"name": "t", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
            "plots_dir": str(tmp_path / "img"),
            "defaults": {"model": model, "task": "CB", "train_source": "fewglue", "max_train_examples": 8,
                         "max_eval_examples": 8, "batch_size": 4, "eval_batch_size": 8, "max_steps": 2,
                         "eval_every": 1, "max_length": 48, "prompt_length": 2, "bottleneck": 8, "lr_head": 0.01,
                         **data, **defaults},
            "experiments": experiments}


def test_expansion_ids_and_validation(monkeypatch):
    data = {"name": "g", "defaults": {"model": "m", "epochs": 2},
            "experiments": [{"name": "main", "axes": {"task": ["CB", "RTE"], "method": ["none", "residual"]},
                             "seeds": [1, 2]},
                            {"name": "lr", "defaults": {"task": "CB"}, "axes": {"lr": [0.01, 1e-1], "prompt_length": 5}}]}
    names, cells = bench.expand(data)
    assert names == ["main", "lr"] and len(cells) == 2 * 2 * 2 + 2
    assert cells[0].id == "main__task=CB__method=none__seed=1"
    assert [c.id for c in cells[-2:]] == ["lr__lr=0.01__prompt_length=5__seed=1", "lr__lr=0.1__prompt_length=5__seed=1"]
    assert cells[-1].settings["num_tokens"] == 5 and cells[-1].settings["epochs"] == 2
    assert cells[7].settings == {"progress": False, "model": "m", "epochs": 2, "task": "RTE", "method": "residual",
                                 "seed": 2}
    # identical resolved settings -> identical keys, whatever the spelling
    a = bench.Cell("a", "x", {}, 1, {"model": "m", "seed": 1, "method": "residual"})
    b = bench.Cell("b", "y", {}, 1, {"model": "m", "seed": 1, "shared": True, "num_tokens": 10})
    assert a.key == b.key
    with pytest.raises(ConfigError, match="method='nope'"):
        bench.expand({"name": "g", "experiments": [{"name": "e", "axes": {"method": ["nope"]}}]})
    with pytest.raises(ConfigError, match="unknown setting"):
        bench.expand({"name": "g", "experiments": [{"name": "e", "axes": {"colour": ["red"]}}]})
    with pytest.raises(ConfigError, match="not unique"):
        bench.expand({"name": "g", "experiments": [{"name": "e", "axes": {"model": ["a/x", "b/x"]}}]})
    with pytest.raises(ConfigError, match="notes: expected a list of strings"):
        bench.load_grid({"name": "g", "notes": "one string", "experiments": [{"name": "e"}]})
    monkeypatch.setenv("BENCH_T", "tiny")
    grid = bench.load_grid({"name": "g", "defaults": {"model": "${BENCH_T}/${NOT_SET:-m}"},
                            "experiments": [{"name": "e"}]})
    assert grid.cells[0].settings["model"] == "tiny/m" and grid.results_dir == Path("benchmarks/results/g")


def test_smoke_grid_end_to_end_then_skip(smoke_env, tmp_path, monkeypatch):
    assert bench.run_grid(str(SMOKE), overrides=smoke_env) == 0
    res = tmp_path / "results"
    rec = json.loads((res / "cells" / "main__method=residual__seed=1.json").read_text())
    assert REQUIRED <= set(rec)
    assert rec["results"]["steps"] == 4 and [s for s, _ in rec["eval_curve"]] == [2, 4]
    assert rec["settings"]["method"] == "residual" and rec["peak_memory_mb"] > 0
    assert set(rec["data_files"]) == {str(Path(smoke_env["fewglue_dir"]) / "CB" / "train.jsonl"),
                                      str(Path(smoke_env["data_dir"]) / "CB" / "val.jsonl")}
    assert all(h == hashlib.sha256(Path(p).read_bytes()).hexdigest() for p, h in rec["data_files"].items())
    assert not (res / "runs" / "main__method=residual__seed=1").exists()  # run folder removed
    report = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "resprompt bench" in report and "## Claims of the paper" in report and "| 1/1 |" in report

    def boom(*a, **k):
        raise AssertionError("the trainer ran again for a finished cell")

    monkeypatch.setattr(trainer_mod, "train", boom)
    assert bench.run_grid(str(SMOKE), overrides=smoke_env) == 0
    assert bench.run_grid(str(SMOKE), overrides=smoke_env, report_only=True) == 0


def test_partial_grid_report_and_failed_cell(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    grid = _grid(tmp_path, tiny_model_dirs["bert"], data, [
        {"name": "main", "axes": {"task": ["CB"], "method": ["none", "residual"]}, "seeds": [1, 2]},
        {"name": "lr_robustness", "axes": {"method": ["none", "residual"], "lr": [0.01, 1.0]}, "seeds": [1]}])
    real = trainer_mod.train

    def flaky(cfg, prompt_cfg, **kw):
        if prompt_cfg.reparam == "none" and cfg.seed == 2:
            raise RuntimeError("simulated crash")
        return real(cfg, prompt_cfg, **kw)

    monkeypatch.setattr(trainer_mod, "train", flaky)
    assert bench.run_grid(grid, only="main__") == 1  # one cell failed, the others ran
    cells = {p.stem for p in (tmp_path / "res" / "cells").iterdir()}
    assert cells == {"main__task=CB__method=none__seed=1", "main__task=CB__method=residual__seed=1",
                     "main__task=CB__method=residual__seed=2"}
    failed = json.loads((tmp_path / "res" / "failed" / "main__task=CB__method=none__seed=2.json").read_text())
    assert "simulated crash" in failed["error"]
    report = (tmp_path / "R.md").read_text()
    assert "## Experiment `lr_robustness`" in report and "| — | — | 0/1 |" in report  # missing cells
    none_row = next(ln for ln in report.splitlines() if ln.startswith("| CB | none |"))
    assert "| 1/2 |" in none_row
    assert "main__task=CB__method=none__seed=2" in report.split("## Failed cells")[1]
    verdict = {ln.split("|")[1].strip(): ln.split("|")[-2].strip() for ln in report.splitlines()
               if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()}
    assert verdict == {str(i): "**not measured yet**" for i in range(1, 10)}  # 2 tokens; lr_robustness not run


def test_head_only_trains_only_the_head(tiny_model_dirs, data_root, tmp_path):
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    grid = _grid(tmp_path, tiny_model_dirs["bert"], data,
                 [{"name": "main", "axes": {"method": ["head_only"]}, "seeds": [1]}])
    assert bench.run_grid(grid) == 0
    rec = json.loads((tmp_path / "res" / "cells" / "main__method=head_only__seed=1.json").read_text())
    assert rec["results"]["trainable_parameters"] == 32 * 3 + 3  # BERT classifier: hidden 32 -> 3 labels
    assert rec["results"]["num_tokens"] == 0 and rec["method"] == "head_only"


@pytest.mark.parametrize("kind,method", [("bert", "peft_prompt_tuning"), ("llama", "peft_prompt_tuning"),
                                         ("bert", "peft_p_tuning")])
def test_peft_baselines_run_one_cell(tiny_model_dirs, data_root, tmp_path, kind, method):
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    grid = _grid(tmp_path, tiny_model_dirs[kind], data, [{"name": "main", "axes": {"method": [method]}}])
    assert bench.run_grid(grid) == 0
    rec = json.loads((tmp_path / "res" / "cells" / f"main__method={method}__seed=1.json").read_text())
    res, ev = rec["results"], [x for x in rec["metrics"] if x["type"] == "eval"]
    assert res["method"] == method and res["final"]["accuracy"] == ev[-1]["accuracy"] and res["final"]["n"] == 8
    assert res["final"]["score"] == rec["eval_curve"][-1][1]
    prompt = 2 * 32
    head = 32 * 3 + 3 if kind == "bert" else 0
    if method == "peft_prompt_tuning":
        assert res["trainable_parameters"] == prompt + head
    else:
        assert res["trainable_parameters"] == prompt + head + (32 * 8 + 8) + (8 * 8 + 8) + (8 * 32 + 32)  # PEFT's MLP


def test_baseline_parameter_groups(tiny_model_dirs):
    from resprompt.backbones import load_backbone

    bb, tok, fam = load_backbone(tiny_model_dirs["bert"], num_labels=3)
    from resprompt.experiments.baselines import PeftPromptModel

    m = PeftPromptModel(bb, tok, fam, "peft_p_tuning", 4, 16)
    groups = {k: sum(p.numel() for p in v) for k, v in m.parameter_groups().items()}
    assert groups["prompt"] == 4 * 32 and groups["head"] == 32 * 3 + 3
    assert groups["network"] == (32 * 16 + 16) + (16 * 16 + 16) + (16 * 32 + 32)  # PEFT's MLP, hidden 16


@pytest.mark.parametrize("method", ["residual", "head_only"])
def test_interrupted_cell_resumes_from_its_checkpoint(tiny_model_dirs, data_root, tmp_path, monkeypatch, capsys,
                                                      method):
    """head_only (a baseline): before, every resume raised TypeError (load_trainable took no allow_mismatch)."""
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    grid = _grid(tmp_path, tiny_model_dirs["bert"], data, [{"name": "main", "axes": {"method": [method]}}],
                 max_steps=4, eval_every=2)

    def kill(step):
        if step == 3:  # after the checkpoint written with the evaluation at step 2
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        bench.run_grid(grid)
    assert (tmp_path / "res" / "runs" / f"main__method={method}__seed=1" / "checkpoint").is_dir()
    assert bench.run_grid(grid, dry_run=True) == 0
    assert f"resume  main__method={method}__seed=1" in capsys.readouterr().out
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)
    seen, real = [], trainer_mod.train
    monkeypatch.setattr(trainer_mod, "train", lambda cfg, p, **kw: seen.append(cfg.resume) or real(cfg, p, **kw))
    assert bench.run_grid(grid) == 0 and seen == [True]
    rec = json.loads((tmp_path / "res" / "cells" / f"main__method={method}__seed=1.json").read_text())
    assert rec["resumed"] is True and rec["results"]["steps"] == 4
    assert [s for s, _ in rec["eval_curve"]] == [2, 4]


def test_shipped_grids_validate_and_a_paper_cell_runs_on_t5(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Every cell of the shipped grids validates; paper.yaml's protocol holds and one of its T5 cells runs."""
    for name, n in (("smoke", 1), ("small", 515), ("paper", 900), ("full", 156)):
        assert len(bench.load_grid(str(SMOKE.parent / f"{name}.yaml")).cells) == n, name
    monkeypatch.setenv("RESPROMPT_PAPER_MODEL", tiny_model_dirs["t5"])
    monkeypatch.setenv("RESPROMPT_PAPER_ENCODER", tiny_model_dirs["bert"])
    paper = bench.load_grid(str(SMOKE.parent / "paper.yaml"))
    main = [c for c in paper.cells if c.experiment == "main"]
    assert {(c.settings["epochs"], c.settings["batch_size"], c.settings["lr"]) for c in main} == {(20, 8, 0.3)}
    assert {c.settings["num_tokens"] for c in main} == {10, 100} and {c.seed for c in main} == {1, 2, 3}
    assert {c.settings["train_source"] for c in main} == {"superglue", "hub"}  # full training sets
    cell = "main__model=t5__task=CB__prompt_length=10__method=residual__seed=1"
    assert cell in {c.id for c in main}
    small = {"data_dir": str(data_root / "superglue"), "max_steps": 2, "max_train_examples": 8,
             "max_eval_examples": 8, "batch_size": 4, "eval_batch_size": 8, "eval_every": 1, "max_length": 48}
    assert bench.run_grid(str(SMOKE.parent / "paper.yaml"), str(tmp_path / "res"), only=cell, overrides=small,
                          report=str(tmp_path / "R.md"), plots_dir=str(tmp_path / "img")) == 0
    rec = json.loads((tmp_path / "res" / "cells" / f"{cell}.json").read_text())
    assert rec["settings"]["epochs"] == 20 and rec["results"]["steps"] == 2 and rec["results"]["num_tokens"] == 10
    assert rec["settings"]["train_source"] == "superglue"
    assert rec["results"]["best"]["score"] == max(v for s, v in rec["eval_curve"] if s > 0)


def _fake(cell, best, n=50, curve=(0.5, 0.6)):
    res = {"best": {"score": best / 100, "n": n}, "final": {"score": best / 100, "n": n}, "num_tokens": 10,
           "trainable_parameters": 1000, "steps": 8}
    return {"cell_id": cell.id, "experiment": cell.experiment, "axes": cell.axes, "seed": cell.seed,
            "settings": cell.settings, "settings_key": cell.key, "results": res, "cell_wall_s": 60.0,
            "s_per_step": 0.5, "peak_memory_mb": 900.0, "eval_curve": [[i + 1, v] for i, v in enumerate(curve)],
            "hardware": {"cpu": "x", "cores": 2}, "versions": {"torch": "t"}}


def test_claim_verdicts_and_plots_from_records(tmp_path):
    from resprompt.experiments.report import build_report
    from resprompt.io import write_json

    grid = bench.load_grid({"name": "v", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
                            "plots_dir": str(tmp_path / "img"), "seeds": [1, 2, 3], "defaults": {"model": "m"},
                            "experiments": [
                                {"name": "main", "defaults": {"prompt_length": 100},
                                 "axes": {"task": ["CB", "RTE"], "method": ["none", "residual"]}},
                                {"name": "lr_robustness", "axes": {"method": ["none", "residual"],
                                                                   "lr": [0.01, 0.3, 10.0]}},
                                {"name": "bottleneck", "axes": {"bottleneck": [10, 50, 400]}}]})
    score = {"none": 60.0, "residual": 70.0}
    (tmp_path / "res" / "cells").mkdir(parents=True)
    for c in grid.cells:
        if c.experiment == "bottleneck" and c.axes["bottleneck"] == 400:
            continue  # a missing cell
        s = score.get(c.settings["method"], 70.0) + c.seed * 0.5
        if c.experiment == "lr_robustness" and c.settings["method"] == "none":
            s -= 20 * (c.axes["lr"] == 10.0)
        write_json(tmp_path / "res" / "cells" / f"{c.id}.json", _fake(c, s))
    text = build_report(grid).read_text()
    verdict = {ln.split("|")[1].strip(): ln.split("|")[-2].strip() for ln in text.splitlines()
               if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()}
    assert verdict["1"] == "**confirmed**"  # +10 at 100 tokens >= tau = max(0.5, 2) and >= 7 / 2
    assert verdict["2"] == "**not measured yet**"  # no cell at 10 tokens
    assert verdict["4"] == "**confirmed**"  # residual flat over lr
    assert verdict["8"] == "**not measured yet**"  # needs two sizes >= 50: 400 is missing
    assert verdict["3"] == "**not measured yet**"
    assert "prompt tuning R = 20.0" in text
    assert (tmp_path / "img" / "v-lr_robustness.png").is_file() and (tmp_path / "img" / "v-bottleneck.png").is_file()
    assert "| 10 | 71.0 ± 0.5 | 71.0 ± 0.5 | 3/3 | 2.00 |" in text and "| 400 | — | — | 0/3 | — |" in text
    assert "| main | 12/12 | 0 | 0:12:00 |" in text


def test_more_claim_rules_from_records(tmp_path):
    from resprompt.experiments.report import build_report
    from resprompt.io import write_json

    grid = bench.load_grid({"name": "w", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
                            "plots_dir": str(tmp_path / "img"), "seeds": [1, 2, 3], "defaults": {"model": "m"},
                            "experiments": [
                                {"name": "prompt_length", "axes": {"method": ["none", "residual"],
                                                                   "prompt_length": [1, 10, 100]}},
                                {"name": "init", "axes": {"method": ["none", "residual"], "init": ["uniform", "vocab"]}},
                                {"name": "convergence", "axes": {"method": ["none", "mlp", "residual"]}},
                                {"name": "shared", "axes": {"shared": [True, False]}}]})
    (tmp_path / "res" / "cells").mkdir(parents=True)
    curves = {"none": (0.3, 0.5, 0.6), "mlp": (0.4, 0.55, 0.6), "residual": (0.6, 0.6, 0.6)}
    for c in grid.cells:
        m, s = c.settings["method"], 60.0 + c.seed
        if c.experiment == "prompt_length":  # residual at L is 5 below none at 10 L
            s += {"none": 0, "residual": -5}[m] + c.axes["prompt_length"] / 10
        s += 10 * (c.experiment == "init" and m == "none" and c.axes["init"] == "vocab")
        s -= 3 * (c.experiment == "shared" and not c.axes["shared"])
        write_json(tmp_path / "res" / "cells" / f"{c.id}.json", _fake(c, s, curve=curves.get(m, (0.5,))))
    text = build_report(grid).read_text()
    verdict = {ln.split("|")[1].strip(): ln.split("|")[-2].strip() for ln in text.splitlines()
               if ln.startswith("| ") and ln.split("|")[1].strip().isdigit()}
    assert verdict["2"] == "**not confirmed**"  # -5 at 10 tokens
    assert verdict["1"] == "**not confirmed**"  # -5 at 100 tokens
    assert verdict["3"] == "**not confirmed**"  # residual at L well below none at 10 L: d < -tau
    assert verdict["5"] == "**confirmed**" and verdict["7"] == "**confirmed**" and verdict["9"] == "**confirmed**"
    assert (tmp_path / "img" / "w-convergence.png").is_file() and (tmp_path / "img" / "w-prompt_length.png").is_file()


def test_claims_per_backbone_cost_and_latency_sections(tmp_path):
    from resprompt.experiments.report import build_report
    from resprompt.io import write_json

    latency = tmp_path / "lat.json"
    write_json(latency, {"median_s": {"bare": 0.1, "folded": 0.12, "peft": 0.121}, "folded/peft": 0.992,
                         "folded/bare": 1.2, "trainable_params_during_training": 5000,
                         "stored_params_after_folding": 300, "batch": [8, 128], "rounds": 5, "threads": 2,
                         "torch": "t"})
    grid = bench.load_grid({"name": "b", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
                            "plots_dir": str(tmp_path / "img"), "seeds": [1, 2, 3], "latency": str(latency),
                            "notes": ["WSC's train split is one class."],
                            "experiments": [{"name": "main", "axes": {
                                "model": ["enc", "dec"], "task": ["CB"], "method": ["none", "residual", "head_only"]}}]})
    (tmp_path / "res" / "cells").mkdir(parents=True)
    for c in grid.cells:
        m, model = c.settings["method"], c.settings["model"]
        s = 60.0 + c.seed + {"none": 0, "head_only": 0, "residual": 10 if model == "enc" else -10}[m]
        rec = _fake(c, s)
        rec["results"]["trainable_parameters"] = {"none": 300, "residual": 5000, "head_only": 20}[m]
        if model == "enc" and m == "residual" and c.seed == 3:  # one step: its s/step times evaluations
            rec["results"]["steps"], rec["s_per_step"] = 1, 60.0
        write_json(tmp_path / "res" / "cells" / f"{c.id}.json", rec)
    lines = build_report(grid).read_text().splitlines()
    claim2 = [ln.split("|")[3].strip() + " " + ln.split("|")[-2].strip() for ln in lines if ln.startswith("| 2 |")]
    assert claim2 == ["dec **not confirmed**", "enc **confirmed**"]  # +-10 at the default 10 tokens
    assert "| enc | residual | 10 | 5,000 | 300 | 0.5 ± 0.0 | 900 | 3 |" in lines  # the 1-step cell not timed
    assert "| enc | head_only | 10 | 20 | 20 | 0.5 ± 0.0 | 900 | 3 |" in lines
    assert "| folded | 120.0 |" in lines and "- WSC's train split is one class." in lines
    assert any(ln.startswith("folded / PEFT = 0.992; folded / bare = 1.200") for ln in lines)


def test_claim_two_judged_separately_on_the_full_training_set(tmp_path):
    from resprompt.experiments.report import build_report
    from resprompt.io import write_json

    grid = bench.load_grid({"name": "f", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
                            "plots_dir": str(tmp_path / "img"), "seeds": [1, 2, 3], "defaults": {"model": "m"},
                            "experiments": [
                                {"name": "main", "axes": {"method": ["none", "residual"]}},
                                {"name": "full_train", "defaults": {"train_source": "superglue"},
                                 "axes": {"method": ["none", "residual"]}}]})
    (tmp_path / "res" / "cells").mkdir(parents=True)
    for c in grid.cells:  # FewGLUE cells: residual 5 below; full training set: residual 5 above
        sign = 1 if c.experiment == "full_train" else -1
        s = 60.0 + c.seed + sign * 5 * (c.settings["method"] == "residual")
        write_json(tmp_path / "res" / "cells" / f"{c.id}.json", _fake(c, s))
    rows = [ln.split("|") for ln in build_report(grid).read_text().splitlines() if ln.startswith("| 2 |")]
    assert [(r[4].split()[0], r[-2].strip()) for r in rows] == [("main,", "**not confirmed**"),
                                                               ("full_train", "**confirmed**")]
    assert "d = +5.0" in rows[1][6] and "d = -5.0" in rows[0][6]

    (tmp_path / "res" / "cells" / "full_train__method=residual__seed=3.json").unlink()  # a partial panel:
    text = build_report(grid).read_text()  # not measured yet, so no second row for claim 2 (was judged on 2 seeds)
    assert sum(ln.startswith("| 2 |") for ln in text.splitlines()) == 1
    for f in (tmp_path / "res" / "cells").glob("full_train*"):  # not run: no second row for claim 2
        f.unlink()
    text = build_report(grid).read_text()
    assert sum(ln.startswith("| 2 |") for ln in text.splitlines()) == 1
    assert sum(ln.startswith("| 3 |") for ln in text.splitlines()) == 1  # unmeasured: one "not measured yet"


def test_reference_scores_are_the_constant_predictions(real_data_root, monkeypatch):
    data_root = real_data_root
    """CB val: 23 entailment, 28 contradiction, 5 neutral; FewGLUE CB train: 19 / 10 / 3."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    ref = importlib.import_module("reference_scores")
    monkeypatch.setattr(ref, "_fewglue_dir", lambda: data_root / "fewglue")
    monkeypatch.setattr(sys.modules["resprompt.tasks.data"], "DEFAULT_DATA_DIR", data_root / "superglue")
    # always contradiction: acc 28/56, macro F1 (2/3 + 0 + 0) / 3; always entailment: 23/56, F1 (46/79) / 3
    assert ref.constant_scores("CB", None) == {"majority": round(100 * (0.5 + 2 / 9) / 2, 1), "majority_label": 1,
                                               "train_prior": round(100 * (23 / 56 + 46 / 79 / 3) / 2, 1),
                                               "train_prior_label": 0, "n": 56}


def test_pivot_average_names_a_partial_row():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import _pivot

    scores = {("none", "CB"): [50.0, 60.0], ("none", "RTE"): [52.0, 54.0],
              ("peft", "CB"): [40.0, 44.0], ("residual", "CB"): [48.0, None], ("residual", "RTE"): [None, None],
              ("mlp", "CB"): [50.0, None], ("mlp", "RTE"): [52.0, 54.0]}
    cells, rows = [], {}
    for (method, task), values in scores.items():
        for seed, v in enumerate(values, 1):
            cid = f"{method}-{task}-{seed}"
            cells.append(NS(id=cid, axes={"method": method, "task": task}))
            if v is not None:
                rows[cid] = NS(best=v)
    table = _pivot(cells, rows)
    assert table[0] == "| method | CB | RTE | avg |"
    assert table[2] == "| none | 55.0 ± 7.1 | 53.0 ± 1.4 | 54.0 |"       # both tasks: plain mean
    assert table[3] == "| peft | 42.0 ± 2.8 | — | 42.0 (1 of 2) |"       # ran CB only: says so
    assert table[4] == "| residual | 48.0 | — | — |"                    # RTE declared, not finished
    assert table[5] == "| mlp | 50.0 | 53.0 ± 1.4 | — |"               # CB has 1 of its 2 seeds: no average



def test_step_0_column_area_and_mixed_axis_panels(tmp_path):
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import Row, _experiment_table, _plot_panels

    grid = bench.load_grid({"name": "c", "results_dir": str(tmp_path / "res"), "report": str(tmp_path / "R.md"),
                            "plots_dir": str(tmp_path / "img"), "seeds": [1, 2], "defaults": {"model": "m"},
                            "experiments": [
                                {"name": "convergence", "axes": {"task": ["CB"], "method": ["none", "residual"]}},
                                {"name": "convergence", "axes": {"model": ["m2"], "task": ["COPA"],
                                                                 "method": ["residual"]}}]})
    rows = {}
    for c in grid.cells:
        rec = _fake(c, 60.0 + c.seed)
        if c.axes.get("model") == "m2":  # run with --eval-at-start: the curve starts at step 0
            rec["results"]["initial"] = {"score": 0.40 + c.seed / 100}
            rec["eval_curve"] = [[0, 0.1], [1, 0.5], [2, 0.6]]
            rec["metrics"] = [{"type": "train", "step": 1}] + [  # prompt norms: 3 -> 4 + seed (mean 5.5)
                {"type": "eval", "step": i, "prompt_norm": 3.0 + i * (1 + c.seed) / 2} for i in range(3)]
        rows[c.id] = Row(c, rec)
    two = [c for c in grid.cells if "model" in c.axes]
    assert rows[two[0].id].auc == pytest.approx(55.0)  # step 0 drawn, not averaged
    assert rows[two[0].id].initial == pytest.approx(41.0)
    table = _experiment_table(two, rows)
    assert table[0] == "| model | task | method | best | last | step 0 | ‖P'‖ first → last eval | seeds | 1 ex. |"
    assert table[2] == "| m2 | COPA | residual | 61.5 ± 0.7 | 61.5 ± 0.7 | 41.5 ± 0.7 | 3.0 → 5.5 | 2/2 | 2.00 |"
    one = [c for c in grid.cells if "model" not in c.axes]
    assert "step 0" not in _experiment_table(one, rows)[0] and "P'" not in _experiment_table(one, rows)[0]
    rows[two[1].id].norm_first = rows[two[1].id].norm_last = None  # seed 2 ran before norms were logged
    assert "| 3.0 → 5.0 (1 of 2) |" in _experiment_table(two, rows)[2]
    panels = _plot_panels(grid.cells, rows)
    assert {p: {m: len(cs) for m, cs in d.items()} for p, d in panels.items()} == {
        (("task", "CB"),): {"none": 2, "residual": 2}, (("model", "m2"), ("task", "COPA")): {"residual": 2}}
    assert _plot_panels(grid.cells, {k: NS() for k in list(rows)[:1]}, x="lr") == {}  # no lr axis: nothing


def test_compare_cells_finds_where_two_runs_part(tmp_path, monkeypatch, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    cc = importlib.import_module("compare_cells")
    assert cc.first_divergence([1.0, 2.0, 3.0], [1.0, 2.00005, 3.1], 1e-4) == 3
    assert cc.first_divergence([1.0, 2.0], [1.0, 2.0, 9.0], 1e-4) is None  # common length only
    rec = {"cell_id": "a", "hardware": {"cpu": "x"}, "versions": {}, "results": {"best": {"score": 0.5}},
           "metrics": [{"type": "train", "step": 1, "loss": 1.0}, {"type": "train", "step": 2, "loss": 0.5},
                       {"type": "eval", "step": 2, "score": 0.5, "prompt_norm": 7.0}]}
    other = json.loads(json.dumps(rec))
    other["metrics"][1]["loss"] = 0.4
    for name, r in (("a.json", rec), ("b.json", other)):
        (tmp_path / name).write_text(json.dumps(r))
    assert cc.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "first differ by more than 0.0001 at step 2" in out and "2 | 50.0 | 50.0 | 7.0 | 7.0" in out
    assert cc.main([str(tmp_path / "a.json"), str(tmp_path / "missing.json")]) == 2
    assert "cannot read cell record" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert cc.main([str(tmp_path / "a.json"), str(tmp_path / "list.json")]) == 2
    assert "is not a cell record" in capsys.readouterr().err


@pytest.mark.parametrize("grid", ["small", "full"])
def test_committed_cells_keep_their_keys(grid):
    """A new setting must not change the key of a finished cell (the grid would run it again)."""
    root = Path(__file__).resolve().parents[1]
    cells_dir = root / "benchmarks" / "results" / grid / "cells"
    stored = {p.stem: json.loads(p.read_text())["settings_key"] for p in cells_dir.glob("*.json")}
    if not stored:
        pytest.skip(f"no committed cells in {cells_dir}")
    current = {c.id: c.key for c in bench.load_grid(str(root / "benchmarks" / "grids" / f"{grid}.yaml")).cells}
    changed = sorted(cid for cid, key in stored.items() if cid in current and current[cid] != key)
    assert not changed, f"{len(changed)} of {len(stored)} cells changed keys, e.g. {changed[:3]}"


# ----------------------------------------------------------------------------- the report's top (issue 16 §2-3)
def _summary_grids(tmp_path):
    """A full-data grid (main_full, readout) and a FewGLUE grid whose report opens with the summary of both."""
    from resprompt.io import write_json

    ref = tmp_path / "reference_scores.json"
    write_json(ref, {"CB": {"majority": 36.1, "n": 50}, "RTE": {"majority": 52.7, "n": 50},
                     "WiC": {"majority": 50.0, "n": 638}})  # WiC: another validation set than the cells'
    full = {"name": "fullg", "results_dir": str(tmp_path / "full"), "report": str(tmp_path / "docs" / "FULL.md"),
            "plots_dir": str(tmp_path / "docs" / "img" / "full"), "seeds": [1, 2], "reference_scores": str(ref),
            "summary": {"full_data": "PLACEHOLDER", "plot": str(tmp_path / "docs" / "img" / "summary_full.png")},
            "defaults": {"model": "m", "train_source": "superglue", "pooling": "auto"},
            "experiments": [
                {"name": "readout", "axes": {"task": ["CB"], "method": ["residual", "head_only"],
                                             "pooling": ["auto", "native"]}},
                {"name": "main_full", "axes": {"task": ["CB", "RTE", "WiC"],
                                               "method": ["none", "residual", "head_only"]}}]}
    full["summary"]["full_data"] = {k: v for k, v in full.items() if k != "summary"}  # names itself
    small = {"name": "smallg", "results_dir": str(tmp_path / "small"), "report": str(tmp_path / "docs" / "R.md"),
             "plots_dir": str(tmp_path / "docs" / "img"), "seeds": [1, 2], "reference_scores": str(ref),
             "summary": {"full_data": full, "plot": str(tmp_path / "docs" / "img" / "summary_full.png")},
             "defaults": {"model": "m"},
             "experiments": [{"name": "main", "axes": {"task": ["CB", "RTE"], "method": ["none", "residual"]}}]}
    score = {("readout", "residual", "auto"): 60.0, ("readout", "head_only", "auto"): 65.0,
             ("readout", "residual", "native"): 50.0, ("readout", "head_only", "native"): 55.0}
    for grid, root in ((full, "full"), (small, "small")):
        g = bench.load_grid(grid)
        (tmp_path / root / "cells").mkdir(parents=True)
        for c in g.cells:
            task, m = c.settings["task"], c.settings["method"]
            if c.experiment == "main_full" and (m == "head_only" or (task == "RTE" and m == "residual")
                                                or task == "WiC" and c.seed == 2):
                continue  # not run yet (main_full CB head_only: read from the identical readout cell)
            if c.experiment == "main_full" and task == "CB" and m == "residual":
                continue  # also identical to a readout cell
            s = score.get((c.experiment, m, c.settings.get("pooling")),
                          {"none": 30.0, "residual": 70.0, "head_only": 60.0}[m]) + c.seed
            write_json(tmp_path / root / "cells" / f"{c.id}.json", _fake(c, s))
    return bench.load_grid(small), bench.load_grid(full)


def test_summary_top_full_data_and_fewglue_tables_with_the_constant(tmp_path):
    from resprompt.experiments.report import build_report

    small, _ = _summary_grids(tmp_path)
    text = build_report(small).read_text()
    heads = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert heads[:5] == ["## What we found", "## Full SuperGLUE training sets (grid `fullg`)",
                         "## FewGLUE, 32 training examples per task (grid `smallg`, experiment `main`)",
                         "## Claims of the paper", "## The grid"]
    full_part, few_part = text.split("## FewGLUE")[0].split("## Full SuperGLUE")[1], text.split("## FewGLUE")[1]
    # the best-constant row beside each table; WiC's constant is for another validation set: not shown
    assert "| | **best constant** | **36.1** | **52.7** | — |" in full_part
    assert "| | **best constant** | **36.1** | **52.7** |" in few_part.split("## Claims")[0]
    # a mean at or below its task's constant is marked, one above it is not
    assert "| m | none | 31.5 ± 0.7 ≤c (2/2) | 31.5 ± 0.7 ≤c (2/2) | 31.0 (1/2) |" in full_part
    assert "| m | none | 31.5 ± 0.7 ≤c (2/2) | 31.5 ± 0.7 ≤c (2/2) |" in few_part
    # CB residual / head-only come from the identical readout cells (auto pooling); missing cells say so
    assert "| m | residual | 61.5 ± 0.7 (2/2) | — (0/2) | 71.0 (1/2) |" in full_part
    assert "| m | head_only | 66.5 ± 0.7 (2/2) | — (0/2) | — (0/2) |" in full_part
    assert "Rests on 10 of 18 cells (4 of them read from `readout` cells with the same settings" in full_part
    assert "; 8 not run yet." in full_part and "Rests on 8 of 8 cells." in few_part
    # "What we found": generated from the same numbers
    found = text.split("## What we found")[1].split("## Full SuperGLUE")[0]
    # in sentences: the mean per method over the tasks where every method has all its seeds (CB here), residual
    # minus none on them, the tasks still partial, and the means at or below the constant
    assert ("On m, over the 1 task where every method has all its seeds (CB), the mean scores are head_only 66.5, "
            "residual 61.5, none 31.5; residual minus none: CB +30.0 (1 ex. = 2.00); still partial: RTE, WiC.") in found
    assert ("2 of 6 means are at or below the best constant (every finished mean on RTE; also m CB none).") in found
    assert "Not run yet: 8 cells" in found
    assert "**No.**" in found  # residual 61.5 vs probe 66.5 on CB auto
    assert "2 of its 4 task × method means are at or below the best constant" in found
    assert (tmp_path / "docs" / "img" / "summary_full.png").stat().st_size > 1000
    assert "![score per task and method, full training sets](img/summary_full.png)" in text
    assert "[FULL.md](FULL.md)" in full_part


def test_signed_differences():
    from resprompt.experiments.report import _signed

    assert [_signed(x) for x in (2.34, -1.26, 0.0, -0.04, 0.04, -0.05, -0.051)] == \
        ["+2.3", "-1.3", "+0.0", "+0.0", "+0.0", "-0.1", "-0.1"]


def test_found_sentences_per_model_and_the_constant():
    from resprompt.experiments.report import _found_low, _found_model

    def e(mean, k=3, low=False):
        return {"mean": mean, "std": 1.0, "k": k, "planned": 3, "low": low}

    info = {"tasks": ["CB", "COPA", "WSC"], "const": {"CB": 36.1, "COPA": 55.0, "WSC": 63.5},
            "ex": {"CB": 1.79, "COPA": 1.0, "WSC": None},
            "entries": {("a", "none", "CB"): e(60.0), ("a", "residual", "CB"): e(62.5),
                        ("a", "none", "COPA"): e(54.0, low=True), ("a", "residual", "COPA"): e(57.0),
                        ("a", "none", "WSC"): e(60.0, k=1, low=True), ("a", "residual", "WSC"): e(None, k=0),
                        ("b", "residual", "CB"): e(56.1, k=1), ("b", "residual", "COPA"): e(None, k=0)}}
    assert _found_model(info, "a") == ("on a, over the 2 tasks where every method has all its seeds (CB, COPA), "
                                       "the mean scores are residual 59.8, none 57.0; residual minus none: CB +2.5, "
                                       "COPA +3.0 (1 ex. = 1.79, 1.00); still partial: WSC")
    # one method only, or no task complete: each begun task's means, with its constant
    assert _found_model(info, "b") == "on b: CB residual 56.1 (1 seed; best constant 36.1)"
    # a complete task without none (a part that plans other methods there): no residual minus none, no KeyError
    c = {"tasks": ["CB", "COPA"], "const": info["const"], "ex": info["ex"],
         "entries": {("c", "none", "CB"): e(60.0), ("c", "residual", "CB"): e(62.0),
                     ("c", "residual", "COPA"): e(57.0), ("c", "mlp", "COPA"): e(55.0)}}
    assert _found_model(c, "c") == ("on c, over the 2 tasks where every method has all its seeds (CB, COPA), "
                                    "the mean scores are residual 59.5")
    # a difference that rounds to zero is "+0.0", not "-0.0"
    c["entries"] = {("c", "none", "CB"): e(53.13), ("c", "residual", "CB"): e(53.12)}
    assert _found_model(c, "c").endswith("residual minus none: CB +0.0 (1 ex. = 1.79)")
    assert _found_low(info) == ("2 of 6 means are at or below the best constant (every finished mean on WSC; "
                                "also a COPA none).")
    info["entries"] = {k: {**v, "low": False} for k, v in info["entries"].items()}
    assert _found_low(info) == "None of the 6 means is at or below the best constant."


def test_in_short_lead_reads_the_bullets_numbers():
    from resprompt.experiments.report import DASH, _in_short

    def e(mean, k=3):
        return {"mean": mean, "std": 1.0, "k": k, "planned": 3, "low": False}

    full = {"total": 10, "done": 9, "tasks": ["CB", "COPA"], "const": {}, "ex": {"CB": 1.79, "COPA": 1.0},
            "entries": {("a", "none", "CB"): e(60.0), ("a", "residual", "CB"): e(62.0), ("a", "head_only", "CB"): e(65.0),
                        ("a", "none", "COPA"): e(54.0), ("a", "residual", "COPA"): e(57.0),
                        ("a", "head_only", "COPA"): e(58.0),
                        ("b", "none", "CB"): e(50.0), ("b", "residual", "CB"): e(53.0),
                        ("b", "none", "COPA"): e(55.0, k=2), ("b", "residual", "COPA"): e(56.0)}}
    readout = {"measured": [("CB", "auto", 66.0, 60.0, 6.0, 1.79, False), ("CB", "native", 59.0, 62.3, -3.3, 1.79, False),
                            ("RTE", "auto", 53.1, 52.7, 0.4, 0.36, True)]}
    claims = [(2, "c", "a", "main_full / smollm2_full (full data)", "r", "d", "within noise", []),
              (2, "c", "b", "main_full / smollm2_full (full data)", "r", "d", "not confirmed", []),
              (2, "c", DASH, "main, prompt_length at 10 tokens", "r", DASH, "not measured yet", []),
              (3, "c", "a", "prompt_length: residual at L", "r", "d", "confirmed", [])]
    assert _in_short(full, readout, claims) == (
        "On the full training sets, averaged over the tasks where every method has all its seeds: on a (2 tasks) "
        "training the head alone (head_only) is first with 61.5, residual 59.5, plain prompt tuning 57.0; on b "
        "(1 task) residual is first with 53.0, plain prompt tuning 50.0. The paper's headline gain, about +3 points over prompt tuning at 10 tokens (claim #2), is "
        "within noise on a; not confirmed on b on the full training sets. The residual prompt beats the head-only "
        "probe of its own readout by more than one example in 1 of 2 panels. Over the paper's claims (4 verdict "
        "rows): 1 confirmed, 1 within noise, 1 not confirmed, 1 not measured yet.")
    assert _in_short(None, None, []) == ""


def test_summary_verdicts_name_their_cells(tmp_path):
    from resprompt.experiments.report import build_report

    small, full = _summary_grids(tmp_path)
    rows = [ln.split("|") for ln in build_report(small).read_text().splitlines() if ln.startswith("| 2 |")]
    few, full_data = rows  # claim 2 on FewGLUE cells, then on the full-data grid's cells
    assert few[7].strip() == "8 cells: `main__task={CB,RTE}__method={none,residual}__seed={1,2}`"
    assert few[-2].strip() == "**confirmed**"
    # main_full: residual vs none on CB (residual read from its identical readout cells); WiC has 1 of its 2 seeds
    # (not measured yet: left out) and RTE no residual cell yet
    assert full_data[7].strip().startswith("4 cells: ") and "(1 panel(s))" in full_data[6]
    assert {"`readout__task=CB__method=residual__pooling=auto__seed={1,2}`",
            "`main_full__task=CB__method=none__seed={1,2}`"} == set(full_data[7].strip()[9:].split(", "))
    unmeasured = [ln for ln in build_report(small).read_text().splitlines() if ln.startswith("| 3 |")]
    assert unmeasured and unmeasured[0].split("|")[7].strip() == "—"
    # the full-data grid's own report: the readout table and its plain verdict, with the cells it rests on
    text = build_report(full).read_text()
    assert "| CB | auto | 61.5 ± 0.7 (2/2) | 66.5 ± 0.7 (2/2) | -5.0 | 2.00 | probe ahead by more than 1 ex. |" in text
    assert ("**No.** The residual prompt does not beat the probe of its own readout by more than one example's worth "
            "of points in any of the 2 measured panel(s)") in text
    assert "Rests on 8 cells: `readout__task=CB__method={head_only,residual}__pooling={auto,native}__seed={1,2}`." in text
    assert "## FewGLUE" not in text and "| readout | 8/8 | 0 | 0:08:00 |" in text
    assert "| main_full | 6/18 | 0 | 0:06:00 | CB 2/6, 0:02:00 (1.0 min); RTE 2/6, 0:02:00 (1.0 min); WiC 2/6, " \
           "0:02:00 (1.0 min) |" in text  # measured time per part


def test_readout_verdict_when_the_prompt_wins_and_compact_ids():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import _readout_verdict, compact_ids, readout_table

    cells, rows = [], {}
    for m, pooling, v in (("residual", "auto", 70.0), ("head_only", "auto", 60.0), ("residual", "native", 61.0),
                          ("head_only", "native", 60.0)):
        cid = f"readout__task=CB__method={m}__pooling={pooling}__seed=1"
        cells.append(NS(id=cid, settings={"task": "CB", "method": m, "pooling": pooling}))
        rows[cid] = NS(best=v, ex=2.0, source=cid)
    lines, info = readout_table(cells, rows)
    assert lines[2] == "| CB | auto | 70.0 (1/1) | 60.0 (1/1) | +10.0 | 2.00 | residual ahead by more than 1 ex. |"
    assert lines[3].endswith("| +1.0 | 2.00 | within 1 ex. |")
    verdict = _readout_verdict(info)
    assert verdict.startswith("**In 1 of 2 measured panel(s)** the residual prompt beats the probe")
    assert verdict.endswith("**In the other 1 it does not**: within one example on CB native.")
    assert _readout_verdict({"measured": [], "done": 0, "total": 4}) == "Not measured yet (0 of 4 cells finished)."
    # patterns name exactly the given cells
    ids = [f"e__task={t}__lr={lr}__seed={s}" for t in ("CB", "RTE") for lr in ("0.3", "0.01", "10") for s in (1, 2)]
    assert compact_ids(ids) == ["e__task={CB,RTE}__lr={0.01,0.3,10}__seed={1,2}"]
    part = compact_ids(ids[:-1] + ["other__x=1__seed=1"])  # RTE lr 10 seed 2 missing: no longer one product
    assert len(part) == 4 and part[-1] == "other__x=1__seed=1"  # CB whole; RTE lr 0.01, 0.3; RTE lr 10 seed 1

    def expand(pattern):
        exp, *parts = pattern.split("__")
        values = [[(k, x) for x in v.strip("{}").split(",")] for k, v in (p.split("=", 1) for p in parts)]
        return ["__".join([exp] + [f"{k}={x}" for k, x in combo]) for combo in itertools.product(*values)]

    named = [i for p in part for i in expand(p)]
    assert sorted(named) == sorted(ids[:-1] + ["other__x=1__seed=1"])  # exactly these cells, each once

def test_summary_block_replaces_the_readme_text_between_its_markers(tmp_path):
    from resprompt.experiments.report import README_END, README_START, build_report

    small, _ = _summary_grids(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n\n{README_START}\nold numbers 12.3\n{README_END}\n\n## Next\n")
    small.summary["readme"] = readme
    report = build_report(small).read_text()
    text = readme.read_text()
    assert text.startswith("# x\n\nintro\n\n" + README_START) and text.endswith(README_END + "\n\n## Next\n")
    assert "old numbers" not in text and "![score per task and method, full training sets](docs/img/summary_full.png)" in text
    found = [ln for ln in report.split("## What we found")[1].split("## Full SuperGLUE")[0].splitlines() if ln.startswith("- ")]
    assert len(found) == 4 and all(b in text.splitlines() for b in found)  # the report's own bullets
    lead = [ln for ln in report.splitlines() if ln.startswith("**In short.** ")]
    assert len(lead) == 1 and lead[0] in text.splitlines() and "verdict rows)" in lead[0]  # and its lead
    assert "[R.md](docs/R.md)" in text
    readme.write_text("no markers\n")
    build_report(small)
    assert readme.read_text() == "no markers\n"


def test_summary_without_reference_scores_and_bad_summary_key(tmp_path):
    from resprompt.experiments.report import build_report

    small, _ = _summary_grids(tmp_path)
    small.reference_scores = tmp_path / "missing.json"  # the FewGLUE table's (the full-data grid has its own)
    few = build_report(small).read_text().split("## FewGLUE")[1].split("## Claims")[0]
    assert "≤c (" not in few and "| | **best constant** | — | — |" in few
    with pytest.raises(ConfigError, match="summary: expected a mapping with 'full_data'"):
        bench.load_grid({"name": "g", "summary": {"plot": "x.png"}, "experiments": [{"name": "e"}]})



def test_not_run_lines_list_the_missing_cells_with_their_estimated_time():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import not_run_lines

    def cell(task, method, seed):
        return NS(id=f"e__task={task}__method={method}__seed={seed}", axes={"task": task, "method": method},
                  settings={"task": task, "method": method})

    cells = [cell(t, m, s) for t in ("CB", "RTE") for m in ("none", "head_only") for s in (1, 2)]
    rows = {cells[0].id: NS(rec={"cell_wall_s": 600.0}), cells[2].id: NS(rec={"cell_wall_s": 120.0}),
            cells[4].id: NS(rec={"cell_wall_s": 1800.0, "reused_from": None}),
            cells[5].id: NS(rec={"cell_wall_s": 0.0, "reused_from": "x"})}  # a copy: done, not timed
    lines = not_run_lines({"e": cells}, rows)
    # left: CB none 2 (600 s), CB head_only 2 (120 s), RTE head_only 1, 2 (only RTE none was timed: 1800 s each)
    assert lines[4] == ("- `e`: 4 cells, about 1.2 h at the measured time per cell of their part and method: "
                        "`e__task=CB__method={none,head_only}__seed=2`, `e__task=RTE__method=head_only__seed={1,2}`")
    assert not_run_lines({"e": cells}, {c.id: NS(rec={}) for c in cells}) == []
    twin = NS(id="f__task=CB__method=none__seed=1", axes={"task": "CB"}, settings={"method": "none"}, key="k")
    rows[cells[0].id].key, cells[0].key = "k", "k"  # f's cell has e's finished settings: copied, not trained
    assert not_run_lines({"f": [twin]}, rows) == []


def test_a_resumed_cell_counts_the_training_time_of_every_sitting():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import _parts, cell_seconds, not_run_lines

    # cut off at half its steps, resumed in the next sitting: this sitting's wall is half the training
    resumed = {"cell_wall_s": 438.0, "wall_time_s": 852.0, "resumed": True}
    assert cell_seconds(resumed) == 852.0
    assert cell_seconds({"cell_wall_s": 900.0, "wall_time_s": 850.0}) == 900.0  # loading counts too
    assert cell_seconds({"cell_wall_s": 0.0, "wall_time_s": 852.0, "reused_from": "x"}) == 0.0
    cells = [NS(id=f"e__task={t}__method=none__seed={s}", axes={"task": t}, settings={"method": "none"})
             for t in ("COPA", "CB") for s in (1, 2)]
    rows = {cells[0].id: NS(rec=resumed), cells[2].id: NS(rec={"cell_wall_s": 852.0})}
    assert _parts(cells, rows) == "COPA 1/2, 0:14:12 (14.2 min); CB 1/2, 0:14:12 (14.2 min)"
    assert "about 0.5 h" in not_run_lines({"e": cells}, rows)[4]  # 2 cells x 852 s


def test_a_cell_bench_copied_counts_as_read_from_its_twin():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import Row, _copied, score_table

    cells = [NS(id=f"main_full__task=CB__method=residual__seed={s}", experiment="main_full", seed=s, key=f"k{s}",
                axes={"task": "CB", "method": "residual"}, settings={"task": "CB", "method": "residual", "model": "m"})
             for s in (1, 2)]
    copy = dict(_fake(cells[0], 60.0), reused_from="readout__task=CB__method=residual__pooling=auto__seed=1")
    rows = {cells[0].id: Row(cells[0], copy), cells[1].id: Row(cells[1], _fake(cells[1], 62.0))}
    _, info = score_table(cells, rows, {})
    assert info["copied"] == 1  # bench wrote the copy under its own id: before, only records of another id counted
    assert _copied(info) == "1 of them read from `readout` cells with the same settings"


def test_claims_bullet_names_the_kind_of_every_row_of_a_claim_judged_twice():
    from resprompt.experiments.report import DASH, _found

    claims = [(2, "c", DASH, "main, prompt_length at 10 tokens: residual vs none", "r", DASH, "not measured yet", []),
              (2, "c", "minilm", "main_full / smollm2_full (full data)", "r", "d", "within noise", []),
              (2, "c", "minilm", "full_train (CB's full training set) at 10 tokens", "r", "d", "not confirmed", []),
              (3, "c", "minilm", "prompt_length: residual at L", "r", "d", "confirmed", [])]
    bullet = _found(None, "f", None, None, "s", claims)[0]
    # the measured full-data row is tagged even when it is the first row of its (claim, backbone); the older
    # CB-only full-data experiment says what sets it apart instead of its bare name
    assert bullet.endswith("1 confirmed (#3 minilm); 1 within noise (#2 minilm (full data)); "
                           "1 not confirmed (#2 minilm (CB full data, pooler readout)); "
                           "1 not measured yet (#2 (FewGLUE)).")


def test_readout_panel_whose_probe_is_at_the_constant_is_left_out_of_the_count():
    from types import SimpleNamespace as NS

    from resprompt.experiments.report import _readout_verdict, readout_table

    cells, rows = [], {}
    for task, m, v in (("CB", "residual", 70.0), ("CB", "head_only", 60.0), ("RTE", "residual", 54.0),
                       ("RTE", "head_only", 52.7)):
        cid = f"readout__task={task}__method={m}__pooling=auto__seed=1"
        cells.append(NS(id=cid, settings={"task": task, "method": m, "pooling": "auto"}))
        rows[cid] = NS(best=v, ex=0.5, source=cid, n=None)
    lines, info = readout_table(cells, rows, {"RTE": (52.7, 277), "CB": (36.1, 56)})
    assert lines[3] == ("| RTE | auto | 54.0 (1/1) | 52.7 ≤c (1/1) | +1.3 | 0.50 | residual ahead by more than 1 ex. "
                        "(probe ≤c: uninformative) |")
    verdict = _readout_verdict(info)
    assert verdict.startswith("**In 1 of 1 measured panel(s) where the probe beats the best constant** the residual")
    assert verdict.endswith("Left out of the count: RTE auto, where the probe is at or below the best constant (the "
                            "frozen features give a linear head nothing there, so the panel cannot show what the "
                            "readout is worth).")


def test_a_cell_whose_settings_changed_runs_again(tiny_model_dirs, data_root, tmp_path, capsys):
    """Before: a cell counted as finished if its file existed: after an edited default the old result stayed,
    and --dry-run said done."""
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    exp = [{"name": "main", "axes": {"method": ["none"]}}]
    assert bench.run_grid(_grid(tmp_path, tiny_model_dirs["bert"], data, exp, max_steps=2)) == 0
    changed = _grid(tmp_path, tiny_model_dirs["bert"], data, exp, max_steps=3)
    capsys.readouterr()
    assert bench.run_grid(changed, dry_run=True) == 0 and "stale   main__method=none__seed=1" in capsys.readouterr().out
    assert bench.run_grid(changed) == 0
    rec = json.loads((tmp_path / "res" / "cells" / "main__method=none__seed=1.json").read_text())
    assert rec["results"]["steps"] == 3


def test_an_interrupted_cell_whose_settings_changed_starts_afresh(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Before: it resumed the old checkpoint, which the trainer refused: the cell failed on every rerun."""
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    exp = [{"name": "main", "axes": {"method": ["residual"]}}]

    def kill(step):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        bench.run_grid(_grid(tmp_path, tiny_model_dirs["bert"], data, exp, max_steps=4, eval_every=2))
    monkeypatch.setattr(trainer_mod, "_after_step", lambda step: None)
    assert bench.run_grid(_grid(tmp_path, tiny_model_dirs["bert"], data, exp, max_steps=4, eval_every=2,
                                lr=0.1)) == 0
    rec = json.loads((tmp_path / "res" / "cells" / "main__method=residual__seed=1.json").read_text())
    assert rec["resumed"] is False and rec["results"]["steps"] == 4


def test_the_result_is_written_before_the_run_folder_is_removed(tiny_model_dirs, data_root, tmp_path, monkeypatch):
    """Before: the run folder went first: a failed result write (disk full) lost the whole trained cell."""
    data = {"data_dir": str(data_root / "superglue"), "fewglue_dir": str(data_root / "fewglue")}
    real = bench.write_json

    def full(path, obj):
        if "cells" in str(path):
            raise OSError(28, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(bench, "write_json", full)
    grid = _grid(tmp_path, tiny_model_dirs["bert"], data, [{"name": "main", "axes": {"method": ["none"]}}])
    assert bench.run_grid(grid) == 1
    assert (tmp_path / "res" / "runs" / "main__method=none__seed=1" / "best").is_dir()


@pytest.mark.parametrize("change, message", [
    ({"defaults": ["lr", 0.1]}, r"grid: defaults: expected a mapping of settings"),
    ({"report": 5}, r"report: expected a path, got 5"),
    ({"experiments": [{"name": "e", "defaults": "lr"}]}, r"grid experiment 'e': defaults: expected a mapping"),
    ({"defaults": {"seed": 7}}, r"grid: defaults: give seeds with 'seeds:', not as a default"),
    ({"experiments": [{"name": "e", "defaults": {"seed": 7}}]}, r"'e': give seeds with 'seeds:', not as a default"),
    ({"experiments": [{"name": "e", "axes": {"prompt_length": [5, 20], "num_tokens": [10]}}]},
     r"'e': axes: 'prompt_length' and 'num_tokens' are one setting \(num_tokens\); keep one"),
])
def test_grid_mistakes_get_one_message(change, message):
    """Before: tracebacks (a list of defaults, a number as a path), a seed default silently replaced by the
    seeds, and two spellings of one axis giving cells named for values they did not train."""
    data = {"name": "g", "defaults": {"model": "m"}, "experiments": [{"name": "e"}], **change}
    with pytest.raises(ConfigError, match=message):
        bench.load_grid(data)


def test_only_that_selects_nothing_is_an_error(tmp_path):
    """Before: a typo in --only trained nothing, rewrote the report and exited 0."""
    grid = {"name": "g", "results_dir": str(tmp_path / "r"), "report": str(tmp_path / "R.md"),
            "defaults": {"model": "m"}, "experiments": [{"name": "main"}]}
    with pytest.raises(ConfigError, match=r"--only 'mian': no cell id of grid g contains it"):
        bench.run_grid(grid, only="mian")
