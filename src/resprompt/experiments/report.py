"""The results report of a benchmark grid: Markdown tables, PNG plots and verdicts on the paper's claims.

Everything is read from the cell files ``<results_dir>/cells/<cell id>.json`` that ``bench`` writes;
cells not finished yet show as "—", so a partial grid renders. Scores are in points (0-100):
"best" is the best validation score over the run (the selected prompt), "last" the score after
the last step. "1 ex." is the weight of one validation example, 100 / n (n = records, questions
for MultiRC), the smallest difference that can be measured on that split.

Verdict rules (copied into the report). For two methods A and B compared
on the same panels (a panel = every setting equal except the compared one and the seed):
d = mean over panels of (mean_A - mean_B) over seeds; tau = mean over panels of
max(pooled std, one-example size), pooled std = sqrt((s_A^2 + s_B^2) / 2), s = sample std over
seeds (0 with one seed).

- gain (A better than B, optionally "by X points"): confirmed if d >= tau (and d >= X / 2 when the
  claim names X); not confirmed if d <= -tau, or if d >= tau but d < X / 2; within noise otherwise.
- no loss (A as good as B): confirmed if d >= -tau, else not confirmed.
- range (variation under L points): R = mean over panels of (max - min) of the seed means;
  confirmed if R <= L; within noise if R <= L + tau; not confirmed otherwise.
- spread (robust to a setting): S = the range R of residual; confirmed if S <= tau and S <= the
  range of prompt tuning (when measured); not confirmed if S > tau and S >= that range (when
  measured); within noise otherwise. Saturation: confirmed if R <= tau, else not confirmed.
- not measured yet: the cells the rule needs are not finished.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from .cells import canonical, configs

DASH = "—"
X_AXES = ("lr", "num_tokens", "bottleneck", "few_shot", "max_train_examples")


class Row:
    """One finished cell, as the report uses it."""

    def __init__(self, cell, rec: dict):
        self.cell, self.rec, res = cell, rec, rec.get("results", {})
        self.exp, self.s = cell.experiment, cell.settings
        self.best = _pts(res.get("best"))
        self.last = _pts(res.get("final"))
        n = (res.get("final") or res.get("best") or {}).get("n") or res.get("eval_examples")
        self.ex = 100.0 / n if n else None
        self.initial = _pts(res.get("initial"))
        # step 0 (the untrained prompt, --eval-at-start) is drawn but not averaged: the area stays
        # comparable between cells run with and without it
        curve = [v for step, v in rec.get("eval_curve", []) if v is not None and step > 0]
        self.auc = 100 * statistics.fmean(curve) if curve else None
        # mean L2 norm of the prompt vectors the backbone sees, at the first and the last evaluation
        # (logged since 2026-11-30; None for older cells and for the PEFT / head-only baselines)
        norms = [x["prompt_norm"] for x in rec.get("metrics", []) if x.get("type") == "eval" and "prompt_norm" in x]
        self.norm_first, self.norm_last = (norms[0], norms[-1]) if norms else (None, None)

    def get(self, key):
        if key in self.s:
            return self.s[key]
        if not hasattr(self, "_cfgs"):
            self._cfgs = configs(self.s)[:2]
        return getattr(self._cfgs[0], key, getattr(self._cfgs[1], key, None))


def _pts(m):
    return None if not m or m.get("score") is None else 100.0 * m["score"]


def _ms(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def _fmt(values) -> str:
    m, s, k = _ms(values)
    return DASH if m is None else f"{m:.1f}" if k == 1 else f"{m:.1f} ± {s:.1f}"


def _v(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def load(grid) -> tuple[dict, dict]:
    """(cell id -> finished record, cell id -> failure record) for the grid's cells."""
    done, failed = {}, {}
    for cell in grid.cells:
        for folder, into in (("cells", done), ("failed", failed)):
            p = grid.results_dir / folder / f"{cell.id}.json"
            if p.is_file() and cell.id not in done:
                try:
                    into[cell.id] = json.loads(p.read_text())
                except (ValueError, OSError):
                    continue
    return done, failed


# ----------------------------------------------------------------------------- tables
def _points(cells):
    """Cells grouped by their axis values (seed excluded), in grid order."""
    groups = defaultdict(list)
    for c in cells:
        groups[tuple(c.axes.items())].append(c)
    return groups


