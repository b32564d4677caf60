"""Reading task data: SuperGLUE / FewGLUE files, the Hugging Face hub, user files; few-shot sampling.

Where the files are:
- official SuperGLUE layout ``<data_dir>/<Task>/{train,val,test}.jsonl``; the diagnostics are
  ``<data_dir>/AX-b/AX-b.jsonl`` and ``<data_dir>/AX-g/AX-g.jsonl`` (split "val" or "test");
- FewGLUE ``<fewglue_dir>/<Task>/{train,dev32}.jsonl``.
  ``load_records`` reads "dev32" from FewGLUE, and "train" from FewGLUE when ``fewglue_dir`` is
  given; every other split comes from ``data_dir``. Unset folders fall back to ``DEFAULT_DATA_DIR``
  / ``DEFAULT_FEWGLUE_DIR`` (env ``RESPROMPT_DATA_DIR`` / ``RESPROMPT_FEWGLUE_DIR``, else
  ``../shared/data/{superglue,fewglue}`` next to the current directory or the repository).
- ``hub=True``: ``datasets.load_dataset("super_glue", ...)`` converted to the official layout.

Every record gets ``__file__`` and ``__line__`` (1-based) so that validation errors, raised
later by ``Task.instances``, can name ``file:line``. Every problem the user can fix raises
``DataError`` (a ``ValueError``) naming the file:line, the field, the value and what was expected.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from .records import DataError, where

SPLITS = ("train", "val", "test", "dev32")
FIELD_SIZE_LIMIT = 2**31 - 1  # csv's default (131072 characters) is smaller than a long document
DIAGNOSTICS = ("AX-b", "AX-g")


def _default_dir(env: str, sub: str) -> Path | None:
    if os.environ.get(env):
        return Path(os.environ[env])
    bases = [Path.cwd()] + list(Path(__file__).resolve().parents)
    for base in bases:
        cand = (base / ".." / "shared" / "data" / sub).resolve()
        if cand.is_dir():
            return cand
    return None


DEFAULT_DATA_DIR = _default_dir("RESPROMPT_DATA_DIR", "superglue")
DEFAULT_FEWGLUE_DIR = _default_dir("RESPROMPT_FEWGLUE_DIR", "fewglue")


# ----------------------------------------------------------------------------- readers
def read_jsonl(path) -> list[dict]:
    """JSON objects, one per non-blank line (a missing final newline is fine)."""
    path = Path(path)
    out = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    # split on "\n" only: U+2028, U+0085 and the like are valid inside JSON strings
    for no, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{no}: invalid JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        obj["__file__"], obj["__line__"] = str(path), no
        out.append(obj)
    return out


def read_csv(path) -> list[dict]:
    """Rows of a CSV file with a header line, or of a TSV file (name ending in .tsv).

    TSV is read as the GLUE loaders read it: split on tabs, no quote processing, so a text field
    with an unbalanced double quote stays one field of one row. A header naming a column twice is
    refused (one of the two would be lost).
    """
    path = Path(path)
    tsv = path.suffix.lower() == ".tsv"
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    reader, start = None, 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if tsv else ",", strict=not tsv,
                                    quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            header = reader.fieldnames or []
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise DataError(f"{path}:1: header names column(s) {', '.join(map(repr, dupes))} more than once")
            out = []
            start = 2
            for row in reader:
                # the row's first line: blank lines before it were skipped, quoted newlines are inside it
                start = reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str))
                if None in row:
                    raise DataError(f"{path}:{start}: more values than header columns {reader.fieldnames}")
                if any(v is None for v in row.values()):
                    missing = [k for k, v in row.items() if v is None]
                    raise DataError(f"{path}:{start}: field '{missing[0]}' missing (row too short)")
                row["__file__"], row["__line__"] = str(path), start
                out.append(row)
                start = reader.line_num + 1
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    except csv.Error as e:
        line = getattr(reader, "line_num", 0) or 1
        if "unexpected end of data" in str(e):
            raise DataError(f"{path}:{start}: a quoted field opened on line {start} is never closed "
                            "(unterminated '\"')") from e
        raise DataError(f"{path}:{line}: invalid CSV: {e}") from e
    return out


def read_records(path) -> list[dict]:
    """Rows of a user file by its extension: .csv / .tsv, else JSON lines."""
    return read_csv(path) if Path(path).suffix.lower() in (".csv", ".tsv") else read_jsonl(path)


# ----------------------------------------------------------------------------- official files
def _existing_splits(task_dir: Path, name: str) -> list[str]:
    if name in DIAGNOSTICS:
        return ["val", "test"] if (task_dir / f"{name}.jsonl").is_file() else []
    return [s for s in SPLITS if (task_dir / f"{s}.jsonl").is_file()]


def load_records(task, split: str, *, data_dir=None, fewglue_dir=None, hub: bool = False) -> tuple[list[dict], str]:
    """Records of ``task`` (a task name or an object with ``.name``) for ``split``; returns (records, source)."""
    name = task if isinstance(task, str) else task.name
    if split not in SPLITS:
        raise DataError(f"split {split!r} unknown, expected one of {SPLITS}")
    if name in DIAGNOSTICS and split not in ("val", "test"):
        raise DataError(f"{name} is evaluation only: split {split!r} does not exist (use 'val' or 'test')")
    if hub:
        return _from_hub(name, split)
    fewglue = split == "dev32" or (split == "train" and fewglue_dir is not None)
    base = (fewglue_dir or DEFAULT_FEWGLUE_DIR) if fewglue else (data_dir or DEFAULT_DATA_DIR)
    if base is None:
        kind = "FewGLUE" if fewglue else "SuperGLUE"
        raise DataError(f"no {kind} data folder given and none found (set RESPROMPT_"
                        f"{'FEWGLUE' if fewglue else 'DATA'}_DIR or pass the folder)")
    task_dir = Path(base) / name
    if not task_dir.is_dir():
        have = sorted(p.name for p in Path(base).iterdir() if p.is_dir()) if Path(base).is_dir() else []
        raise DataError(f"{task_dir}: no such folder" + (f"; tasks there: {', '.join(have)}" if have
                                                        else f" ({base} does not exist or is empty)"))
    path = task_dir / (f"{name}.jsonl" if name in DIAGNOSTICS else f"{split}.jsonl")
    if not path.is_file():
        have = _existing_splits(task_dir, name)
        raise DataError(f"{path}: split {split!r} not found; splits in {task_dir}: {', '.join(have) or 'none'}")
    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path}: no records (empty file)")
    return records, str(path)


def _from_hub(name: str, split: str) -> tuple[list[dict], str]:
    cfg = {"AX-b": "axb", "AX-g": "axg"}.get(name, name.lower())
    if split == "dev32":
        raise DataError("split 'dev32' is FewGLUE's and is not on the hub; pass fewglue_dir")
    hf_split = "test" if name in DIAGNOSTICS else {"val": "validation"}.get(split, split)
    desc = f"hub:super_glue/{cfg}/{hf_split}"
    try:
        import datasets

        rows = [dict(r) for r in datasets.load_dataset("super_glue", cfg, split=hf_split)]
    except Exception as e:  # offline, unknown config, network: all surface as one message
        raise DataError(f"{desc}: the Hugging Face hub is unreachable or the dataset failed to load "
                        f"({type(e).__name__}: {e}); pass data_dir / fewglue_dir to read local files") from e
    return _hub_to_official(name, rows, desc), desc


_HUB_LABELS = {"CB": ("entailment", "contradiction", "neutral"), "RTE": ("entailment", "not_entailment"),
               "AX-b": ("entailment", "not_entailment"), "AX-g": ("entailment", "not_entailment")}


def _hub_to_official(name: str, rows: list[dict], desc: str) -> list[dict]:
    """HF ``super_glue`` rows -> the official jsonl layout (labels in their official representation)."""
    out: list[dict] = []
    grouped: dict = {}
    for no, r in enumerate(rows, 1):
        lab = r.pop("label", -1)
        if lab is not None and lab != -1:
            r["label"] = (_HUB_LABELS[name][lab] if name in _HUB_LABELS else lab if name == "COPA"
                          else bool(lab))
        if name == "WSC":
            r["target"] = {k: r.pop(k) for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
        if name == "AX-g":
            r.setdefault("pair_id", r["idx"])
        if name == "MultiRC":
            ix = r["idx"]
            p = grouped.setdefault(ix["paragraph"], {"idx": ix["paragraph"], "passage": {
                "text": r["paragraph"], "questions": []}, "__file__": desc, "__line__": no})
            qs = p["passage"]["questions"]
            if not qs or qs[-1]["idx"] != ix["question"]:
                qs.append({"idx": ix["question"], "question": r["question"], "answers": []})
            ans = {"idx": ix["answer"], "text": r["answer"]}
            if "label" in r:
                ans["label"] = int(r["label"])
            qs[-1]["answers"].append(ans)
            continue
        if name == "ReCoRD":
            ix = r["idx"]  # HF passages already have "@highlight" replaced; entities come as strings
            p = grouped.setdefault(ix["passage"], {"idx": ix["passage"], "passage": {
                "text": r["passage"], "entities": [{"text": t} for t in r["entities"]]},
                "qas": [], "__file__": desc, "__line__": no})
            p["qas"].append({"idx": ix["query"], "query": r["query"],
                             "answers": [{"text": a} for a in r.get("answers") or []]})
            continue
        r["__file__"], r["__line__"] = desc, no
        out.append(r)
    return out + list(grouped.values())


# ----------------------------------------------------------------------------- user data
def load_user_records(path, *, text_fields: list[str], label_field: str | None) -> list[dict]:
    """Rows of a user jsonl/csv/tsv file; every row must have the text fields (and the label field)."""
    if not 1 <= len(text_fields) <= 2:
        raise DataError(f"text_fields {list(text_fields)!r}: expected one or two field names")
    rows = read_records(path)
    if not rows:
        raise DataError(f"{path}: no records (empty file)")
    for row in rows:
        for f in [*text_fields, *([label_field] if label_field else [])]:
            if f not in row or row[f] is None:
                have = sorted(k for k in row if not k.startswith("__"))
                raise DataError(f"{where(row)}: field '{f}' missing (fields present: {', '.join(have)})")
        for f in text_fields:
            if not isinstance(row[f], str):
                raise DataError(f"{where(row)}: field '{f}' has value {row[f]!r}, expected a string")
            if not row[f].strip():
                raise DataError(f"{where(row)}: field '{f}' is empty")
        if label_field:
            _check_label(row, label_field)
    return rows


def _check_label(row: dict, label_field: str) -> None:
    """A label is a name, a whole number or a boolean: 1.0, NaN or a list would become a class of its own."""
    value = row[label_field]
    if isinstance(value, float) or not isinstance(value, (str, int)):
        raise DataError(f"{where(row)}: label field '{label_field}' has value {value!r}, expected a label name "
                        "or a whole number")
    if str(value).strip() == "":
        raise DataError(f"{where(row)}: label field '{label_field}' is empty")


def label_set(rows: Sequence[dict], label_field: str) -> list[str]:
    """The sorted distinct labels of ``rows``; two spellings of one label ("pos" / "Pos ") are an error."""
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(str(row[label_field]), row)
    seen: dict[str, str] = {}
    for label, row in first.items():
        key = label.strip().lower()
        if key in seen:
            other = first[seen[key]]
            raise DataError(f"{where(row)}: label {label!r} differs only in case or spaces from {seen[key]!r} "
                            f"({where(other)}): write one label one way")
        seen[key] = label
    return sorted(first)


# ----------------------------------------------------------------------------- few-shot
def few_shot(items: Sequence, k: int, seed: int, label_key: str | Callable | None = "label") -> list:
    """``k`` items per class, drawn with ``random.Random(seed)``; the result keeps the input order.

    ``label_key``: a dict key / attribute name, or a function of the item. Items whose label is
    None are skipped. When no item has a label at all (MultiRC / ReCoRD passages), or
    ``label_key`` is None, ``k`` items are drawn from the whole pool. Same inputs -> same output.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise DataError(f"few-shot k={k!r}: expected a whole number >= 1")

    def get(item):
        if label_key is None:
            return None
        if callable(label_key):
            return label_key(item)
        return item.get(label_key) if isinstance(item, dict) else getattr(item, label_key, None)

    labels = [get(x) for x in items]
    if all(lab is None for lab in labels):
        labels = ["<all>"] * len(items)
    pools: dict = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            pools.setdefault(lab if isinstance(lab, (str, int, bool, float)) else repr(lab), []).append(i)
    if not pools:
        raise DataError("few-shot: no examples to draw from")
    rng = random.Random(seed)
    chosen: list[int] = []
    for lab in sorted(pools, key=lambda x: (type(x).__name__, str(x))):
        if len(pools[lab]) < k:
            raise DataError(f"few-shot k={k}: class {lab!r} has only {len(pools[lab])} example(s)")
        chosen += rng.sample(pools[lab], k)
    return [items[i] for i in sorted(chosen)]
