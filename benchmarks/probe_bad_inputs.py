"""Probe the CLI with bad input, as a demanding user would: every case must end in exactly one
``resprompt: error:`` line, exit status 2, no traceback and no output folder left behind.

    python benchmarks/probe_bad_inputs.py [--json out.json]

Runs in one process (``resprompt.cli.main``) on a tiny random BERT with MiniLM's tokenizer and the
test fixtures; prints one row per case and the count of cases that break the rule (exit 1 if any).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _files(tmp: Path) -> dict[str, str]:
    """Bad data files, each named for what is wrong with it."""
    sep = "\u2028"
    files = {
        "malformed.jsonl": '{"s": "a", "y": "p"}\n{oops\n',
        "not_object.jsonl": '{"s": "a", "y": "p"}\n[1, 2]\n',
        "latin1.jsonl": None,
        "empty.jsonl": "\n\n",
        "missing_field.jsonl": '{"s": "a", "y": "p"}\n{"y": "n"}\n',
        "number_text.jsonl": '{"s": "a", "y": "p"}\n{"s": 5, "y": "n"}\n',
        "empty_label.csv": "s,y\na,p\nb,\n",
        "dup_header.csv": "s,y,s\na,p,b\n",
        "unterminated.csv": 's,y\na,p\n"b,n\n',
        "short_row.csv": "s,y\na\n",
        "long_row.csv": "s,y\na,p,extra\n",
        "one_label.jsonl": '{"s": "a", "y": "p"}\n{"s": "b", "y": "p"}\n',
        "train_ok.jsonl": f'{{"s": "a{sep}b", "y": "p"}}\n{{"s": "c", "y": "n"}}\n',
        "eval_new_label.jsonl": '{"s": "a", "y": "p"}\n{"s": "b", "y": "zzz"}\n',
        "bad.yaml": "lr: [unclosed\n",
        "unknown.yaml": "bogus: 1\n",
        "list.yaml": "- 1\n- 2\n",
    }
    for name, text in files.items():
        if text is None:
            (tmp / name).write_bytes('{"s": "caf\xe9"}\n'.encode("latin-1"))
        else:
            (tmp / name).write_text(text)
    return {name: str(tmp / name) for name in files}


def cases(model: str, data: str, tmp: Path) -> list[tuple[str, list[str]]]:
    f = _files(tmp)
    out = str(tmp / "out")
    base = ["train", "--model", model, "--task", "CB", "--data-dir", data, "--output-dir", out, "--max-steps", "2",
            "--no-progress", "--prompt-length", "3", "--bottleneck", "8"]
    custom = ["train", "--model", model, "--task", "custom", "--text-fields", "s", "--label-field", "y",
              "--output-dir", out, "--max-steps", "2", "--no-progress", "--prompt-length", "3", "--bottleneck", "8"]
    bad_values = [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--lr-head", "0"), ("--weight-decay", "-1"),
                  ("--max-grad-norm", "-1"), ("--warmup-steps", "-5"), ("--seed", "-1"), ("--epochs", "0"),
                  ("--batch-size", "0"), ("--dropout", "1.5"), ("--init-range", "nan"), ("--prompt-length", "0"),
                  ("--prompt-length", "600"), ("--method", "deep"), ("--schedule", "cosine"),
                  ("--report-to", "tensorbored"), ("--few-shot", "500"), ("--eval-split", "nope"),
                  ("--train-source", "web")]
    rows = [(f"{flag} {value}", base + [flag, value]) for flag, value in bad_values]
    rows += [
        ("unknown task", base + ["--task", "XYZ"]),
        ("missing data folder", base + ["--data-dir", str(tmp / "nope")]),
        ("model folder missing", base + ["--model", str(tmp / "no-model")]),
        ("unwritable output", base + ["--output-dir", "/proc/version/run"]),
        ("bad yaml", base + ["--config", f["bad.yaml"]]),
        ("unknown yaml key", base + ["--config", f["unknown.yaml"]]),
        ("yaml not a mapping", base + ["--config", f["list.yaml"]]),
        ("missing yaml", base + ["--config", str(tmp / "none.yaml")]),
    ]
    for name in ("malformed.jsonl", "not_object.jsonl", "latin1.jsonl", "empty.jsonl", "missing_field.jsonl",
                 "number_text.jsonl", "empty_label.csv", "dup_header.csv", "unterminated.csv", "short_row.csv",
                 "long_row.csv", "one_label.jsonl"):
        rows.append((f"custom train file {name}", custom + ["--train-file", f[name], "--eval-file", f["train_ok.jsonl"]]))
    rows.append(("custom eval label outside the training set",
                 custom + ["--train-file", f["train_ok.jsonl"], "--eval-file", f["eval_new_label.jsonl"]]))
    rows.append(("custom without --text-fields", ["train", "--model", model, "--task", "custom", "--train-file",
                                                  f["train_ok.jsonl"], "--output-dir", out]))
    rows += [
        ("eval: prompt folder missing", ["eval", "--model", model, "--prompt", str(tmp / "no-prompt"), "--task", "CB",
                                         "--data-dir", data]),
        ("export: bad format", ["export", "--prompt", str(tmp / "no-prompt"), "--format", "onnx", "--output", out]),
        ("predict: output is a folder", ["predict", "--model", model, "--prompt", str(tmp), "--input",
                                         f["train_ok.jsonl"], "--output", str(tmp)]),
    ]
    return rows


def probe(argv: list[str], out: Path) -> dict:
    from resprompt.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's own errors (unknown choice, missing argument)
            rc = e.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("resprompt: error:", "resprompt train: error:", "usage:",
                                                   "resprompt export: error:", "resprompt eval: error:"))]
    message = next((ln for ln in lines if "error:" in ln), lines[-1] if lines else "")
    ok = rc == 2 and "Traceback" not in err.getvalue() and len([ln for ln in errors if "error:" in ln]) == 1 \
        and not out.exists()
    return {"rc": rc, "ok": ok, "message": message[:160]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from soak_resume import tiny_backbone

    results = []
    with tempfile.TemporaryDirectory(prefix="resprompt-probe-") as t:
        tmp = Path(t)
        model = tiny_backbone(tmp / "tiny-bert")
        for name, argv in cases(model, str(ROOT / "tests" / "fixtures" / "superglue"), tmp):
            res = probe(argv, tmp / "out")
            results.append({"case": name, **res})
            print(f"{'ok ' if res['ok'] else 'BAD'} rc={res['rc']!s:4} {name:45s} {res['message']}")
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results)} cases, {len(bad)} break the rule")
    if a.json:
        from resprompt.io import write_json

        write_json(a.json, {"cases": len(results), "bad": len(bad), "results": results})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