def _experiment_table(cells, rows) -> list[str]:
    """One line per point (seeds pooled): best, last and, for cells run with --eval-at-start, the
    untrained prompt's score (step 0)."""
    axes = list(cells[0].axes)
    step0 = any(rows[c.id].initial is not None for c in cells if c.id in rows)
    norm = any(rows[c.id].norm_first is not None for c in cells if c.id in rows)
    cols = ["best", "last"] + (["step 0"] if step0 else []) + (["‖P'‖ first → last eval"] if norm else []) \
        + ["seeds", "1 ex."]
    out = ["| " + " | ".join(axes + cols) + " |", "|" + "---|" * (len(axes) + len(cols))]
    for point, group in _points(cells).items():
        got = [rows[c.id] for c in group if c.id in rows]
        ex = _ms([r.ex for r in got])[0]
        out.append("| " + " | ".join([_v(v) for _, v in point] + [
            _fmt([r.best for r in got]), _fmt([r.last for r in got])]
            + ([_fmt([r.initial for r in got])] if step0 else [])
            + ([_norms(got)] if norm else [])
            + [f"{len(got)}/{len(group)}", DASH if ex is None else f"{ex:.2f}"]) + " |")
    return out


def _norms(rows) -> str:
    """Mean over seeds of the prompt norm at the first and the last evaluation: "6.9 → 12.3", with
    "(2 of 3)" when some seeds ran before the norm was logged."""
    first, last, k = _ms([r.norm_first for r in rows])[0], _ms([r.norm_last for r in rows])[0], \
        sum(r.norm_first is not None for r in rows)
    return DASH if first is None else f"{first:.1f} → {last:.1f}" + (f" ({k} of {len(rows)})" if k < len(rows) else "")


def _pivot(cells, rows) -> list[str]:
    """Methods x tasks (best, mean ± std) with the average over tasks, like the paper's Table 1.

    A row that ran fewer tasks than the table has columns averages its own tasks and says how many
    ("53.6 (2 of 3)"): such an average is not comparable with a full row's. A row with a task not
    finished yet has no average.
    """
    axes = list(cells[0].axes)
    if "task" not in axes or "method" not in axes:
        return []
    tasks = list(dict.fromkeys(c.axes["task"] for c in cells))
    keys = [a for a in axes if a != "task"]
    table = defaultdict(lambda: defaultdict(list))
    for c in cells:
        table[tuple(c.axes[a] for a in keys)][c.axes["task"]].append(rows[c.id].best if c.id in rows else None)
    out = ["| " + " | ".join(keys + tasks + ["avg"]) + " |", "|" + "---|" * (len(keys) + len(tasks) + 1)]
    for key, per_task in table.items():
        means = [_ms(per_task[t])[0] for t in tasks if t in per_task]  # over the tasks this row has
        avg = DASH if None in means else f"{statistics.fmean(means):.1f}"
        if avg != DASH and len(means) < len(tasks):
            avg += f" ({len(means)} of {len(tasks)})"
        out.append("| " + " | ".join([_v(k) for k in key] + [_fmt(per_task.get(t, [])) for t in tasks] + [avg]) + " |")
    return out


MIN_TIMED_STEPS = 5  # a cell of fewer steps (the `untrained` cells: one) times its evaluations, not training


def _cost_table(rows) -> list[str]:
    """One row per (model, method, prompt length). Stored after folding = the prompt's n x d vectors
    plus the trained head, i.e. the trainable count of the plain-prompt (``none``) cell of the same
    model, task and length; for ``head_only`` the head alone."""
    plain = {(str(r.get("model")), r.get("task"), r.rec["results"].get("num_tokens")):
             r.rec["results"].get("trainable_parameters") for r in rows.values() if r.get("method") == "none"}
    groups = defaultdict(list)
    for r in rows.values():
        groups[(str(r.get("model")), r.get("method"), r.rec["results"].get("num_tokens"))].append(r)
    out = ["| model | method | prompt length | trainable params (training) | stored after folding | s/step | "
           "peak memory (MB) | cells |", "|---|---|---|---|---|---|---|---|"]

    def span(values):
        v = sorted(x for x in values if x)
        return DASH if not v else f"{v[0]:,}" + (f"–{v[-1]:,}" if v[-1] != v[0] else "")

    for (model, method, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2] or 0)):
        params = [r.rec["results"].get("trainable_parameters") for r in rs]
        stored = params if method == "head_only" else [plain.get((model, r.get("task"), n)) for r in rs]
        sps = [r.rec.get("s_per_step") for r in rs if r.rec.get("s_per_step") and not r.rec.get("reused_from")
               and (r.rec["results"].get("steps") or 0) >= MIN_TIMED_STEPS]
        peak = [r.rec.get("peak_memory_mb") or 0 for r in rs]
        out.append(f"| {Path(model).name} | {method} | {n} | {span(params)} | {span(stored)} | "
                   f"{_fmt(sps) if sps else DASH} | {max(peak):.0f} | {len(rs)} |")
    return out


