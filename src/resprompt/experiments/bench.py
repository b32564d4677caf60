"""Benchmark grids: declared experiments, one result file per cell, resumable, then a report.

Grid file (YAML)::

    name: small                      # required; used in paths and the report
    results_dir: benchmarks/results/small   # default benchmarks/results/<name>
    report: docs/RESULTS.md          # default docs/RESULTS.md
    plots_dir: docs/img              # default docs/img
    latency: benchmarks/results/inference_latency.json   # optional: benchmarks/inference_latency.py's
                                     # output, shown in the report's cost section
    reference_scores: benchmarks/results/reference_scores.json   # optional: benchmarks/reference_scores.py's
                                     # output, the best constant answer per task (the summary's constant row)
    summary:                         # optional: the report opens with "What we found", a plot and the
      full_data: benchmarks/grids/full.yaml   # full-data table of this grid (its main_full / smollm2_full
      plot: docs/img/summary_full.png         # cells), this grid's FewGLUE table (its main cells), the claims
      readme: README.md              # optional: "What we found" and the plot also replace the README's text
                                     # between <!-- resprompt report: start --> and <!-- ...: end --> (if any)
      note: "..."                    # optional: printed under the full-data table (what it leaves out, and why)
    notes: ["..."]                   # optional: facts about the data or protocol, printed in the report
    seeds: [1, 2, 3]                 # default seeds of every experiment (default [1])
    defaults:                        # flat settings as ``runconfig.split_settings`` takes them
      model: minilm
      epochs: 20
    experiments:
      - name: main                   # main, prompt_length, lr_robustness, few_shot, init, ...
        defaults: {max_length: 256}  # optional, on top of the grid's defaults
        axes:                        # setting -> values; the cartesian product gives the cells
          task: [CB, RTE]
          method: [none, residual]
        seeds: [1, 2, 3]

Several entries may share a name: their cells form one experiment (that is how one task gets
its own settings). ``prompt_length`` is the same setting as ``num_tokens``. ``method`` takes
``residual``, ``none``, ``mlp``, ``lstm`` (resprompt), ``head_only`` (no prompt: the frozen
backbone trains its classification head only; encoders), ``peft_prompt_tuning`` and
``peft_p_tuning`` (``peft.get_peft_model`` with PEFT's PromptTuningConfig / PromptEncoderConfig,
``num_virtual_tokens`` = prompt length, P-tuning's ``encoder_hidden_size`` = ``bottleneck``;
task type SEQ_CLS for encoders, CAUSAL_LM for decoders, SEQ_2_SEQ_LM for seq2seq). Baselines
run through the same trainer (``trainer.train``), so data, batches, budget, optimizer groups
(prompt lr, network lr, head lr), evaluation and best-on-validation selection are identical.
String values may use ``${VAR}`` or ``${VAR:-default}`` (environment variables).

A cell id is ``<experiment>__<axis>=<value>__...__seed=<seed>`` (axes in file order; a path
value is shortened to its last component; characters outside ``A-Za-z0-9._+-`` become ``-``).

Results: ``<results_dir>/cells/<cell id>.json`` (atomic; a cell with this file is finished and
skipped) holds the trainer's results.json, its metrics.jsonl records (train lines thinned to 500),
the eval curve, settings, versions, hardware, sha256 of the data files, wall time, s/step and peak
memory (CPU: ``ru_maxrss`` after resetting the high-water mark via ``/proc/self/clear_refs``, i.e.
per cell where the kernel allows it; GPU: ``torch.cuda.max_memory_allocated``). A running cell
trains in ``<results_dir>/runs/<cell id>``, removed after success, resumed (trainer ``resume``)
when it holds a checkpoint. A cell whose resolved settings equal a finished cell's copies its
result (``reused_from``). A failing cell goes to ``<results_dir>/failed/<cell id>.json``, the grid
goes on and the exit code is 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import resource
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import write_json
from ..training import trainer as trainer_mod
from ..training.runconfig import ConfigError, load_yaml
from .baselines import model_builder
from .cells import METHODS, Cell, canonical, configs  # noqa: F401 (re-exported for the grid's users)

log = logging.getLogger(__name__)

GRID_KEYS = {"name", "results_dir", "report", "plots_dir", "latency", "reference_scores", "summary", "notes", "defaults",
             "experiments", "seeds"}
SUMMARY_KEYS = {"full_data", "plot", "readme", "note"}
EXPERIMENT_KEYS = {"name", "defaults", "axes", "seeds"}
MAX_TRAIN_RECORDS = 500


@dataclass
class Grid:
    name: str
    source: str
    results_dir: Path
    report: Path
    plots_dir: Path
    experiments: list[str]
    cells: list[Cell]
    latency: Path | None = None
    notes: tuple[str, ...] = ()
    reference_scores: Path | None = None
    summary: dict | None = None  # {"full_data": grid path or parsed grid, "plot": Path, "readme": Path | None}

    def summary_grid(self) -> Grid:
        """The grid whose cells fill the summary's full-data table: this grid when it names itself."""
        src = self.summary["full_data"]
        if not isinstance(src, dict) and Path(src).resolve() == Path(self.source).resolve():
            return self
        other = load_grid(src)
        return self if (other.name, other.results_dir) == (self.name, self.results_dir) else other


