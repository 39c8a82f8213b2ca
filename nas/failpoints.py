"""Fault injection for the kill -9 tests: ``NAS_FAILPOINT=name[:n]`` kills this process (SIGKILL)
the n-th time (default first) it passes ``failpoint(name)``.

A named point sits where a crash would hurt most (between writing a checkpoint and swapping it in,
between the two renames of a folder swap, between the table and the report). Unset, it costs one
dictionary look-up.
"""
from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    wanted = os.environ.get("NAS_FAILPOINT")
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