def _latency_section(grid) -> list[str]:
    """The inference-latency benchmark's JSON (``grid.latency``), when the grid names one that exists."""
    path = getattr(grid, "latency", None)
    if path is None or not Path(path).is_file():
        return []
    try:
        d = json.loads(Path(path).read_text())
        med = d["median_s"]
        b, t = d["batch"]
        rows = [f"| {k} | {1000 * med[k]:.1f} |" for k in ("bare", "folded", "peft", "bare_plus10") if k in med]
    except (ValueError, KeyError, TypeError) as e:
        return [f"(inference latency: {path} is not the benchmark's JSON: {e})", ""]
    return ["### Inference latency", "",
            f"`python benchmarks/inference_latency.py --json {Path(path).as_posix()}`: one batch of {b} x {t} "
            f"tokens, eval mode, no grad, median of {d.get('rounds')} interleaved rounds, "
            f"{d.get('threads')} threads, torch {d.get('torch')}. bare = the backbone alone; folded = our "
            "trained residual prompt after folding (10 vectors, the MLP gone); peft = PEFT's PromptTuning "
            "with 10 virtual tokens; bare_plus10 = the backbone alone on 10 more real tokens, the length the "
            "prompted models run at.", "",
            "| MiniLM-L6 | median ms / batch |", "|---|---|", *rows, "",
            f"folded / PEFT = {d['folded/peft']:.3f}; folded / bare = {d['folded/bare']:.3f} (the prompt adds "
            f"10 positions to each {t}-token row)"
            + (f"; folded / bare_plus10 = {d['folded/bare_plus10']:.3f}" if "folded/bare_plus10" in d else "")
            + f". Parameters: {d['trainable_params_during_training']:,} "
            f"trainable during training, {d['stored_params_after_folding']:,} stored after folding.", ""]


# ----------------------------------------------------------------------------- claims
def _panels(rows, exps, vary, keep=lambda r: True):
    """exp/panel -> {value(s) of ``vary``: [rows]}; a panel fixes every other setting but the seed."""
    out = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.exp in exps and r.best is not None and keep(r):
            rest = tuple(sorted((k, json.dumps(v, default=str)) for k, v in r.s.items() if k not in vary + ("seed",)))
            out[(r.exp, rest)][tuple(r.get(k) for k in vary)].append(r)
    return out


def _diff(pairs, attr="best"):
    """(d, tau, number of panels) for a list of (rows A, rows B)."""
    ds, taus = [], []
    for a, b in pairs:
        (ma, sa, _), (mb, sb, _) = _ms([getattr(r, attr) for r in a]), _ms([getattr(r, attr) for r in b])
        if ma is None or mb is None:
            continue
        ex = _ms([r.ex for r in a + b])[0] or 0.0
        ds.append(ma - mb)
        taus.append(max(math.sqrt((sa ** 2 + sb ** 2) / 2), ex))
    return (statistics.fmean(ds), statistics.fmean(taus), len(ds)) if ds else None  # d, tau, panels


def _gain(res, magnitude=None):
    if res is None:
        return None
    d, tau, k = res
    if d >= tau:
        verdict = "confirmed" if magnitude is None or d >= magnitude / 2 else "not confirmed"
    else:
        verdict = "not confirmed" if d <= -tau else "within noise"
    return f"d = {d:+.1f}, tau = {tau:.1f} ({k} panel(s))", verdict


def _compare(rows, exps, key, a, b, magnitude=None, keep=lambda r: True, attr="best"):
    pairs = [(g[(a,)], g[(b,)]) for g in _panels(rows, exps, (key,), keep).values() if (a,) in g and (b,) in g]
    return _gain(_diff(pairs, attr), magnitude)


