"""The baseline family among a run's records: which points are family members, and the two fronts
the search is judged by (``nas.stages.family_planning`` plans the family; this reads what was trained).

A family member is a warm-start trial of the study or a baseline trained outside it; either way its
metrics carry ``family: <member name>``. The *searched* front leaves the family's warm-start trials
out, so it shows what the search found beyond the designs it was handed.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from nas.results.pareto import DICE_MACS, Objective, ParetoFront, pareto_front
from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

FAMILY_KEY = "family"  # metrics key (and the trial's user attr): the member name


def family_name(record: TrialRecord) -> str | None:
    """``family-resunet-m1`` for a family member, else None."""
    name = record.result.provenance.get(FAMILY_KEY)
    return str(name) if name else None


def family_records(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if family_name(r) is not None]


def searched_records(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The search's own trials: no family member, no baseline preset, no compressed variant."""
    return [r for r in records if r.kind == RecordKind.SEARCH and family_name(r) is None]


def family_fronts(records: Iterable[TrialRecord],
                  objectives: Sequence[Objective] = DICE_MACS) -> tuple[ParetoFront, ParetoFront]:
    """(searched front, family front) of a run's records (study trials plus ``baseline_records``)."""
    records = list(records)
    return pareto_front(searched_records(records), objectives), pareto_front(family_records(records), objectives)