# ----------------------------------------------------------------------------- grid files
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(obj):
    if isinstance(obj, dict):
        return {k: _expand_env(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(v) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m):
        if m.group(1) in os.environ:
            return os.environ[m.group(1)]
        if m.group(2) is None:
            raise ConfigError(f"grid: environment variable {m.group(1)} is not set (write ${{{m.group(1)}:-default}})")
        return m.group(2)

    return _VAR.sub(sub, obj)


def _fmt(value) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
        if "/" in text or os.sep in text:
            text = Path(text.rstrip("/" + os.sep)).name or text
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def expand(data: dict, overrides: dict | None = None) -> tuple[list[str], list[Cell]]:
    """Experiment names (in file order) and the cells of a parsed grid; every cell is validated."""
    bad = sorted(set(data) - GRID_KEYS)
    if bad:
        raise ConfigError(f"grid: unknown key(s) {', '.join(bad)}; expected {', '.join(sorted(GRID_KEYS))}")
    exps = data.get("experiments")
    if not isinstance(exps, list) or not exps:
        raise ConfigError("grid: 'experiments' must be a non-empty list")
    base = {"progress": False, **canonical(data.get("defaults"), "grid: defaults")}
    if "seed" in base:
        raise ConfigError("grid: defaults: give seeds with 'seeds:', not as a default")
    names: list[str] = []
    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for i, exp in enumerate(exps):
        where = f"grid experiment #{i + 1}"
        if not isinstance(exp, dict) or not exp.get("name"):
            raise ConfigError(f"{where}: expected a mapping with a 'name'")
        name = str(exp["name"])
        where = f"grid experiment {name!r}"
        bad = sorted(set(exp) - EXPERIMENT_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}")
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise ConfigError(f"{where}: the name may use letters, digits and . _ + - only")
        axes = exp.get("axes") or {}
        if not isinstance(axes, dict):
            raise ConfigError(f"{where}: 'axes' must map settings to lists of values")
        if "seed" in canonical(axes, f"{where}: axes"):
            raise ConfigError(f"{where}: give seeds with 'seeds:', not as an axis")
        if "seed" in canonical(exp.get("defaults"), f"{where}: defaults"):
            raise ConfigError(f"{where}: give seeds with 'seeds:', not as a default")
        values = [v if isinstance(v, list) else [v] for v in axes.values()]
        if any(not v for v in values):
            raise ConfigError(f"{where}: an axis has no values")
        seeds = exp.get("seeds", data.get("seeds", [1]))
        seeds = seeds if isinstance(seeds, list) else [seeds]
        if not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds):
            raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
        names += [name] if name not in names else []
        for combo in itertools.product(*values):
            point = dict(zip(axes, combo))
            for seed in seeds:
                settings = {**base, **canonical(exp.get("defaults"), f"{where}: defaults"),
                            **canonical(point, f"{where}: axes"), "seed": seed,
                            **canonical(overrides, "overrides")}
                settings.setdefault("method", "residual")
                cid = "__".join([name] + [f"{a}={_fmt(v)}" for a, v in point.items()] + [f"seed={seed}"])
                if cid in seen:
                    raise ConfigError(f"{where}: cell id {cid} is not unique (see {seen[cid]})")
                seen[cid] = where
                try:
                    configs(settings)
                except ValueError as e:
                    raise ConfigError(f"{where}, cell {cid}: {e}") from None
                cells.append(Cell(cid, name, point, seed, settings))
    return names, cells


