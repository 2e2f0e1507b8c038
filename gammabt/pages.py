"""What every HTML page gammabt writes shares: Jinja2 with autoescape, Plotly charts
whose script is saved once beside the pages, number formats, atomic writes.

Pages work offline from ``file://``: the only script they load is
``plotly-<version>.min.js`` in the same folder (or the folder above for run pages),
written by :func:`write_plotlyjs`. Text from runs (labels, strategy names, parameters)
is escaped by Jinja2; names inside charts are HTML-escaped before they reach Plotly,
which renders a small HTML subset in labels.
"""

from __future__ import annotations

import html
import math
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from plumbing.atomic import write_text_atomic

__all__ = ["PERCENT_KEYS", "USD_KEYS", "fig_html", "fmt_metric", "plotlyjs_name",
           "render", "write_plotlyjs"]

PERCENT_KEYS = frozenset({
    "total_return", "cagr", "volatility_ann", "max_drawdown", "win_rate", "best_day",
    "worst_day", "benchmark_total_return", "benchmark_cagr", "benchmark_volatility_ann",
    "benchmark_max_drawdown", "alpha_ann", "trade_win_rate", "max_margin_usage",
    "gross_exposure_mean", "gross_exposure_max", "net_exposure_mean"})
"""Metrics that are fractions, shown as percentages."""

USD_KEYS = frozenset({"avg_trade_pnl", "best_trade_pnl", "worst_trade_pnl", "final_value",
                      "fees_paid_usd", "funding_paid_usd", "funding_received_usd",
                      "borrow_paid_usd"})
"""Metrics in USD (also every ``pnl:<instrument>`` row)."""


def fmt_metric(key: str, value: Any) -> str:
    """Display text of one metric value (``n/a`` for a missing or undefined one)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,d}"
    if not isinstance(value, float):
        return str(value)
    if key in PERCENT_KEYS:
        return f"{value * 100:.2f}%"
    if key in USD_KEYS or key.startswith("pnl:"):
        return f"{value:,.2f}"
    return f"{value:.4f}"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gammabt", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    """Render ``gammabt/templates/<template>`` with autoescape on."""
    return _env().get_template(template).render(**context)


def plotlyjs_name() -> str:
    """File name of the bundled plotly.js, versioned so pages never load another one."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


def write_plotlyjs(folder: str | Path) -> Path:
    """Save plotly.js into ``folder`` once (atomically) and return its path."""
    from plotly.offline import get_plotlyjs

    folder = Path(folder)
    path = folder / plotlyjs_name()
    if path.is_file() and path.stat().st_size > 0:
        return path
    write_text_atomic(path, get_plotlyjs())
    return path


def esc(text: Any) -> str:
    """Text for a Plotly label: shown literally, never read as markup."""
    return html.escape(str(text), quote=False)


def fig_html(fig: Any, div_id: str, height: int = 420) -> str:
    """A Plotly figure as a ``<div>`` plus its script, without plotly.js itself."""
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      template="plotly_white", legend={"orientation": "h", "y": -0.15})
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
