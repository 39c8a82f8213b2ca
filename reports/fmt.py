"""Text formatting shared by the report sections: escaping, SI prefixes, fixed digits, record kinds."""
from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable, Mapping

from nas.results.records import TrialRecord
from nas.results.trial_result import RecordKind

# record kind -> (legend label, plotly marker symbol, matplotlib marker)
KINDS = {RecordKind.SEARCH: ("search", "circle", "o"), RecordKind.COMPRESSED: ("compressed", "diamond", "D"),
         RecordKind.PRESET: ("baseline preset", "star", "*")}


def scale(values: Iterable[float]) -> tuple[float, str]:
    """Divisor and SI prefix so the largest value reads as a small number (1.2 G, 340 M, 12 k)."""
    top = max((abs(v) for v in values), default=0.0)
    for divisor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= divisor:
            return divisor, prefix
    return 1.0, ""


def human(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    divisor, prefix = scale([value])
    text = f"{value / divisor:.3g}" if divisor > 1 else f"{value:g}"
    return f"{text} {prefix}{unit}".rstrip()


def fixed(value: Any, digits: int) -> str:
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def esc(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    return html.escape(str(value), quote=True)


def kv_table(items: Mapping[str, Any], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items())
    return f'<table class="{cls}">{rows}</table>'


def param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def arch_summary(record: TrialRecord) -> str:
    """One line from the spec dict (widths first), else the sampled params: readable in a hover."""
    spec = record.spec or {}
    if not spec:
        return ", ".join(f"{k}={param_text(v)}" for k, v in record.params.items())
    parts = []
    for key in ("encoder_widths", "decoder_widths"):
        if isinstance(spec.get(key), list):
            parts.append(f"{key.split('_')[0]} {'-'.join(map(str, spec[key]))}")
    parts += [f"{k}={param_text(v)}" for k, v in spec.items()
              if k not in ("encoder_widths", "decoder_widths", "schema_version")]
    return ", ".join(parts)


def small_stratum(record: TrialRecord) -> Mapping[str, Any] | None:
    """The validation quality block of the small objects, when measured."""
    strata = record.quality().get("size_strata")
    stratum = strata.get("small") if isinstance(strata, Mapping) else None
    return stratum if isinstance(stratum, Mapping) else None


def small_dice(record: TrialRecord) -> float | None:
    value = (small_stratum(record) or {}).get("dice")
    return float(value) if isinstance(value, (int, float)) else None
