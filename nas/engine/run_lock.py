"""One search per run directory at a time: a second ``nas-search`` on the same ``--out`` refuses.

An advisory ``flock`` on ``<out>/.nas-search.lock``: the kernel drops it when the holder dies
(``kill -9`` included), so a stale lock never blocks a resume. Holding it also proves no other
process of this machine is working on the run's own storage, which makes every RUNNING trial in
it a lost one (``nas.engine.optuna_adapter.study.recover_lost_trials(local=True)``).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = ".nas-search.lock"


class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


def lock_run(out: Path) -> IO[str]:
    """Take the run directory's lock or raise ``RunLocked``; keep the returned handle open."""
    path = Path(out) / LOCK_NAME
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise RunLocked(f"another nas-search (pid {holder}) is running on {out}; wait for it to finish, "
                        "or add workers to the same study with --storage, or use another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
