"""The results report of a benchmark grid: Markdown tables, PNG plots and verdicts on the paper's claims.

Everything is read from the cell files ``<results_dir>/cells/<cell id>.json`` that ``bench`` writes;
cells not finished yet show as "—", so a partial grid renders. Scores are in points (0-100):
"best" is the best validation score over the run (the selected prompt), "last" the score after
the last step. "1 ex." = 100 / n is the weight of one validation example in accuracy (n = records;
for MultiRC n = questions, the weight of one question in exact match). Where the score averages that with
an F1 (CB: accuracy and macro-F1; MultiRC: EM and F1a over answers), one example can move the score by
more or less than 1 ex.: it is a yardstick for noise, not the smallest difference a split can show.

A grid with ``summary:`` (``small.yaml``, ``full.yaml``) opens its report with "What we found" (sentences
generated from the tables below it), a bar plot of the full-data grid's ``main_full`` cells per task and
method with the best constant marked, the full-data table (``main_full``, ``smollm2_full``), the readout
table (in the full-data grid's own report), this grid's FewGLUE table (its ``main`` cells), then the claims,
each naming the cells it rests on. The best constant is the score of always answering the single best label
on the validation set, read from ``benchmarks/reference_scores.py``'s JSON (``reference_scores:``); a mean at
or below it is marked ≤c. A full-data cell not run yet whose settings equal a finished cell's (main_full's CB
residual = readout's CB residual with the ``auto`` readout) is read from that cell, as ``bench`` would copy it.

Verdict rules (copied into the report). For two methods A and B compared
on the same panels (a panel = every setting equal except the compared one and the seed):
d = mean over panels of (mean_A - mean_B) over seeds; tau = mean over panels of
max(pooled std, one-example size), pooled std = sqrt((s_A^2 + s_B^2) / 2), s = sample std over
seeds (0 with one seed). A panel of the same cells as another (identical settings in two experiments,
one copied from the other) counts once.

- gain (A better than B, optionally "by X points"): confirmed if d >= tau (and d >= X / 2 when the
  claim names X); not confirmed if d <= -tau, or if d >= tau but d < X / 2; within noise otherwise.
- no loss (A as good as B): confirmed if d >= -tau, else not confirmed.
- range (variation under L points): R = mean over panels of (max - min) of the seed means;
  confirmed if R <= L; within noise if R <= L + tau; not confirmed otherwise.
- spread (robust to a setting): S = the range R of residual; confirmed if S <= tau and S <= the
  range of prompt tuning (when measured); not confirmed if S > tau and S >= that range (when
  measured); within noise otherwise. Saturation: confirmed if R <= tau, else not confirmed.
- not measured yet: the cells the rule needs are not finished. A panel counts once every seed of its
  settings is finished (a task with some seeds still running is left out of the verdict until then).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from .cells import canonical, configs

DASH = "—"


def _signed(x: float) -> str:
    """A difference to one decimal with its sign, "+2.3" / "-1.3"; one that rounds to zero is "+0.0"
    (never "-0.0")."""
    text = f"{x:+.1f}"
    return "+0.0" if text == "-0.0" else text


X_AXES = ("lr", "num_tokens", "bottleneck", "few_shot", "max_train_examples")


class Row:
    """One finished cell, as the report uses it."""

    def __init__(self, cell, rec: dict):
        self.cell, self.rec, res = cell, rec, rec.get("results", {})
        self.exp, self.s = cell.experiment, cell.settings
        self.best = _pts(res.get("best"))
        self.last = _pts(res.get("final"))
        n = (res.get("final") or res.get("best") or {}).get("n") or res.get("eval_examples")
        self.n, self.ex = n, 100.0 / n if n else None
        # the cell whose file this record came from (a main_full cell read from its identical readout cell names
        # the readout cell) and the settings key that tells identical cells
        self.source, self.key = rec.get("cell_id") or cell.id, rec.get("settings_key") or cell.id
        # the cell this one's result was copied from: a file ``bench`` wrote as a copy (``reused_from``), or a
        # record read from another cell's file; None for a cell trained under its own id
        self.origin = rec.get("reused_from") or (self.source if self.source != cell.id else None)
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
    ("53.6 (2 of 3)"): such an average is not comparable with a full row's. A row with a cell not
    finished yet (any task, any seed) has no average: a mean over fewer seeds than planned is not comparable
    either.
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
        unfinished = any(v is None for t in tasks for v in per_task.get(t, []))
        avg = DASH if unfinished or None in means else f"{statistics.fmean(means):.1f}"
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
    """(d, tau, number of panels, rows used) for a list of (rows A, rows B). A pair of the same cells as an
    earlier pair (identical settings in two experiments, e.g. ``main`` and ``prompt_length`` at 10 tokens,
    the second a copy of the first) is one panel, counted once."""
    ds, taus, used, seen = [], [], [], set()
    for a, b in pairs:
        (ma, sa, _), (mb, sb, _) = _ms([getattr(r, attr) for r in a]), _ms([getattr(r, attr) for r in b])
        same = (frozenset(r.key for r in a), frozenset(r.key for r in b))
        if ma is None or mb is None or same in seen:
            continue
        seen.add(same)
        ex = _ms([r.ex for r in a + b])[0] or 0.0
        ds.append(ma - mb)
        taus.append(max(math.sqrt((sa ** 2 + sb ** 2) / 2), ex))
        used += a + b
    return (statistics.fmean(ds), statistics.fmean(taus), len(ds), used) if ds else None  # d, tau, panels, rows


def _gain(res, magnitude=None):
    if res is None:
        return None
    d, tau, k, used = res
    if d >= tau:
        verdict = "confirmed" if magnitude is None or d >= magnitude / 2 else "not confirmed"
    else:
        verdict = "not confirmed" if d <= -tau else "within noise"
    return f"d = {_signed(d)}, tau = {tau:.1f} ({k} panel(s))", verdict, used


def _compare(rows, exps, key, a, b, magnitude=None, keep=lambda r: True, attr="best"):
    pairs = [(g[(a,)], g[(b,)]) for g in _panels(rows, exps, (key,), keep).values() if (a,) in g and (b,) in g]
    return _gain(_diff(pairs, attr), magnitude)


def _range(groups):
    """Mean over panels of (max - min) of seed means, mean tau = max(std, 1 ex.), panels, rows used (a panel
    of the same cells as an earlier one counted once, as in ``_diff``)."""
    rs, taus, used, seen = [], [], [], set()
    for g in groups:
        stats = [(_ms([r.best for r in rs_])[:2], _ms([r.ex for r in rs_])[0] or 0) for rs_ in g.values()]
        same = frozenset(r.key for rs_ in g.values() for r in rs_)
        if len(stats) >= 2 and same not in seen:
            seen.add(same)
            means = [m for (m, _), _ in stats]
            rs.append(max(means) - min(means))
            taus.append(statistics.fmean(max(s, e) for (_, s), e in stats))
            used += [r for rs_ in g.values() for r in rs_]
    return (statistics.fmean(rs), statistics.fmean(taus), len(rs), used) if rs else None


def _sub(rows, exp, vary, method, keep=lambda r: True):
    return [g for g in _panels(rows, (exp,), vary, lambda r: r.get("method") == method and keep(r)).values()]


def claim_lr(rows):
    keep = lambda r: 0.01 - 1e-12 <= float(r.get("lr")) <= 10 + 1e-12  # noqa: E731
    res, pt = _range(_sub(rows, "lr_robustness", ("lr",), "residual", keep)), \
        _range(_sub(rows, "lr_robustness", ("lr",), "none", keep))
    if res is None:
        return None
    r, tau, k, used = res
    verdict = "confirmed" if r <= 2 else "within noise" if r <= 2 + tau else "not confirmed"
    extra = f"; prompt tuning R = {pt[0]:.1f}" if pt else ""
    return f"residual R = {r:.1f}, tau = {tau:.1f} ({k} panel(s)){extra}", verdict, used + (pt[3] if pt else [])


def claim_init(rows):
    res, pt = _range(_sub(rows, "init", ("init",), "residual")), _range(_sub(rows, "init", ("init",), "none"))
    if res is None:
        return None
    s, tau, k, used = res
    ok = pt is None or s <= pt[0]
    verdict = "confirmed" if s <= tau and ok else "not confirmed" if s > tau and (pt is None or s >= pt[0]) \
        else "within noise"
    return f"residual S = {s:.1f}, tau = {tau:.1f}" + (f"; prompt tuning S = {pt[0]:.1f}" if pt else "") + \
        f" ({k} panel(s))", verdict, used + (pt[3] if pt else [])


def claim_bottleneck(rows):
    res = _range(_sub(rows, "bottleneck", ("bottleneck",), "residual", lambda r: r.get("bottleneck") >= 50))
    if res is None:
        return None
    r, tau, k, used = res
    return f"R(bottleneck >= 50) = {r:.1f}, tau = {tau:.1f} ({k} panel(s))", \
        "confirmed" if r <= tau else "not confirmed", used


def claim_shorter(rows):
    pairs = []
    for g in _panels(rows, ("prompt_length",), ("method", "num_tokens")).values():
        pairs += [(g[("residual", n)], g[("none", 10 * n)]) for (m, n) in g if m == "residual" and ("none", 10 * n) in g]
    res = _diff(pairs)
    if res is None:
        return None
    d, tau, k, used = res
    return f"residual@L - none@10L: d = {_signed(d)}, tau = {tau:.1f} ({k} pair(s))", \
        "confirmed" if d >= -tau else "not confirmed", used


def claim_convergence(rows):
    parts = [(b, _compare(rows, ("convergence",), "method", "residual", b, attr="auc")) for b in ("none", "mlp")]
    parts = [(b, r) for b, r in parts if r]
    if not parts:
        return None
    verdicts = [r[1] for _, r in parts]
    verdict = "not confirmed" if "not confirmed" in verdicts else "confirmed" if set(verdicts) == {"confirmed"} \
        else "within noise"
    return "; ".join(f"vs {b}: {r[0]}" for b, r in parts) + " (mean validation score over the run)", verdict, \
        [x for _, r in parts for x in r[2]]


def _at_length(n):
    return lambda r: r.get("num_tokens") == n


FULL_DATA_EXPS = ("main_full", "smollm2_full")  # issue 16's full-training-set table, the `auto` readout


# (claim number, claim, our cells, rule, verdict function); a number may appear twice when a claim is
# judged on two kinds of cells (the few-shot FewGLUE cells and the full training set).
CLAIMS = [
    (1, "+7 points over prompt tuning (T5-Base, SuperGLUE, 100-token prompts)",
     "main, prompt_length at 100 tokens: residual vs none", "gain by 7",
     lambda rows: _compare(rows, ("main", "prompt_length"), "method", "residual", "none", 7, keep=_at_length(100))),
    (2, "about +3 points at prompt length 10", "main, prompt_length at 10 tokens: residual vs none", "gain by 3",
     lambda rows: _compare(rows, ("main", "prompt_length"), "method", "residual", "none", 3, keep=_at_length(10))),
    (2, "about +3 points at prompt length 10",
     "main_full / smollm2_full (full SuperGLUE training sets, `auto` readout) at 10 tokens: residual vs none",
     "gain by 3",
     lambda rows: _compare(rows, FULL_DATA_EXPS, "method", "residual", "none", 3, keep=_at_length(10))),
    (2, "about +3 points at prompt length 10",
     "full_train (CB's full training set, the native pooler readout) at 10 tokens: residual vs none", "gain by 3",
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


def compact_ids(ids) -> list[str]:
    """Cell ids folded into brace patterns that name exactly the same cells, in first-seen order:
    ``main__task=CB__method=none__seed=1`` .. ``seed=3`` and the same for ``residual`` become
    ``main__task=CB__method={none,residual}__seed={1,2,3}``. Ids differing in one part merge, part by part,
    until nothing merges, so every pattern is a full product of its values (numbers listed in increasing order)."""
    groups = defaultdict(list)  # (experiment, axis names) -> value tuples
    for cid in dict.fromkeys(ids):
        exp, *parts = cid.split("__")
        kv = [p.partition("=") for p in parts]
        groups[(exp, tuple(k for k, _, _ in kv))].append(tuple((v,) for _, _, v in kv))
    out = []
    for (exp, names), pats in groups.items():
        order = {v: i for i, v in enumerate(dict.fromkeys(v for p in pats for vs in p for v in vs))}
        changed = True
        while changed:
            changed = False
            for i in reversed(range(len(names))):
                merged = {}
                for p in pats:
                    rest = p[:i] + p[i + 1:]
                    merged[rest] = merged.get(rest, ()) + tuple(v for v in p[i] if v not in merged.get(rest, ()))
                if len(merged) < len(pats):
                    changed = True
                pats = [rest[:i] + (tuple(sorted(vs, key=order.get)),) + rest[i:] for rest, vs in merged.items()]
        for p in pats:
            out.append("__".join([exp] + [f"{k}={vs[0]}" if len(vs) == 1 else f"{k}={{{','.join(_ordered(vs))}}}"
                                          for k, vs in zip(names, p)]))
    return out


def _ordered(values):
    """Numbers in increasing order, anything else as first seen."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return list(values)


