"""What an optimization says: statistics of the winner and ``summary.html``.

The page is rendered by Jinja2 with autoescaping; its charts are Plotly divs that load
``plotly.min.js`` written beside the page (no CDN, works offline).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from gammabt.overfit import (
    SIGNIFICANT_DSR,
    DSRResult,
    PBOResult,
    deflated_sharpe_of,
    probability_of_overfitting,
)
from plumbing.atomic import write_text_atomic

TOP_K = 10


@dataclass(frozen=True)
class WinnerStats:
    """DSR and PBO of a sweep (either may be None with the reason in ``notes``)."""

    dsr: DSRResult | None
    pbo: PBOResult | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"notes": list(self.notes)}
        if self.dsr is not None:
            out["dsr"] = {**asdict(self.dsr), "significant": self.dsr.significant}
        if self.pbo is not None:
            out["pbo"] = {"pbo": self.pbo.pbo, "n_blocks": self.pbo.n_blocks,
                          "n_splits": self.pbo.n_splits, "n_trials": self.pbo.n_trials,
                          "n_obs": self.pbo.n_obs,
                          "median_degradation": self.pbo.degradation,
                          "prob_loss": self.pbo.prob_loss}
        return out


def winner_stats(matrix: pd.DataFrame, winner: int | None, *, n_blocks: int = 16,
                 ) -> WinnerStats:
    """DSR of ``winner`` (a column of the days x trials ``matrix``) and PBO of the sweep.

    PBO needs at least two trials and ``2 * n_blocks`` days; with fewer days the block
    count is halved (keeping it even) down to 2, and the note says so.
    """
    notes: list[str] = []
    dsr = pbo = None
    values = matrix.to_numpy(dtype=float)
    if winner is None or matrix.shape[0] < 3:
        notes.append("DSR not computed: no feasible winner or fewer than 3 days")
    else:
        column = list(matrix.columns).index(winner)
        try:
            dsr = deflated_sharpe_of(values, best=column)
        except ValueError as exc:
            notes.append(f"DSR not computed: {exc}")
    blocks = n_blocks
    while blocks > 2 and matrix.shape[0] < 2 * blocks:
        blocks -= 2
    if blocks != n_blocks:
        notes.append(f"PBO with S={blocks} blocks: {matrix.shape[0]} days are too few for "
                     f"S={n_blocks}")
    try:
        pbo = probability_of_overfitting(values, n_blocks=blocks)
    except ValueError as exc:
        notes.append(f"PBO not computed: {exc}")
    return WinnerStats(dsr=dsr, pbo=pbo, notes=tuple(notes))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "-inf" if value < 0 else "inf"
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<script src="plotly.min.js"></script>
<style>body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f0f0f0}.bad{color:#b00}.good{color:#070}</style></head>
<body>
<h1>{{ title }}</h1>
<p>{{ n_trials }} trials, objective <b>{{ objective }}</b>{% if constraints %}, constraints
{{ constraints|join(", ") }}{% endif %}. {{ n_feasible }} feasible.</p>
<h2>Is the winner real?</h2>
{% if dsr %}<p>Deflated Sharpe ratio of the winner (trial {{ dsr.best_trial }}):
<b class="{{ 'good' if dsr.significant else 'bad' }}">{{ dsr.value }}</b>
({{ 'significant' if dsr.significant else 'not significant' }} at {{ threshold }}).
Inputs: daily Sharpe {{ dsr.sharpe }}, expected maximum under no skill SR0 {{ dsr.sr0 }},
N = {{ dsr.n_trials }} trials, variance of their Sharpe ratios {{ dsr.var_sharpe }},
T = {{ dsr.n_obs }} days, skewness {{ dsr.skew }}, raw kurtosis {{ dsr.kurt }}.</p>{% endif %}
{% if pbo %}<p>Probability of backtest overfitting (CSCV, S = {{ pbo.n_blocks }} blocks,
{{ pbo.n_splits }} splits, {{ pbo.n_obs }} days): <b>{{ pbo.pbo }}</b>; median
degradation of the chosen trial's daily Sharpe out of sample {{ pbo.median_degradation }};
probability of an out-of-sample loss {{ pbo.prob_loss }}.</p>{% endif %}
{% for note in notes %}<p><i>{{ note }}</i></p>{% endfor %}
{% if best_folder %}<p>Best configuration re-run: <a href="{{ best_folder }}/tearsheet.html">
{{ best_folder }}</a></p>{% endif %}
<h2>Top {{ top|length }}</h2>
<table><tr>{% for c in top_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in top %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% for chart in charts %}<div>{{ chart|safe }}</div>{% endfor %}
{% if folds %}<h2>Walk forward</h2>
<table><tr>{% for c in fold_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in folds %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endif %}
</body></html>
"""