def _range(groups):
    """Mean over panels of (max - min) of seed means, and mean tau = max(std, 1 ex.)."""
    rs, taus = [], []
    for g in groups:
        stats = [(_ms([r.best for r in rs_])[:2], _ms([r.ex for r in rs_])[0] or 0) for rs_ in g.values()]
        if len(stats) >= 2:
            means = [m for (m, _), _ in stats]
            rs.append(max(means) - min(means))
            taus.append(statistics.fmean(max(s, e) for (_, s), e in stats))
    return (statistics.fmean(rs), statistics.fmean(taus), len(rs)) if rs else None


def _sub(rows, exp, vary, method, keep=lambda r: True):
    return [g for g in _panels(rows, (exp,), vary, lambda r: r.get("method") == method and keep(r)).values()]


def claim_lr(rows):
    keep = lambda r: 0.01 - 1e-12 <= float(r.get("lr")) <= 10 + 1e-12  # noqa: E731
    res, pt = _range(_sub(rows, "lr_robustness", ("lr",), "residual", keep)), \
        _range(_sub(rows, "lr_robustness", ("lr",), "none", keep))
    if res is None:
        return None
    r, tau, k = res
    verdict = "confirmed" if r <= 2 else "within noise" if r <= 2 + tau else "not confirmed"
    extra = f"; prompt tuning R = {pt[0]:.1f}" if pt else ""
    return f"residual R = {r:.1f}, tau = {tau:.1f} ({k} panel(s)){extra}", verdict


def claim_init(rows):
    res, pt = _range(_sub(rows, "init", ("init",), "residual")), _range(_sub(rows, "init", ("init",), "none"))
    if res is None:
        return None
    s, tau, k = res
    ok = pt is None or s <= pt[0]
    verdict = "confirmed" if s <= tau and ok else "not confirmed" if s > tau and (pt is None or s >= pt[0]) \
        else "within noise"
    return f"residual S = {s:.1f}, tau = {tau:.1f}" + (f"; prompt tuning S = {pt[0]:.1f}" if pt else "") + \
        f" ({k} panel(s))", verdict


def claim_bottleneck(rows):
    res = _range(_sub(rows, "bottleneck", ("bottleneck",), "residual", lambda r: r.get("bottleneck") >= 50))
    if res is None:
        return None
    r, tau, k = res
    return f"R(bottleneck >= 50) = {r:.1f}, tau = {tau:.1f} ({k} panel(s))", "confirmed" if r <= tau else "not confirmed"


def claim_shorter(rows):
    pairs = []
    for g in _panels(rows, ("prompt_length",), ("method", "num_tokens")).values():
        pairs += [(g[("residual", n)], g[("none", 10 * n)]) for (m, n) in g if m == "residual" and ("none", 10 * n) in g]
    res = _diff(pairs)
    if res is None:
        return None
    d, tau, k = res
    return f"residual@L - none@10L: d = {d:+.1f}, tau = {tau:.1f} ({k} pair(s))", \
        "confirmed" if d >= -tau else "not confirmed"


def claim_convergence(rows):
    parts = [(b, _compare(rows, ("convergence",), "method", "residual", b, attr="auc")) for b in ("none", "mlp")]
    parts = [(b, r) for b, r in parts if r]
    if not parts:
        return None
    verdicts = [r[1] for _, r in parts]
    verdict = "not confirmed" if "not confirmed" in verdicts else "confirmed" if set(verdicts) == {"confirmed"} \
        else "within noise"
    return "; ".join(f"vs {b}: {r[0]}" for b, r in parts) + " (mean validation score over the run)", verdict


def _at_length(n):
    return lambda r: r.get("num_tokens") == n