def _rests_on(rows) -> str:
    """"N cells: `pattern`, `pattern`" for the rows a verdict used (each cell once, named by the file it was
    read from; sorted, so values inside braces come alphabetically, numbers in increasing order)."""
    ids = sorted({r.source for r in rows})
    return DASH if not ids else f"{len(ids)} cell{'s' * (len(ids) != 1)}: " + \
        ", ".join(f"`{p}`" for p in compact_ids(ids))


def complete(cells, rows) -> list:
    """The rows of ``cells`` whose every seed is finished (cells grouped by experiment and settings but the
    seed). A verdict compares seed means; a mean over fewer seeds than planned is not measured yet."""
    groups = defaultdict(list)
    for c in cells:
        rest = {k: v for k, v in c.settings.items() if k != "seed"}
        groups[(c.experiment, json.dumps(rest, sort_keys=True, default=str))].append(c)
    return [rows[c.id] for g in groups.values() if all(c.id in rows for c in g) for c in g]


def claim_rows(rows) -> list[tuple]:
    """(claim number, claim, backbone, our cells, rule, measured, verdict, rows used) per line of the table."""
    models = sorted({str(r.get("model")) for r in rows})
    seen, out = set(), []
    for i, claim, ours, rule, fn in CLAIMS:
        got = [(m, fn([r for r in rows if str(r.get("model")) == m])) for m in models]
        got = [(Path(m).name, g) for m, g in got if g]
        if not got and i in seen:
            continue  # a claim's second kind of cells gets a row only once measured
        seen.add(i)
        for model, g in got or [(DASH, None)]:
            out.append((i, claim, model, ours, rule, g[0] if g else DASH, g[1] if g else "not measured yet",
                        g[2] if g else []))
    return out