def load_grid(grid, results_dir=None, overrides: dict | None = None, report=None, plots_dir=None) -> Grid:
    """A grid from a YAML path or an already parsed dict; ``results_dir`` etc. override the file."""
    if isinstance(grid, dict):
        data, source = grid, f"<{grid.get('name', 'grid')}>"
    else:
        data, source = load_yaml(grid, what="grid"), str(grid)
    if not isinstance(data, dict) or not data.get("name"):
        raise ConfigError(f"grid {source}: expected a mapping with a 'name'")
    data = _expand_env(data)
    name = str(data["name"])
    for key in ("results_dir", "report", "plots_dir", "latency", "reference_scores"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"grid {source}: {key}: expected a path, got {data[key]!r:.80}")
    names, cells = expand(data, overrides)
    notes = data.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"grid {source}: notes: expected a list of strings, got {notes!r:.80}")
    summary = data.get("summary")
    if summary is not None:
        if not isinstance(summary, dict) or set(summary) - SUMMARY_KEYS or "full_data" not in summary:
            raise ConfigError(f"grid {source}: summary: expected a mapping with 'full_data' (a grid file) and "
                              f"optionally 'plot', 'readme' and 'note', got {summary!r:.80}")
        plot = Path(summary.get("plot") or "summary_full.png")
        if plots_dir or not summary.get("plot"):  # an overridden plots folder takes the summary plot too
            plot = Path(plots_dir or data.get("plots_dir") or "docs/img") / plot.name
        full = summary["full_data"]
        if not isinstance(full, (str, dict)) or any(
                summary.get(k) is not None and not isinstance(summary[k], str) for k in ("plot", "readme")):
            raise ConfigError(f"grid {source}: summary: full_data, plot and readme are paths, got {summary!r:.80}")
        note = summary.get("note")
        if note is not None and not isinstance(note, str):
            raise ConfigError(f"grid {source}: summary: note: expected a string, got {note!r:.80}")
        summary = {"full_data": full if isinstance(full, dict) else Path(full), "plot": plot,
                   "readme": Path(summary["readme"]) if summary.get("readme") else None, "note": note}
    return Grid(name, source,
                Path(results_dir or data.get("results_dir") or f"benchmarks/results/{name}"),
                Path(report or data.get("report") or "docs/RESULTS.md"),
                Path(plots_dir or data.get("plots_dir") or "docs/img"), names, cells,
                Path(data["latency"]) if data.get("latency") else None, tuple(notes),
                Path(data["reference_scores"]) if data.get("reference_scores") else None, summary)


# ----------------------------------------------------------------------------- one cell
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def get(pkg):
        with contextlib.suppress(PackageNotFoundError):
            return version(pkg)

    return {"python": platform.python_version(),
            **{p: get(p) for p in ("torch", "transformers", "peft", "accelerate", "resprompt")}}


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "platform": platform.platform()}


_HASHES: dict[str, str] = {}


