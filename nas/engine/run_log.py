"""The run's log file: full tracebacks of failed trials go to ``<out>/logs/search.log``, not the terminal.

A failed trial prints one line on the console (its reason, from ``nas.engine.trial.failure_reason``);
what a developer needs to debug it, the traceback, is logged to ``TRIAL_LOGGER`` and lands in the
file. Optuna logs the same failure with its traceback through its own logger; inside ``run_log`` that
logger writes to the file too, and its terminal handler is set aside (restored on exit). Only
``logging`` is touched here: no Optuna import. A process outside ``run_log`` (a Ray worker) appends
its failed trial's traceback to the same file with ``append_traceback``.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOG_FILE = Path("logs") / "search.log"
TRIAL_LOGGER = "nas.search"  # failed trials: the one-line reason and the traceback (exc_info)
_LIBRARY_LOGGERS = ("optuna",)  # their terminal handlers are set aside: tracebacks belong in the file


def trial_log() -> logging.Logger:
    return logging.getLogger(TRIAL_LOGGER)


def _terminal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


@contextmanager
def run_log(out: Path) -> Iterator[Path]:
    """Inside the block, failed-trial tracebacks (ours and Optuna's) are appended to ``out/logs/search.log``."""
    path = Path(out) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
    ours = trial_log()
    saved = (ours.level, ours.propagate)
    ours.setLevel(logging.INFO)
    ours.propagate = False  # never to the terminal through the root logger
    ours.addHandler(handler)
    set_aside = []
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for existing in [h for h in library.handlers if _terminal(h)]:
            library.removeHandler(existing)
            set_aside.append((library, existing))
        library.addHandler(handler)
    try:
        yield path
    finally:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        for library, existing in set_aside:
            library.addHandler(existing)
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        ours.propagate = saved[1]
        handler.close()


def append_traceback(out: Path, what: str, error: BaseException) -> None:
    """Append ``error``'s traceback to ``out/logs/search.log`` (a Ray worker's failed trial); a worker on a
    machine that cannot reach the run directory skips it (the driver's console line says what failed)."""
    try:
        path = Path(out) / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {os.getpid()} {TRIAL_LOGGER} ERROR: {what} failed\n{text}")
    except OSError:
        pass
