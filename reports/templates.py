"""The page's fixed text: CSS and the small inline script (plots, hover text, click-to-select)."""
from __future__ import annotations

import json
import math
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f0f0f0;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pareto{background:#fff3f3}tr.selected,tr.selected td{background:#ffe9a8!important;outline:2px solid #e0a800}
.mark{color:#d62728;font-weight:bold;white-space:nowrap}
.fail{color:#a00;white-space:pre-wrap;max-width:28em;font-size:12px}.arch{font-size:12px;max-width:30em}
.box{border:1px solid #bbb;background:#fafafa;padding:.3em 1em;margin:1em 0}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plot{flex:1 1 560px;min-width:380px;min-height:380px}
.note,.empty{font-style:italic;color:#555}.bar{display:inline-block;height:.8em;background:#1f77b4;margin-right:.4em}
.cards{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #bbb;border-radius:6px;padding:.5em 1em;
flex:1 1 520px;background:#fcfcfc}.card h3{margin:.3em 0}.card table{margin:.3em 0 .6em}
.card .cols{display:flex;flex-wrap:wrap;gap:1em}code,pre{background:#f3f3f3;font-size:12px}
pre{padding:.4em;white-space:pre-wrap;word-break:break-all}img.overlay{max-width:100%;image-rendering:pixelated}
.tablewrap{max-height:70vh;overflow:auto}thead th{position:sticky;top:0}
"""

SCRIPT = """
(function () {
  var P = JSON.parse(document.getElementById('report-data').textContent);
  var H = P.hover;
  function select(n) {
    var old = document.querySelectorAll('tr.selected');
    for (var i = 0; i < old.length; i++) old[i].classList.remove('selected');
    var row = document.getElementById('trial-' + n);
    if (!row) return;
    row.classList.add('selected');
    row.scrollIntoView({block: 'center'});
  }
  window.selectTrial = select;
  Object.keys(P.plots).forEach(function (id) {
    var p = P.plots[id], div = document.getElementById(id);
    if (!div) return;
    p.traces.forEach(function (t) {
      if (t.customdata && t.hovertemplate) {
        t.text = t.customdata.map(function (n) { return n === null ? '' : (H[n] || ('trial ' + n)); });
      }
    });
    Plotly.newPlot(div, p.traces, p.layout, {responsive: true, displaylogo: false});
    div.on('plotly_click', function (e) {
      var pt = e && e.points && e.points[0];
      if (pt && pt.customdata !== null && pt.customdata !== undefined) select(pt.customdata);
    });
  });
  document.body.setAttribute('data-plots-ready', String(Object.keys(P.plots).length));
})();
"""


def _clean(value: Any) -> Any:
    """NaN/inf -> null: JSON has no NaN, and a missing value should read as a gap, not break the page."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_script(payload: Any, element_id: str = "report-data") -> str:
    """JSON in a non-executed script element; ``</`` is escaped so no string can close the tag."""
    text = json.dumps(_clean(payload), separators=(",", ":"), sort_keys=True, allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the plotly package (about 4.8 MB): the page stays offline."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