def sha256(path: str) -> str | None:
    p = Path(path)
    key = f"{p.resolve()}:{p.stat().st_mtime_ns}" if p.is_file() else None
    if key and key not in _HASHES:
        _HASHES[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _HASHES.get(key)


def _reset_peak() -> str:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return "cell (torch.cuda.max_memory_allocated)"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "cell (ru_maxrss after clear_refs)"
    except OSError:
        return "process (ru_maxrss)"


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    train = [x for x in lines if x.get("type") == "train"]
    keep = set(range(0, len(train), max(1, -(-len(train) // MAX_TRAIN_RECORDS)))) | {len(train) - 1}
    kept = [x for i, x in enumerate(train) if i in keep]
    return sorted(kept + [x for x in lines if x.get("type") != "train"], key=lambda x: (x.get("step", 0),
                                                                                       x.get("type") != "train"))


def _same_run(run_dir: Path, cfg, prompt_cfg) -> bool:
    """Whether the interrupted run in ``run_dir`` trains these settings (else it starts afresh)."""
    from ..training import runfolder

    cfg = dataclasses.replace(cfg, output_dir=str(run_dir), resume=True)
    try:
        runfolder.check_resume_settings(run_dir, runfolder.run_settings(cfg, prompt_cfg),
                                        runfolder.setting_defaults(cfg, prompt_cfg))
    except ConfigError as e:
        log.warning("%s: not resumed, started afresh: %s", run_dir.name, e)
        return False
    return True


def run_cell(cell: Cell, results_dir: Path) -> dict:
    """Trains one cell through the trainer; returns the record written to ``cells/<id>.json``."""
    run_dir = results_dir / "runs" / cell.id
    cfg, prompt_cfg, method = configs(cell.settings)
    resume = (run_dir / "checkpoint").is_dir() and _same_run(run_dir, cfg, prompt_cfg)
    cfg = dataclasses.replace(cfg, output_dir=str(run_dir), resume=resume,
                              overwrite=not resume and run_dir.exists())
    scope = _reset_peak()
    start = time.perf_counter()
    results = trainer_mod.train(cfg, prompt_cfg, build_model=model_builder(method, prompt_cfg))
    wall = time.perf_counter() - start
    run_cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    data = {p: sha256(p) for p in {run_cfg.get("train_data"), run_cfg.get("eval_data")} if p}
    metrics = _metrics(run_dir)
    results = {**results, "method": method, "num_tokens": 0 if method == "head_only" else results["num_tokens"]}
    return {
        "cell_id": cell.id, "experiment": cell.experiment, "axes": cell.axes, "seed": cell.seed,
        "method": method, "settings": cell.settings, "settings_key": cell.key, "results": results,
        "eval_curve": [[x["step"], x.get("score")] for x in metrics if x.get("type") == "eval"],
        "metrics": metrics, "versions": versions(), "hardware": hardware(), "data_files": data,
        "wall_time_s": results.get("wall_time_s"), "cell_wall_s": round(wall, 3),
        "s_per_step": results.get("s_per_step"), "peak_memory_mb": _peak_mb(), "peak_memory_scope": scope,
        "resumed": resume, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- the grid
def finished(cells_dir: Path, cell: Cell) -> bool:
    """Whether ``cells/<id>.json`` holds this cell's result: written for its current settings (a grid edited
    since, a changed default say, makes the cell stale: it runs again)."""
    path = cells_dir / f"{cell.id}.json"
    try:
        return path.is_file() and json.loads(path.read_text()).get("settings_key") == cell.key
    except (OSError, ValueError):
        return False


def _status(grid: Grid, cell: Cell) -> str:
    d = grid.results_dir
    if (d / "cells" / f"{cell.id}.json").is_file():
        return "done" if finished(d / "cells", cell) else "stale"
    if (d / "runs" / cell.id / "checkpoint").is_dir():
        return "resume"
    return "failed" if (d / "failed" / f"{cell.id}.json").is_file() else "todo"


def _finished_index(cells_dir: Path) -> dict[str, Path]:
    index = {}
    for p in sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []:
        with contextlib.suppress(ValueError, OSError, KeyError):
            index.setdefault(json.loads(p.read_text())["settings_key"], p)
    return index


def run_grid(grid_path, results_dir=None, only=None, report_only=False, dry_run=False, *,
             overrides: dict | None = None, report=None, plots_dir=None) -> int:
    """Runs the grid's unfinished cells (or lists them), then writes the report; returns an exit code."""
    grid = load_grid(grid_path, results_dir, overrides, report, plots_dir)
    cells = [c for c in grid.cells if not only or only in c.id]
    if only and not cells:
        raise ConfigError(f"--only {only!r}: no cell id of grid {grid.name} contains it (see --dry-run)")
    if dry_run:
        status, first = {c.id: _status(grid, c) for c in cells}, {}
        for c in cells:
            first.setdefault(c.key, c.id)
            print(f"{status[c.id]:7s} {c.id}" + (f"  (same as {first[c.key]})" if first[c.key] != c.id else ""))
        for exp in grid.experiments:
            mine = [c for c in cells if c.experiment == exp]
            done = sum(status[c.id] == "done" for c in mine)
            same = sum(first[c.key] != c.id for c in mine)
            if mine:
                print(f"{exp}: {len(mine)} cells ({done} done, {len(mine) - done} to run"
                      + (f", {same} of them copies of identical cells" if same else "") + ")")
        print(f"total: {len(cells)} cells ({list(status.values()).count('done')} done) in {grid.results_dir}")
        return 0
    failed = 0
    if not report_only:
        cells_dir, failed_dir = grid.results_dir / "cells", grid.results_dir / "failed"
        cells_dir.mkdir(parents=True, exist_ok=True)
        index = _finished_index(cells_dir)
        todo = [c for c in cells if not finished(cells_dir, c)]
        for c in todo:
            if (cells_dir / f"{c.id}.json").is_file():
                log.warning("%s: its settings changed since it ran: running it again", c.id)
        log.info("grid %s: %d cells selected, %d to run", grid.name, len(cells), len(todo))
        for i, cell in enumerate(todo, 1):
            out = cells_dir / f"{cell.id}.json"
            try:
                if cell.key in index and index[cell.key].is_file():
                    record = json.loads(index[cell.key].read_text())
                    record.update(cell_id=cell.id, experiment=cell.experiment, axes=cell.axes,
                                  reused_from=record.get("reused_from") or index[cell.key].stem, cell_wall_s=0.0)
                else:
                    log.info("[%d/%d] %s", i, len(todo), cell.id)
                    record = run_cell(cell, grid.results_dir)
                    gc.collect()
                write_json(out, record)  # the result first: a failed write keeps the trained run folder
                shutil.rmtree(grid.results_dir / "runs" / cell.id, ignore_errors=True)
                index.setdefault(cell.key, out)
                (failed_dir / f"{cell.id}.json").unlink(missing_ok=True)
                best = (record["results"].get("best") or {}).get("score")
                log.info("[%d/%d] %s done (best %s, %.1f s)", i, len(todo), cell.id,
                         "—" if best is None else f"{100 * best:.1f}", record["cell_wall_s"])
            except Exception as e:  # one broken cell must not stop the grid
                failed += 1
                log.error("[%d/%d] %s failed: %s: %s", i, len(todo), cell.id, type(e).__name__, e)
                failed_dir.mkdir(parents=True, exist_ok=True)
                write_json(failed_dir / f"{cell.id}.json", {
                    "cell_id": cell.id, "experiment": cell.experiment, "settings": cell.settings,
                    "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                    "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    from .report import build_report

    path = build_report(grid)
    print(f"report: {path}" + (f" ({failed} cell(s) failed)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