# (claim number, claim, our cells, rule, verdict function); a number may appear twice when a claim is
# judged on two kinds of cells (the few-shot FewGLUE cells and the full training set).
CLAIMS = [
    (1, "+7 points over prompt tuning (T5-Base, SuperGLUE, 100-token prompts)",
     "main, prompt_length at 100 tokens: residual vs none", "gain by 7",
     lambda rows: _compare(rows, ("main", "prompt_length"), "method", "residual", "none", 7, keep=_at_length(100))),
    (2, "about +3 points at prompt length 10", "main, prompt_length at 10 tokens: residual vs none", "gain by 3",
     lambda rows: _compare(rows, ("main", "prompt_length"), "method", "residual", "none", 3, keep=_at_length(10))),
    (2, "about +3 points at prompt length 10", "full_train (full SuperGLUE training set) at 10 tokens: residual vs none",
     "gain by 3",
     lambda rows: _compare(rows, ("full_train",), "method", "residual", "none", 3, keep=_at_length(10))),
    (3, "10x shorter prompts at equal quality", "prompt_length: residual at L vs none at 10 L", "no loss",
     claim_shorter),
    (4, "under 2 points of variation across lr 0.01-10", "lr_robustness: residual, lr in [0.01, 10]", "range 2",
     claim_lr),
    (5, "robust to the prompt initialisation", "init: spread over inits, residual vs none", "spread", claim_init),
    (6, "gains in few-shot settings", "few_shot: residual vs none", "gain",
     lambda rows: _compare(rows, ("few_shot",), "method", "residual", "none")),
    (7, "converges faster than prompt tuning and than the MLP without skip",
     "convergence: mean score over all evaluations, residual vs none and vs mlp", "gain (both)", claim_convergence),
    (8, "saturation above bottleneck 50", "bottleneck: residual, sizes >= 50", "saturation", claim_bottleneck),
    (9, "shared network better than separate on small data", "shared: shared=true vs false", "gain",
     lambda rows: _compare(rows, ("shared",), "shared", True, False)),
]


def claims_section(rows) -> list[str]:
    """One line per (claim, backbone) that has the cells the claim's rule needs."""
    out = ["## Claims of the paper", "",
           "Verdicts are computed from the finished cells by the rules at the end of this section, one line",
           "per backbone and kind of cells; the paper's numbers come from T5/BERT on full SuperGLUE, ours",
           "from the grid's models and data.", "",
           "| # | claim (paper) | backbone | our cells | rule | measured (points) | verdict |",
           "|---|---|---|---|---|---|---|"]
    models = sorted({str(r.get("model")) for r in rows})
    seen = set()
    for i, claim, ours, rule, fn in CLAIMS:
        got = [(m, fn([r for r in rows if str(r.get("model")) == m])) for m in models]
        got = [(Path(m).name, g) for m, g in got if g]
        if not got and i in seen:
            continue  # a claim's second kind of cells gets a row only once measured
        seen.add(i)
        got = got or [(DASH, None)]
        for model, g in got:
            out.append(f"| {i} | {claim} | {model} | {ours} | {rule} | {g[0] if g else DASH} | "
                       f"**{g[1] if g else 'not measured yet'}** |")
    rules = __doc__[__doc__.index("Verdict rules"):].replace(" (copied into the report)", "").strip()
    return out + ["", *rules.splitlines(), ""]


# ----------------------------------------------------------------------------- plots
def _plot_panels(cells, rows, x=None) -> dict:
    """Finished cells as {panel: {method: [cells]}}, a panel per value of the axes other than method
    and ``x`` (the plot's x axis; None for convergence curves). Blocks of one experiment may declare
    different axes (convergence on MiniLM by task, on SmolLM2 by model and task): each gets its panels;
    a cell without the ``x`` axis is left out."""
    data = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c.id in rows and (x is None or x in c.axes):
            panel = tuple((a, v) for a, v in c.axes.items() if a not in ("method", x))
            data[panel][c.axes.get("method", c.settings.get("method"))].append(c)
    return data


