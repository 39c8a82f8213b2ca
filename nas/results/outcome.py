"""How a trial ended, as enums: its state, why a pruned trial stopped, why a failed trial failed.

The study stores the enum values beside the one-line message (user attrs ``stop_reason`` and
``failure_kind``); studies written before these attrs existed are read by the message's prefix
(``classify_legacy``), so an old run directory still reports the same thing.
"""
from __future__ import annotations

from enum import Enum

STOP_REASON_ATTR = "stop_reason"  # user attr holding a StopReason value (PRUNED trials)
FAILURE_KIND_ATTR = "failure_kind"  # user attr holding a FailureKind value (FAIL trials)


class TrialState(str, Enum):
    """The study's trial states (the names Optuna uses, so stored strings map one to one)."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"
    RUNNING = "RUNNING"
    WAITING = "WAITING"

    def __str__(self) -> str:
        return self.value


class StopReason(str, Enum):
    """Why a PRUNED trial never finished: none of these is a fault of the architecture's code."""

    EARLY_STOPPED = "early_stopped"  # cost-aware successive halving at a rung
    SCHEDULER = "scheduler"  # a Ray Tune scheduler stopped it
    DUPLICATE = "duplicate"  # the same sampled params as a finished (or running) trial
    INFEASIBLE = "infeasible"  # over a --max-* limit, too deep for the image size, or a restriction conflict
    BUDGET = "budget"  # a family warm-start member not started: the warm start had used its share of --timeout

    def __str__(self) -> str:
        return self.value


class FailureKind(str, Enum):
    """Why a FAIL trial failed; STALE and INTERRUPTED trials are queued again once."""

    ERROR = "error"  # an exception in building, costing or training
    OUT_OF_MEMORY = "out_of_memory"  # CUDA or host memory
    DIVERGED = "diverged"  # NaN/inf loss
    STALE = "stale"  # its process died (kill -9, power loss)
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM
    NO_OBJECTIVES = "no_objectives"  # finished but without finite objective values

    def __str__(self) -> str:
        return self.value

    @property
    def retried(self) -> bool:
        """Lost through no fault of its own: the search queues the same params once more."""
        return self in (FailureKind.STALE, FailureKind.INTERRUPTED)


# Message prefixes written by the engine before the enums were stored (and still written as text).
_LEGACY_STOPS = (("early-stopped", StopReason.EARLY_STOPPED), ("stopped by the ray scheduler", StopReason.SCHEDULER),
                 ("duplicate of trial", StopReason.DUPLICATE), ("infeasible", StopReason.INFEASIBLE),
                 ("warm start past", StopReason.BUDGET))
_LEGACY_FAILURES = (("stale", FailureKind.STALE), ("interrupted", FailureKind.INTERRUPTED),
                    ("out of memory", FailureKind.OUT_OF_MEMORY), ("diverged", FailureKind.DIVERGED),
                    ("no objective values", FailureKind.NO_OBJECTIVES),
                    ("non-finite objective values", FailureKind.NO_OBJECTIVES))


def classify_legacy(state: TrialState, message: str | None) -> StopReason | FailureKind | None:
    """The enum an old study's message stands for (None for COMPLETE/RUNNING/WAITING or no message)."""
    text = (message or "").strip().lower()
    if state == TrialState.PRUNED:
        return next((reason for prefix, reason in _LEGACY_STOPS if text.startswith(prefix)),
                    StopReason.INFEASIBLE if text else None)
    if state == TrialState.FAIL:
        return next((kind for prefix, kind in _LEGACY_FAILURES if text.startswith(prefix)), FailureKind.ERROR)
    return None