def _charts(trials: pd.DataFrame, objective: str, folds: pd.DataFrame | None) -> list[str]:
    import plotly.graph_objects as go

    charts = []
    params = [c for c in trials.columns if c.startswith("param.")]
    finite = trials[np.isfinite(trials["objective"])]
    fig = go.Figure(go.Scatter(x=finite["trial"], y=finite["objective"], mode="markers",
                               marker={"color": np.where(finite["feasible"], "#1f77b4",
                                                         "#bbbbbb")}))
    fig.update_layout(title=f"{objective} by trial", xaxis_title="trial",
                      yaxis_title=objective, height=350)
    charts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    for a, b in zip(params, params[1:], strict=False):
        pivot = finite.pivot_table(index=a, columns=b, values="objective", aggfunc="max")
        if pivot.size < 2 or pivot.shape[0] > 60 or pivot.shape[1] > 60:
            continue
        fig = go.Figure(go.Heatmap(z=pivot.to_numpy(), x=[str(x) for x in pivot.columns],
                                   y=[str(y) for y in pivot.index], colorscale="Viridis"))
        fig.update_layout(title=f"best {objective}: {a[6:]} x {b[6:]}", xaxis_title=b[6:],
                          yaxis_title=a[6:], height=400)
        charts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    if folds is not None and not folds.empty:
        fig = go.Figure([go.Bar(name="in sample", x=folds["fold"], y=folds["is_objective"]),
                         go.Bar(name="out of sample", x=folds["fold"],
                                y=folds["oos_objective"])])
        fig.update_layout(title=f"{objective} in and out of sample per fold", height=350)
        charts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    return charts


def write_summary(folder: Path, trials: pd.DataFrame, stats: WinnerStats, *, objective: str,
                  constraints: list[str], title: str, best_folder: str | None = None,
                  folds: pd.DataFrame | None = None) -> Path:
    """Write ``summary.html``, ``plotly.min.js`` and ``stats.json`` into ``folder``."""
    from plotly.offline import get_plotlyjs

    js = folder / "plotly.min.js"
    if not js.exists():
        write_text_atomic(js, get_plotlyjs())
    params = [c for c in trials.columns if c.startswith("param.")]
    shown = ["trial", *params, "objective", "feasible", "sharpe", "total_return",
             "max_drawdown", "n_trades", "engine"]
    shown = [c for c in dict.fromkeys(shown) if c in trials.columns]
    top = trials.sort_values(["objective", "trial"], ascending=[False, True]).head(TOP_K)
    dsr = None
    if stats.dsr is not None:
        d = stats.dsr
        dsr = {"value": _fmt(d.dsr), "significant": d.significant, "sharpe": _fmt(d.sharpe),
               "sr0": _fmt(d.sr0), "n_trials": d.n_trials, "var_sharpe": f"{d.var_sharpe:.3g}",
               "n_obs": d.n_obs, "skew": _fmt(d.skew), "kurt": _fmt(d.kurt),
               "best_trial": d.best}
    pbo = None
    if stats.pbo is not None:
        p = stats.pbo
        pbo = {"pbo": _fmt(p.pbo), "n_blocks": p.n_blocks, "n_splits": p.n_splits,
               "n_obs": p.n_obs, "median_degradation": _fmt(p.degradation),
               "prob_loss": _fmt(p.prob_loss)}
    fold_columns = [] if folds is None else [c for c in folds.columns]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(_TEMPLATE).render(
        title=title, n_trials=len(trials), objective=objective, constraints=constraints,
        n_feasible=int(trials["feasible"].sum()) if len(trials) else 0, dsr=dsr, pbo=pbo,
        threshold=SIGNIFICANT_DSR, notes=stats.notes, best_folder=best_folder,
        top_columns=shown, top=[[_fmt(v) for v in row] for row in top[shown].itertuples(
            index=False)],
        charts=_charts(trials, objective, folds) if len(trials) else [],
        fold_columns=fold_columns,
        folds=[] if folds is None else [[_fmt(v) for v in row]
                                        for row in folds.itertuples(index=False)])
    path = folder / "summary.html"
    write_text_atomic(path, html)
    write_text_atomic(folder / "stats.json",
                      json.dumps(stats.as_dict(), indent=2, default=float) + "\n")
    return path