def _plot(grid, exp, cells, rows) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conv = exp == "convergence"
    x = next((a for a in cells[0].axes if next(iter(canonical({a: 0}))) in X_AXES), None)
    if not conv and x is None:
        return None
    data = _plot_panels(cells, rows, x)
    if not data:
        return None
    fig, subs = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.4), squeeze=False)
    for ax, (panel, lines) in zip(subs[0], data.items()):
        for method, cs in lines.items():
            if conv:
                by_step = defaultdict(list)
                for c in cs:
                    for step, v in rows[c.id].rec.get("eval_curve", []):
                        if v is not None:
                            by_step[step].append(100 * v)
                steps = sorted(by_step)
                ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], marker=".", label=method)
            else:
                pts = defaultdict(list)
                for c in cs:
                    pts[c.axes[x]].append(rows[c.id].best)
                xs = sorted(pts, key=float)
                ms = [_ms(pts[v]) for v in xs]
                ax.errorbar([float(v) for v in xs], [m for m, _, _ in ms], yerr=[s for _, s, _ in ms],
                            marker="o", capsize=3, label=method)
        if not conv:
            ax.set_xscale("log")
        ax.set_xlabel("step" if conv else x)
        ax.set_ylabel("validation score (points)" + (", mean over seeds" if conv else ", best"))
        ax.set_title(", ".join(f"{a}={_v(v)}" for a, v in panel) or exp, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    grid.plots_dir.mkdir(parents=True, exist_ok=True)
    path = grid.plots_dir / f"{grid.name}-{exp}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the report
def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def build_report(grid) -> Path:
    """Writes ``grid.report`` (and plots under ``grid.plots_dir``); returns the report's path."""
    done, failed = load(grid)
    rows = {c.id: Row(c, done[c.id]) for c in grid.cells if c.id in done}
    by_exp = {e: [c for c in grid.cells if c.experiment == e] for e in grid.experiments}
    report = grid.report
    report.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Benchmark results: grid `{grid.name}`", "",
             f"Built {time.strftime('%Y-%m-%d %H:%M')} from {len(rows)} of {len(grid.cells)} cells in "
             f"`{grid.results_dir}`. Rerun the grid (finished cells are skipped, interrupted ones resume): "
             f"`resprompt bench {grid.source}`; one part: `resprompt bench {grid.source} --only <text>`; this file "
             f"alone: `resprompt bench {grid.source} --report-only`.", "",
             "Scores in points (0-100), mean ± std over seeds; best = best validation score during the run (the "
             "kept prompt), last = after the last step; 1 ex. = 100 / n, the weight of one validation example. "
             f"{DASH} = not run yet.", "",
             "| experiment | cells done | failed | measured wall time (sum of cells) |", "|---|---|---|---|"]
    for e, cells in by_exp.items():
        mine = [rows[c.id] for c in cells if c.id in rows]
        wall = sum(r.rec.get("cell_wall_s") or 0 for r in mine if not r.rec.get("reused_from"))
        reused = sum(1 for r in mine if r.rec.get("reused_from"))
        lines.append(f"| {e} | {len(mine)}/{len(cells)} | {sum(c.id in failed for c in cells)} | {_hms(wall)}"
                     + (f" ({reused} reused from identical cells)" if reused else "") + " |")
    hw = sorted({json.dumps(r.rec.get("hardware", {}), sort_keys=True) for r in rows.values()})
    vs = sorted({json.dumps(r.rec.get("versions", {}), sort_keys=True) for r in rows.values()})
    lines += ["", "Hardware: " + ("; ".join(
        f"{h.get('gpu') or h.get('cpu')} ({h.get('cores')} cores, {h.get('torch_threads')} torch threads)"
        for h in map(json.loads, hw)) or DASH),
        "Versions: " + ("; ".join(", ".join(f"{k} {v}" for k, v in json.loads(x).items()) for x in vs) or DASH), ""]
    if grid.notes:
        lines += ["## Notes on this grid", "", *(f"- {n}" for n in grid.notes), ""]
    lines += claims_section(list(rows.values()))
    for e, cells in by_exp.items():
        lines += [f"## Experiment `{e}`", ""]
        if len({tuple(c.axes) for c in cells}) > 1:
            groups = defaultdict(list)
            for c in cells:
                groups[tuple(c.axes)].append(c)
            parts = list(groups.values())
        else:
            parts = [cells]
        for part in parts:
            pivot = _pivot(part, rows)
            if pivot:
                lines += ["Best validation score per task (mean ± std over seeds):", "", *pivot, ""]
            lines += [*_experiment_table(part, rows), ""]
        try:
            path = _plot(grid, e, cells, rows)
        except ImportError:
            path, lines = None, lines + ["(matplotlib is not installed: no plot)", ""]
        if path is not None:
            lines += [f"![{e}]({Path(os.path.relpath(path, report.parent)).as_posix()})", ""]
    lines += ["## Cost", "", "Trainable parameters; seconds per optimizer step = the trainer's wall time / steps, "
              f"evaluations included (mean ± std over the cells that trained at least {MIN_TIMED_STEPS} steps); peak memory (max over cells; CPU: "
              "peak resident set size of the process during the cell, GPU: allocated tensors).", "",
              *_cost_table(rows), "", *_latency_section(grid)]
    bad = [(cid, rec) for cid, rec in failed.items() if cid not in rows]
    if bad:
        lines += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        lines += [f"| {cid} | {rec.get('error', '?').splitlines()[0][:200].replace('|', '/')} |" for cid, rec in bad]
        lines.append("")
    tmp = report.with_name(f".{report.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, report)
    return report
