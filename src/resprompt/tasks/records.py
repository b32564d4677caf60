"""Validating task records: where a record came from, typed field access, label lookup.

Every record read by ``tasks.data`` carries ``__file__`` and ``__line__`` (1-based), so that a
problem found later, while a task turns records into instances, names ``file:line``, the field, the
value and what was expected. Every problem the user can fix raises ``DataError`` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Sequence


class DataError(ValueError):
    """A problem with the user's data or data location (file:line, field, value, expected)."""


def where(rec: dict) -> str:
    """``file:line`` of a record read by this module (or ``<records>`` for in-memory ones)."""
    return f"{rec.get('__file__', '<records>')}:{rec.get('__line__', '?')}"


def need(rec: dict, name: str, kind: type | tuple = str, ctx: str = ""):
    """Field ``name`` of ``rec`` (ctx: path prefix for nested fields); DataError if missing/wrong type."""
    if not isinstance(rec, dict) or name not in rec or rec[name] is None:
        raise DataError(f"{ctx or where(rec)}: field '{name}' missing")
    val = rec[name]
    if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{ctx or where(rec)}: field '{name}' has value {val!r}, expected {expected}")
    return val


def label_index(value, labels: Sequence, loc: str, field: str = "label") -> int:
    """Index of ``value`` in ``labels``. Bool label sets ("False","True") accept booleans, 0/1
    and the strings true/false in any case; other sets accept the exact value or a unique
    case-insensitive string match."""
    labels = tuple(labels)
    if labels == ("False", "True"):
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int) and value in (0, 1):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return int(value.strip().lower() == "true")
    elif not isinstance(value, bool):
        if value in labels:
            return labels.index(value)
        if str(value) in labels:
            return labels.index(str(value))
        low = [str(x).lower() for x in labels]
        if low.count(str(value).strip().lower()) == 1:
            return low.index(str(value).strip().lower())
    raise DataError(f"{loc}: {field} {value!r} not in {labels}")
