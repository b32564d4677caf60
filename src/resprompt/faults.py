"""Fault injection for the kill -9 soak (``benchmarks/soak_resume.py``); inert unless asked for.

``RESPROMPT_FAULT=<point>:<n>`` kills the process with SIGKILL the n-th time it reaches ``point``
(``point(name)`` calls sit at the moments a crash is most harmful: inside a folder write, between
the two renames of a folder swap, after an optimizer step, in an evaluation, after best/ is saved).
"""

from __future__ import annotations

import os
import signal

ENV = "RESPROMPT_FAULT"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Kills this process here if ``RESPROMPT_FAULT`` names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
