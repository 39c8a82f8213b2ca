"""The finalist-stage flags, the same in ``nas-search`` (after the trials) and ``nas-finalize`` (alone)."""
from __future__ import annotations

from typing import Any

from nas.cli.common import number
from nas.run.search_config import LIMITS


def add_final_flags(container: Any, *, finalists_default: int, finalists_help: str) -> None:
    """``--finalists``, ``--final-epochs``, ``--final-seeds``, checked with ``SearchConfig``'s ranges."""
    container.add_argument("--finalists", type=number(LIMITS["finalists"]), default=finalists_default, metavar="K",
                           help=finalists_help)
    container.add_argument("--final-epochs", type=number(LIMITS["final_epochs"]), default=None, metavar="N",
                           help="epochs of the final training (default: 3x the search's --epochs)")
    container.add_argument("--final-seeds", type=number(LIMITS["final_seeds"]), default=3, metavar="S",
                           help="training seeds per finalist (default 3): mean +- std and the interval need several")