def claims_section(rows, lines=None) -> list[str]:
    """One line per (claim, backbone) that has the cells the claim's rule needs, with the cells it rests on."""
    out = ["## Claims of the paper", "",
           "Verdicts are computed from the finished cells by the rules at the end of this section, one line",
           "per backbone and kind of cells; the paper's numbers come from T5/BERT on full SuperGLUE, ours",
           "from the grid's models and data. \"rests on\" names every cell a verdict used, as cell-id patterns",
           "(`{a,b}` = either value); a cell with the same settings as another counts once.", "",
           "| # | claim (paper) | backbone | our cells | rule | measured (points) | rests on | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for i, claim, model, ours, rule, measured, verdict, used in lines or claim_rows(rows):
        out.append(f"| {i} | {claim} | {model} | {ours} | {rule} | {measured} | {_rests_on(used)} | **{verdict}** |")
    rules = __doc__[__doc__.index("Verdict rules"):].replace(" (copied into the report)", "").strip()
    return out + ["", *rules.splitlines(), ""]


# ----------------------------------------------------------------------------- summary (the report's top)
FULL_EXPS = ("main_full", "smollm2_full")  # the full-data table: tasks x methods on full training sets
FEWGLUE_EXPS = ("main",)                   # the FewGLUE table
READOUT_EXP = "readout"                    # residual vs the head-only probe, readout auto vs native
PLOT_METHODS = ("none", "residual", "mlp", "head_only", "peft_prompt_tuning")
# settings that differ between a grid's cells by design (budgets, evaluation subsets), not between variants
_NOT_VARIANTS = {"seed", "task", "model", "method", "max_steps", "eval_every", "epochs", "max_eval_examples",
                 "max_length", "progress"}


def reference_scores(path) -> dict:
    """task -> (best constant score in points, validation n), read from the JSON that
    ``python benchmarks/reference_scores.py --json PATH`` writes; {} when there is none."""
    try:
        data = json.loads(Path(path).read_text())
        return {t: (float(v["majority"]), int(v["n"])) for t, v in data.items()}
    except (TypeError, ValueError, KeyError, OSError, AttributeError):
        return {}


def _constant(ref, task, rows):
    """The task's best constant, or None when unknown or measured on another validation set (other n)."""
    if task not in ref:
        return None
    score, n = ref[task]
    return score if all(r.n is None or round(r.n) == n for r in rows) else None


def _variants(cells) -> dict:
    """cell id -> "k=v, ..." of the settings that tell apart cells of one experiment, model, method and task
    (smollm2_full's second residual: "branch_scale=embedding, lr_network=0.03"); "" for most cells."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c.experiment, str(c.settings.get("model")), c.settings.get("method"), c.settings.get("task"))].append(c)
    out = {}
    for g in groups.values():
        keys = set().union(*(c.settings for c in g)) - _NOT_VARIANTS
        vary = sorted(k for k in keys if len({json.dumps(c.settings.get(k), default=str) for c in g}) > 1)
        for c in g:
            out[c.id] = ", ".join(f"{k}={_v(c.settings[k])}" for k in vary if k in c.settings)
    return out


def _resolve(cells, rows, pool) -> dict:
    """Rows of ``cells``; a cell not finished is read from a finished cell of ``pool`` with the same settings
    key, which ``bench`` would copy into it without training (main_full's CB residual = readout's, auto)."""
    by_key = {}
    for r in pool.values():
        by_key.setdefault(r.key, r)
    out = {}
    for c in cells:
        if c.id in rows:
            out[c.id] = rows[c.id]
        elif by_key and by_key.get(c.key) is not None:
            out[c.id] = Row(c, by_key[c.key].rec)
    return out


def score_table(cells, rows, ref) -> tuple[list[str], dict]:
    """The summary's (model, method) x task table of the best validation score: mean ± std (seeds done /
    planned), a best-constant row and a one-example row; a mean at or below its task's constant is marked ≤c.
    Returns the Markdown lines and what the "What we found" text reads from them."""
    tasks = list(dict.fromkeys(c.settings.get("task") for c in cells))
    variants = _variants(cells)
    groups = defaultdict(lambda: defaultdict(list))
    for c in cells:
        label = c.settings.get("method", "residual") + (f" ({variants[c.id]})" if variants[c.id] else "")
        groups[(Path(str(c.settings.get("model"))).name, label)][c.settings.get("task")].append(c)
    of_task = {t: [rows[c.id] for c in cells if c.settings.get("task") == t and c.id in rows] for t in tasks}
    const = {t: _constant(ref, t, of_task[t]) for t in tasks}
    ex = {t: _ms([r.ex for r in of_task[t]])[0] or (100 / ref[t][1] if t in ref else None) for t in tasks}
    entries, lines = {}, ["| model | method | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for (model, label), per_task in groups.items():
        cols = []
        for t in tasks:
            cs = per_task.get(t, [])
            got = [rows[c.id] for c in cs if c.id in rows and rows[c.id].best is not None]
            m, sd, k = _ms([r.best for r in got])
            low = m is not None and const[t] is not None and round(m, 1) <= const[t]
            if cs:
                entries[(model, label, t)] = {"mean": m, "std": sd, "k": k, "planned": len(cs), "low": low}
            cols.append("" if not cs else f"{DASH} (0/{len(cs)})" if m is None else
                        f"{_fmt([r.best for r in got])}{' ≤c' if low else ''} ({k}/{len(cs)})")
        lines.append(f"| {model} | {label} | " + " | ".join(cols) + " |")
    lines += ["| | **best constant** | " + " | ".join(DASH if const[t] is None else f"**{const[t]:.1f}**"
                                                   for t in tasks) + " |",
              "| | 1 ex. | " + " | ".join(DASH if ex[t] is None else f"{ex[t]:.2f}" for t in tasks) + " |"]
    done = [c for c in cells if c.id in rows]
    return lines, {"tasks": tasks, "const": const, "ex": ex, "entries": entries, "done": len(done),
                   "total": len(cells), "copied": sum(rows[c.id].origin is not None for c in done),
                   "rows": [rows[c.id] for c in done]}


def readout_table(cells, rows, ref=None) -> tuple[list[str], dict]:
    """Residual vs the head-only probe of the same readout, per task and pooling: the difference of the means
    against one example's worth of points (100 / validation n). A mean at or below the task's best constant
    (``ref``, as in ``score_table``) is marked ≤c: where the probe is, the frozen features carry nothing that
    a linear head finds, and the panel cannot tell a prompt that uses the readout from one that does not."""
    panels = defaultdict(lambda: defaultdict(list))
    for c in cells:
        panels[(c.settings.get("task"), c.settings.get("pooling", "native"))][c.settings.get("method")].append(c)
    lines = ["| task | pooling | residual | head-only probe | residual − probe | 1 ex. | verdict |",
             "|---|---|---|---|---|---|---|"]
    measured, used = [], []
    for (task, pooling), by in panels.items():
        res, ho = ([rows[c.id] for c in by.get(m, []) if c.id in rows] for m in ("residual", "head_only"))
        (mr, _, kr), (mh, _, kh) = _ms([r.best for r in res]), _ms([r.best for r in ho])
        ex = _ms([r.ex for r in res + ho])[0]
        const = _constant(ref or {}, task, res + ho)
        low = [m is not None and const is not None and round(m, 1) <= const for m in (mr, mh)]
        count = f" ({kr}/{len(by.get('residual', []))})", f" ({kh}/{len(by.get('head_only', []))})"
        if mr is None or mh is None or ex is None:
            d, verdict = DASH, "not measured yet"
        else:
            d = mr - mh
            verdict = "residual ahead by more than 1 ex." if d > ex else \
                "probe ahead by more than 1 ex." if d < -ex else "within 1 ex."
            if low[1]:
                verdict += " (probe ≤c: uninformative)"
            measured.append((task, pooling, mr, mh, d, ex, low[1]))
            used += res + ho
            d = _signed(d)
        lines.append(f"| {task} | {pooling} | {_fmt([r.best for r in res])}{' ≤c' * low[0]}{count[0]} | "
                     f"{_fmt([r.best for r in ho])}{' ≤c' * low[1]}{count[1]} | {d} | "
                     f"{DASH if ex is None else f'{ex:.2f}'} | {verdict} |")
    pool = defaultdict(dict)  # (task, method) -> pooling -> mean
    for (task, pooling), by in panels.items():
        for m, cs in by.items():
            mean = _ms([rows[c.id].best for c in cs if c.id in rows])[0]
            if mean is not None:
                pool[(task, m)][pooling] = mean
    effects = [f"{m} {t} {_signed(p['auto'] - p['native'])}" for (t, m), p in pool.items() if {"auto", "native"} <= set(p)]
    return lines, {"measured": measured, "used": used, "effects": effects,
                   "done": sum(c.id in rows for c in cells), "total": len(cells)}


def _readout_verdict(info) -> str:
    """The plain answer to "does the residual prompt beat the probe of its own readout by more than one
    example's worth of points?", from the measured panels where the probe beats the best constant (a panel
    whose probe does not is listed, and left out of the count)."""
    got = info["measured"]
    if not got:
        return f"Not measured yet ({info['done']} of {info['total']} cells finished)."
    live = [g for g in got if not g[6]]
    flat = [f"{t} {p}" for t, p, *_, low in got if low]
    each = "; ".join(f"{t} {p}: {mr:.1f} vs {mh:.1f}, {_signed(d)} with 1 ex. = {e:.2f}"
                     for t, p, mr, mh, d, e, _ in got)
    aside = (f" Left out of the count: {', '.join(flat)}, where the probe is at or below the best constant (the "
             "frozen features give a linear head nothing there, so the panel cannot show what the readout is "
             "worth).") if flat else ""
    if not live:
        return f"**Not measurable**: in every measured panel the probe is at or below the best constant ({each})." \
            + aside
    wins = [g for g in live if g[4] > g[5]]
    where = f"{len(live)} measured panel(s)" + (" where the probe beats the best constant" if flat else "")
    if not wins:
        return (f"**No.** The residual prompt does not beat the probe of its own readout by more than one example's "
                f"worth of points in any of the {where} ({each}).{aside}")
    behind = [f"{t} {p}" for t, p, _, _, d, e, _ in live if d < -e]
    level = [f"{t} {p}" for t, p, _, _, d, e, _ in live if -e <= d <= e]
    rest = "; ".join(part for part in (f"the probe is ahead on {', '.join(behind)}" if behind else "",
                                       f"within one example on {', '.join(level)}" if level else "") if part)
    return (f"**In {len(wins)} of {where}** the residual prompt beats the probe of its own "
            f"readout by more than one example's worth of points ({each})."
            + (f" **In the other {len(live) - len(wins)} it does not**: {rest}." if rest else "") + aside)


def summary_plot(path, cells, rows, ref, title) -> Path | None:
    """One group of bars per task, one bar per method (mean ± std of the best score over seeds, the seed
    count above it), the task's best constant as a dashed line across its group; "not run yet" where a task
    has no finished cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tasks = list(dict.fromkeys(c.settings.get("task") for c in cells))
    methods = [m for m in PLOT_METHODS if any(c.settings.get("method") == m for c in cells)]
    if not tasks or not methods:
        return None
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.5 * len(tasks) + 2.5, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tops, handles = [], []
    for j, m in enumerate(methods):
        xs, ys, es, ks = [], [], [], []
        for i, t in enumerate(tasks):
            got = [rows[c.id].best for c in cells if c.id in rows and c.settings.get("task") == t
                   and c.settings.get("method") == m and rows[c.id].best is not None]
            mean, sd, k = _ms(got)
            if mean is not None:
                xs.append(i - 0.4 + width * (j + 0.5)), ys.append(mean), es.append(sd), ks.append(k)
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=colours[j % len(colours)])
        handles.append(Patch(color=colours[j % len(colours)], label=m + ("" if xs else " (not run yet)")))
        for x, y, e, k in zip(xs, ys, es, ks):
            ax.text(x, y + e + 0.5, str(k), ha="center", va="bottom", fontsize=6)
            tops.append(y + e)
    for i, t in enumerate(tasks):
        of_task = [rows[c.id] for c in cells if c.id in rows and c.settings.get("task") == t]
        c = _constant(ref, t, of_task)
        if c is not None:
            ax.hlines(c, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2)
            tops.append(c)
        if not of_task:
            ax.text(i, (c or 0) + 2, "not run yet", ha="center", va="bottom", fontsize=7, color="gray")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylim(0, max(tops + [50]) * 1.15)
    ax.set_ylabel("best validation score (points)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if tops and any(_constant(ref, t, []) is not None for t in tasks):
        handles.append(Line2D([], [], color="black", linestyle="--", label="best constant"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _model_name(info):
    return sorted({model for model, _, _ in info["entries"]})


def _task_scores(info, model, t) -> str:
    """"CB residual 56.1 (1 seed; best constant 36.1)": one task's finished means, best first."""
    got = sorted(((e["mean"], label, e) for (mo, label, tt), e in info["entries"].items()
                  if mo == model and tt == t and e["mean"] is not None), key=lambda x: -x[0])
    const = info["const"][t]
    return f"{t} " + ", ".join(f"{label} {m:.1f}{' ≤c' if e['low'] else ''} ({e['k']} seed{'s' * (e['k'] != 1)}"
                               for m, label, e in got) + (f"; best constant {const:.1f})" if const is not None else ")")


def _found_model(info, model) -> str:
    """One model's full-data sentences: the method means over the tasks where every method has all its
    seeds, residual minus none on each of them, and the tasks still partial; with no such task (or one
    method), each begun task's means."""
    mine, labels, complete, avg = _model_means(info, model)
    begun = [t for t in info["tasks"] if any(e["mean"] is not None for (_, tt), e in mine.items() if tt == t)]
    partial = [t for t in begun if t not in complete]
    text = []
    if complete and len(labels) > 1:
        text.append(f"on {model}, over the {len(complete)} task{'s' * (len(complete) > 1)} where every method has all "
                    f"its seeds ({', '.join(complete)}), the mean scores are "
                    + ", ".join(f"{lb} {v:.1f}" for lb, v in sorted(avg.items(), key=lambda x: -x[1])))
        if all(("residual", t) in mine and ("none", t) in mine for t in complete):
            text.append("residual minus none: " + ", ".join(
                f"{t} {_signed(mine[('residual', t)]['mean'] - mine[('none', t)]['mean'])}" for t in complete)
                + f" (1 ex. = {', '.join(_ex(info, t) for t in complete)})")
        if partial:
            text.append(f"still partial: {', '.join(partial)}")
    elif begun:
        text.append(f"on {model}: " + "; ".join(_task_scores(info, model, t) for t in begun))
    return "; ".join(text)


def _model_means(info, model) -> tuple[dict, list, list, dict]:
    """One model's entries {(label, task): entry}, its method labels, the tasks where every method has all
    its seeds, and each method's mean over those tasks (methods planned on every one of them)."""
    mine = {(label, t): e for (mo, label, t), e in info["entries"].items() if mo == model}
    labels = list(dict.fromkeys(label for label, _ in mine))
    tasks = [t for t in info["tasks"] if any(tt == t for _, tt in mine)]
    complete = [t for t in tasks if all(e["mean"] is not None and e["k"] == e["planned"]
                                        for (_, tt), e in mine.items() if tt == t)]
    avg = {lb: statistics.fmean(mine[(lb, t)]["mean"] for t in complete) for lb in labels
           if complete and all((lb, t) in mine for t in complete)}
    return mine, labels, complete, avg


LEAD_NAMES = {"none": "plain prompt tuning"}  # method labels as the lead's sentences say them


def _lead_full(full) -> str:
    """"On the full training sets, ...: on m (6 tasks) training the head alone (head_only) is first with 55.2,
    residual 54.0, plain prompt tuning 53.7"."""
    parts = []
    for mo in _model_name(full):
        _, _, complete, avg = _model_means(full, mo)
        if len(avg) < 2:
            continue
        first = max(avg, key=avg.get)
        rest = [f"{LEAD_NAMES.get(lb, lb)} {avg[lb]:.1f}" for lb in ("residual", "none") if lb in avg and lb != first]
        said = {"none": "plain prompt tuning (none)", "head_only": "training the head alone (head_only)"}
        parts.append(f"on {mo} ({len(complete)} task{'s' * (len(complete) > 1)}) {said.get(first, first)} is first "
                     f"with {avg[first]:.1f}" + "".join(f", {r}" for r in rest))
    return ("On the full training sets, averaged over the tasks where every method has all its seeds: "
            + "; ".join(parts) + ".") if parts else ""


def _in_short(full, readout, claims) -> str:
    """The report's lead, a few sentences before the bullets, each number read from the same tables: the
    best method per model on the full training sets, claim 2 there, the readout count, the claim verdicts."""
    out = [_lead_full(full)] if full and full["total"] else []
    two = defaultdict(list)
    for i, _, model, ours, _, _, verdict, _ in claims or []:
        if i == 2 and ours.split()[0] in FULL_EXPS and verdict != "not measured yet":
            two[verdict].append(model)
    if two:
        out.append("The paper's headline gain, about +3 points over prompt tuning at 10 tokens (claim #2), is "
                   + "; ".join(f"{v} on {' and '.join(ms)}" for v, ms in two.items()) + " on the full training sets.")
    live = [g for g in (readout or {}).get("measured", []) if not g[6]]
    if live:
        wins = sum(g[4] > g[5] for g in live)
        out.append(f"The residual prompt beats the head-only probe of its own readout by more than one example in "
                   f"{wins} of {len(live)} panel{'s' * (len(live) > 1)}.")
    if claims:
        n = Counter(row[6] for row in claims)
        out.append(f"Over the paper's claims ({len(claims)} verdict rows): " + ", ".join(
            f"{n[v]} {v}" for v in ("confirmed", "within noise", "not confirmed", "not measured yet") if n[v]) + ".")
    return " ".join(o for o in out if o)


def _ex(info, t) -> str:
    return DASH if info["ex"][t] is None else f"{info['ex'][t]:.2f}"


def _found_low(info) -> str:
    """"7 of 24 means are at or below the best constant (every finished mean on WSC; also minilm COPA none)"."""
    means = [e for e in info["entries"].values() if e["mean"] is not None]
    low = [(mo, label, t) for (mo, label, t), e in info["entries"].items() if e["low"]]
    if not low:
        return f"None of the {len(means)} means is at or below the best constant."
    all_low = [t for t in info["tasks"] if any(k[2] == t for k in low)
               and all(e["low"] for k, e in info["entries"].items() if k[2] == t and e["mean"] is not None)]
    rest = [f"{mo} {t} {label}" for mo, label, t in low if t not in all_low]
    where = "; also ".join(([f"every finished mean on {', '.join(all_low)}"] if all_low else [])
                           + ([", ".join(rest)] if rest else []))
    return f"{len(low)} of {len(means)} means are at or below the best constant ({where})."


def _copied(info) -> str:
    """"3 of them read from `readout` cells with the same settings" (the grid copies those instead of training)."""
    exps = sorted({r.origin.split("__")[0] for r in info["rows"] if r.origin is not None})
    who = "all" if info["copied"] == info["done"] else f"{info['copied']} of them"
    return f"{who} read from {', '.join(f'`{e}`' for e in exps)} cells with the same settings"


def _found(full, full_name, readout, few, few_name, claims) -> list[str]:
    """The "What we found" bullets, every number read from the tables below."""
    out = []
    if full and full["total"]:
        head = (f"**Full SuperGLUE training sets** (grid `{full_name}`; the full-data table rests on {full['done']} of "
                f"{full['total']} cells" + (f", {_copied(full)}" if full["copied"] else "") + ")")
        means = [e for e in full["entries"].values() if e["mean"] is not None]
        if not means:
            out.append(head + ": no cell has finished yet.")
        else:
            empty = [f"{mo} {t}" for mo in _model_name(full) for t in full["tasks"]
                     if any(k[0] == mo and k[2] == t for k in full["entries"])
                     and all(e["mean"] is None for k, e in full["entries"].items() if k[0] == mo and k[2] == t)]
            found = [_found_model(full, mo) for mo in _model_name(full)]
            out.append(head + ": " + ". ".join(f[0].upper() + f[1:] for f in found if f) + ". " + _found_low(full)
                       + (f" Not run yet: {full['total'] - full['done']} cells" + (
                           f" (nothing yet on {', '.join(empty)})" if empty else "") + "." if full["done"] < full["total"]
                          else ""))
    if readout and readout["total"]:
        out.append(f"**Readout** (experiment `{READOUT_EXP}`, {readout['done']} of {readout['total']} cells): does the "
                   "residual prompt beat the head-only probe of the same frozen features? " + _readout_verdict(readout)
                   + (f" Mean readout (`auto`) minus the architecture's own (`native`): {', '.join(readout['effects'])}."
                      if readout["effects"] else ""))
    if few and few["done"]:
        counts = defaultdict(int)
        for (mo, _, _), e in few["entries"].items():
            counts[mo] += e["mean"] is not None
        model = max(counts, key=counts.get)
        mine = {(label, t): e for (mo, label, t), e in few["entries"].items() if mo == model}
        tasks = [t for t in few["tasks"] if any(tt == t for _, tt in mine)]
        labels = list(dict.fromkeys(label for label, _ in mine))
        avgs = {lb: statistics.fmean(mine[(lb, t)]["mean"] for t in tasks) for lb in labels
                if all((lb, t) in mine and mine[(lb, t)]["mean"] is not None for t in tasks)}
        means = [e for e in mine.values() if e["mean"] is not None]
        low = [e for e in means if e["low"]]
        all_low = [t for t in tasks if all(mine[(lb, t)]["low"] for lb in labels if (lb, t) in mine
                                           and mine[(lb, t)]["mean"] is not None)]
        text = (f"**FewGLUE, 32 training examples per task** (grid `{few_name}`, experiment `main`, {few['done']} of "
                f"{few['total']} cells): ")
        if len(avgs) >= 2:
            lo, hi = min(avgs, key=avgs.get), max(avgs, key=avgs.get)
            text += (f"on {model} the {len(avgs)} methods average {avgs[lo]:.1f} ({lo}) to {avgs[hi]:.1f} ({hi}) over "
                     f"its {len(tasks)} tasks, a spread of {avgs[hi] - avgs[lo]:.1f} points; ")
        text += f"{len(low)} of its {len(means)} task × method means are at or below the best constant"
        text += f", every one on {', '.join(all_low)}." if all_low else "."
        out.append(text)
    if claims:
        by = defaultdict(list)
        kinds = defaultdict(int)
        for i, *_ in CLAIMS:
            kinds[i] += 1
        for i, _, model, ours, _, _, verdict, _ in claims:
            kind = ours.split()[0].rstrip(",")  # a claim judged on several kinds of cells names its kind
            tag = f"#{i}" + ("" if model == DASH else f" {model}") + \
                (f" ({CLAIM_KINDS.get(kind, kind)})" if kinds[i] > 1 else "")
            by[verdict].append(tag)
        out.append(f"**Claims of the paper** ({len(claims)} verdict rows, one per claim and backbone; the claims "
                   "table names the cells each rests on): " + "; ".join(
                       f"{len(by[v])} {v} ({', '.join(by[v])})" for v in ("confirmed", "within noise", "not confirmed",
                                                                          "not measured yet") if by[v]) + ".")
    return out


# first word of a claim's "our cells" -> its tag (full_train: the small grid's older CB-only full-data run)
CLAIM_KINDS = {"main": "FewGLUE", "main_full": "full data", "full_train": "CB full data, pooler readout"}


def _load_other(grid, rows):
    """(grid, rows) of the summary's full-data grid: this grid itself when it names itself."""
    other = grid.summary_grid()
    if other is grid:
        return grid, rows
    done, _ = load(other)
    return other, {c.id: Row(c, done[c.id]) for c in other.cells if c.id in done}


def summary_sections(grid, rows) -> tuple[list[str], list, dict]:
    """The report's top for a grid with ``summary:``: What we found, the summary plot, the full-data table,
    the readout table (when the full-data grid is this grid), the FewGLUE table; the claim rows, judged on
    this grid's cells plus the full-data grid's; and {"found": bullets, "plot": path} for the README block."""
    full_grid, full_rows = _load_other(grid, rows)
    same = full_grid is grid
    ref = reference_scores(grid.reference_scores)
    full_ref = reference_scores(full_grid.reference_scores) or ref
    full_cells = [c for c in full_grid.cells if c.experiment in FULL_EXPS]
    resolved = _resolve(full_cells, full_rows, full_rows)
    full_lines, full = score_table(full_cells, resolved, full_ref) if full_cells else ([], None)
    readout_cells = [c for c in full_grid.cells if c.experiment == READOUT_EXP]
    ro_lines, readout = readout_table(readout_cells, full_rows, full_ref) if readout_cells else ([], None)
    few_cells = [c for c in grid.cells if c.experiment in FEWGLUE_EXPS]
    few_lines, few = score_table(few_cells, rows, ref) if few_cells else ([], None)
    # the claims: this grid's cells, the full-data grid's, and full-data cells read from identical finished ones
    # (each verdict on seed groups that have all their seeds: a partial task is not measured yet)
    pool = {id(r): r for r in [*complete(grid.cells, rows), *([] if same else complete(full_grid.cells, full_rows)),
                               *complete(full_cells, resolved)]}
    claims = claim_rows(list(pool.values()))

    found = _found(full, full_grid.name, readout, few, grid.name, claims)
    lead = _in_short(full, readout, claims)
    out, path = ["## What we found", "", *([f"**In short.** {lead}", ""] if lead else []),
                 *(f"- {b}" for b in found), ""], None
    plot_cells = [c for c in full_cells if c.experiment == FULL_EXPS[0]]
    if plot_cells:
        models = sorted({Path(str(c.settings.get("model"))).name for c in plot_cells})
        k = sum(c.id in resolved for c in plot_cells)
        try:
            path = summary_plot(grid.summary["plot"], plot_cells, resolved, full_ref,
                                f"{', '.join(models)}, full SuperGLUE training sets ({FULL_EXPS[0]}: {k} of "
                                f"{len(plot_cells)} cells)")
        except ImportError:
            path, out = None, out + ["(matplotlib is not installed: no plot)", ""]
        if path is not None:
            out += [f"![score per task and method, full training sets]"
                    f"({Path(os.path.relpath(path, grid.report.parent)).as_posix()})", "",
                    f"Best validation score per task on the full training sets ({', '.join(models)}, experiment "
                    f"`{FULL_EXPS[0]}`), mean ± std over seeds (the number above a bar = seeds finished); dashed "
                    "line: the best constant answer.", ""]
    legend = ("Best validation score, mean ± std over seeds (seeds finished / planned); **≤c** = at or below the "
              "best constant, the score of always answering the single best label on the validation set "
              "(`python benchmarks/reference_scores.py`); 1 ex. = 100 / n, one validation example's weight in "
              "accuracy (one question's in exact match for MultiRC); "
              f"{DASH} = not run yet; an empty field is not in the grid.")
    if full_cells:
        link = "" if same else (f" Per-experiment tables: [{full_grid.report.name}]"
                                f"({Path(os.path.relpath(full_grid.report, grid.report.parent)).as_posix()}).")
        out += [f"## Full SuperGLUE training sets (grid `{full_grid.name}`)", "",
                legend + f" Rests on {full['done']} of {full['total']} cells"
                + (f" ({_copied(full)}, which the grid copies instead of training them)" if full["copied"] else "")
                + f"; {full['total'] - full['done']} not run yet." + link, "", *full_lines, ""]
        if (full_grid.summary or {}).get("note"):
            out += [full_grid.summary["note"], ""]
    if readout_cells and same:
        out += [f"## Readout: the residual prompt against the probe of its own readout (experiment `{READOUT_EXP}`)",
                "", "Head-only = the frozen backbone's features through the same readout, a linear head trained "
                "alone (the probe). Verdict per row: the difference of the means against one example's worth of "
                f"points. Rests on {readout['done']} of {readout['total']} cells; "
                f"{readout['total'] - readout['done']} not run yet.", "", *ro_lines, "",
                _readout_verdict(readout) + (f" Rests on {_rests_on(readout['used'])}." if readout["used"] else ""),
                ""]
        if readout["effects"]:
            out += ["Mean readout (`auto`) minus the architecture's own (`native`), per method and task: "
                    + ", ".join(readout["effects"]) + ".", ""]
    if few_cells:
        out += [f"## FewGLUE, 32 training examples per task (grid `{grid.name}`, experiment `main`)", "",
                legend + f" Rests on {few['done']} of {few['total']} cells"
                + (f"; {few['total'] - few['done']} not run yet." if few["done"] < few["total"] else "."),
                "", *few_lines, ""]
    return out, claims, {"lead": lead, "found": found, "plot": path}


README_START, README_END = "<!-- resprompt report: start -->", "<!-- resprompt report: end -->"


def sync_readme(readme, grid, found, plot, lead: str = "") -> bool:
    """Replaces the text between ``README_START`` and ``README_END`` in ``readme`` with the report's "What we
    found" bullets, its summary plot and a link to the report, so the README's numbers are the build's.
    A README without both markers is left alone; returns whether the file changed."""
    path = Path(readme)
    try:
        text = path.read_text()
    except OSError:
        return False
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < i:
        return False
    rel = lambda p: Path(os.path.relpath(p, path.parent)).as_posix()  # noqa: E731
    block = [README_START, f"<!-- written by `resprompt bench {grid.source} --report-only`; edit "
             "src/resprompt/experiments/report.py, not this block -->", "",
             *([f"**In short.** {lead}", ""] if lead else []), *(f"- {b}" for b in found), ""]
    if plot is not None:
        block += [f"![score per task and method, full training sets]({rel(plot)})", ""]
    block += [f"Tables, the claims with the cells each verdict rests on, and the rules: [{grid.report.name}]"
              f"({rel(grid.report)}).", ""]
    new = text[:i] + "\n".join(block) + text[j:]
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


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


def _part_of(cell) -> str:
    """The part a cell belongs to: the value of its first axis (what `--only` selects a part by)."""
    first = next(iter(cell.axes.values()), None)
    return DASH if first is None else _v(first)


def cell_seconds(rec: dict) -> float:
    """The measured time of a finished cell: 0 for a copy of another cell; for a cell resumed after a cut-off
    sitting, the trainer's ``wall_time_s`` (training over every sitting) when it exceeds this sitting's
    ``cell_wall_s``; else ``cell_wall_s``."""
    if rec.get("reused_from"):
        return 0.0
    return max(float(rec.get("cell_wall_s") or 0), float(rec.get("wall_time_s") or 0))


def _parts(cells, rows) -> str:
    """Cells done and measured wall time per value of each cell's first axis (the parts a grid is run by:
    ``--only readout__task=CB``); blank when the experiment has one part."""
    parts = defaultdict(list)
    for c in cells:
        parts[_part_of(c)].append(c)
    if len(parts) < 2:
        return ""
    out = []
    for part, cs in parts.items():
        mine = [rows[c.id] for c in cs if c.id in rows]
        timed = [w for w in (cell_seconds(r.rec) for r in mine) if w > 0]
        out.append(f"{part} {len(mine)}/{len(cs)}"
                   + (f", {_hms(sum(timed))} ({statistics.fmean(timed) / 60:.1f} min)" if timed else ""))
    return "; ".join(out)


def not_run_lines(by_exp, rows) -> list[str]:
    """The cells not run yet, per experiment, as brace patterns, with the time they would take at the
    measured wall time per cell of the same part and method (else of the same part); cells of a part
    with no timed cell are counted apart."""
    out = []
    finished = {getattr(r, "key", None) for r in rows.values()} - {None}
    for e, cells in by_exp.items():
        missing = [c for c in cells if c.id not in rows and getattr(c, "key", None) not in finished]
        copies = sum(c.id not in rows for c in cells) - len(missing)  # the next run copies them without training
        if not missing:
            continue
        timed = defaultdict(list)
        for c in cells:
            r = rows.get(c.id)
            if r is not None and cell_seconds(r.rec) > 0:
                timed[(_part_of(c), c.settings.get("method"))].append(cell_seconds(r.rec))
                timed[(_part_of(c), None)].append(cell_seconds(r.rec))
        est, unknown = 0.0, 0
        for c in missing:
            got = timed.get((_part_of(c), c.settings.get("method"))) or timed.get((_part_of(c), None))
            if got:
                est += statistics.fmean(got)
            else:
                unknown += 1
        when = ("no part of theirs has a finished cell yet" if unknown == len(missing) else
                f"about {est / 3600:.1f} h at the measured time per cell of their part and method"
                + (f", plus {unknown} in parts with no finished cell yet" if unknown else ""))
        out.append(f"- `{e}`: {len(missing)} cells, {when}"
                   + ": " + ", ".join(f"`{p}`" for p in compact_ids([c.id for c in missing]))
                   + (f" ({copies} more have the settings of a finished cell: the next run copies them)"
                      if copies else ""))
    return ["## Not run yet", "", "The grid runs one cell at a time in the background across sittings; these "
            "have not had their turn.", "", *out, ""] if out else []


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
             "kept prompt), last = after the last step; 1 ex. = 100 / n, the weight of one validation example in accuracy (of one "
             "question in exact match for MultiRC; where the score also averages in an F1, CB and MultiRC, one "
             "example can move it by more or less). "
             f"{DASH} = not run yet.", ""]
    claims = None
    if grid.summary:
        top, claims, extra = summary_sections(grid, rows)
        lines += top + claims_section(None, claims) + ["## The grid", ""]
    lines += ["| experiment | cells done | failed | measured wall time (sum of cells) | per part: cells done, "
              "measured time (per cell) |", "|---|---|---|---|---|"]
    for e, cells in by_exp.items():
        mine = [rows[c.id] for c in cells if c.id in rows]
        wall = sum(cell_seconds(r.rec) for r in mine)
        reused = sum(1 for r in mine if r.rec.get("reused_from"))
        lines.append(f"| {e} | {len(mine)}/{len(cells)} | {sum(c.id in failed for c in cells)} | {_hms(wall)}"
                     + (f" ({reused} reused from identical cells)" if reused else "") + f" | {_parts(cells, rows)} |")
    hw = sorted({json.dumps(r.rec.get("hardware", {}), sort_keys=True) for r in rows.values()})
    vs = sorted({json.dumps(r.rec.get("versions", {}), sort_keys=True) for r in rows.values()})
    lines += ["", "Hardware: " + ("; ".join(
        f"{h.get('gpu') or h.get('cpu')} ({h.get('cores')} cores, torch threads: {h.get('torch_threads')})"
        for h in map(json.loads, hw)) or DASH),
        "Versions: " + ("; ".join(", ".join(f"{k} {v}" for k, v in json.loads(x).items()) for x in vs) or DASH), ""]
    lines += not_run_lines(by_exp, rows)
    if grid.notes:
        lines += ["## Notes on this grid", "", *(f"- {n}" for n in grid.notes), ""]
    if claims is None:
        lines += claims_section(complete(grid.cells, rows))
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
    if grid.summary and grid.summary.get("readme"):
        sync_readme(grid.summary["readme"], grid, extra["found"], extra["plot"], extra["lead"])
    return report
