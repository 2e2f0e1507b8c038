"""The report page of one run (``report.html`` beside ``tearsheet.html``) and the market
charts behind it, also drawn without a run by ``gammabt plot``.

Panels, each drawn only when the run has the data (the page lists what is missing
rather than showing an empty panel):

- price with the gamma flip, call and put walls, short-gamma regime shading and the
  strategy's entries and exits;
- GEX by strike (calls, puts, net) with spot, flip and walls marked, for the snapshot in
  force at the start, at the troughs of the largest drawdowns and at the first trade
  entries (small multiples);
- the estimated liquidation map: USD at risk by price and time, with the price path;
- basis: constant-maturity term structure over time, the annualized basis and funding,
  with dislocations (|basis z-score| >= 2) marked.

Times are UTC. Charts are Plotly; plotly.js is saved once per results folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gammabt.pages import esc, fig_html, fmt_metric, plotlyjs_name, render, write_plotlyjs
from plumbing.atomic import write_atomic
from plumbing.atomic import write_text_atomic as _write_text

__all__ = ["basis_figure", "gex_figure", "liq_figure", "price_figure", "snapshot_times",
           "write_figure_page", "write_report_page"]

MAX_PRICE_POINTS = 20_000
LIQ_COLUMNS = 160
LIQ_ROWS = 90
MAX_CURVE_POINTS = 600
MIN_DRAWDOWN = 0.005  # shallower troughs get no GEX snapshot of their own


def _close_series(bars: pd.DataFrame) -> pd.Series:
    return pd.Series(bars["close"].to_numpy(), index=pd.DatetimeIndex(bars["ts"]))


def _thin(series: pd.Series, limit: int = MAX_PRICE_POINTS) -> pd.Series:
    step = max(1, len(series) // limit)
    return series.iloc[::step]


def _segments(index: pd.DatetimeIndex, mask: np.ndarray) -> list[tuple[Any, Any]]:
    """Contiguous runs of ``mask`` as (first, last) stamps."""
    out = []
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        out.append((index[a], index[min(b, len(index) - 1)]))
    return out


def price_figure(bars: pd.DataFrame, summary: pd.DataFrame | None = None,
                 trades: pd.DataFrame | None = None, title: str = "Price") -> Any:
    """Close with flip/walls (step lines at each snapshot), short-gamma shading, trades."""
    import plotly.graph_objects as go

    close = _close_series(bars)
    shown = _thin(close)
    fig = go.Figure()
    fig.add_scatter(x=shown.index, y=shown.to_numpy(), mode="lines", name="close",
                    line={"color": "#222", "width": 1.2})
    if summary is not None and len(summary):
        s = summary.sort_values("ts")
        s = s[(s["ts"] >= close.index[0]) & (s["ts"] <= close.index[-1])]
        for col, color in (("gamma_flip", "#8e44ad"), ("call_wall", "#1e8449"),
                           ("put_wall", "#c0392b")):
            if col in s.columns and s[col].notna().any():
                fig.add_scatter(x=s["ts"], y=s[col].to_numpy(), mode="lines", name=col,
                                line={"shape": "hv", "color": color, "width": 1,
                                      "dash": "dash" if col != "gamma_flip" else "solid"})
        if "regime" in s.columns and len(s):
            regime = s.set_index("ts")["regime"].reindex(close.index, method="ffill")
            fig.update_layout(shapes=[
                {"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0,
                 "y1": 1, "fillcolor": "#e74c3c", "opacity": 0.08, "line": {"width": 0},
                 "layer": "below"}
                for a, b in _segments(close.index, (regime < 0).to_numpy())[:500]])
    if trades is not None and len(trades):
        for col, name, symbol, color in (("entry_ts", "entry", "triangle-up", "#2874a6"),
                                         ("exit_ts", "exit", "x", "#d35400")):
            at = pd.DatetimeIndex(trades[col])
            price = close.reindex(at, method="ffill")
            fig.add_scatter(x=at, y=price.to_numpy(), mode="markers", name=name,
                            marker={"symbol": symbol, "size": 8, "color": color})
    fig.update_layout(title=esc(title) + "<br><sup>red shading: short gamma (regime -1)</sup>",
                      xaxis_title="UTC time", yaxis_title="USD")
    return fig


def snapshot_times(bars: pd.DataFrame, equity: pd.DataFrame | None,
                   trades: pd.DataFrame | None, n_drawdowns: int = 2,
                   n_entries: int = 2) -> list[tuple[str, pd.Timestamp]]:
    """Chosen times for GEX snapshots: start, drawdown troughs, first trade entries."""
    out = [("start", pd.Timestamp(bars["ts"].iloc[0]))]
    if equity is not None and len(equity) > 2:
        value = equity.set_index("ts")["value"]
        dd = value / value.cummax() - 1
        episode = (dd >= 0).cumsum()  # a new high ends a drawdown
        under = dd[dd < 0]
        troughs = under.groupby(episode[dd < 0]).agg(["idxmin", "min"])
        troughs = troughs[troughs["min"] <= -MIN_DRAWDOWN].nsmallest(n_drawdowns, "min")
        for ts, depth in zip(troughs["idxmin"], troughs["min"], strict=True):
            out.append((f"drawdown {depth:.1%}", pd.Timestamp(ts)))
    if trades is not None and len(trades):
        for ts in pd.DatetimeIndex(trades["entry_ts"])[:n_entries]:
            out.append(("trade entry", ts))
    seen, unique = set(), []
    for name, ts in out:
        if ts not in seen:
            seen.add(ts)
            unique.append((name, ts))
    return unique


def gex_figure(strikes: pd.DataFrame, summary: pd.DataFrame | None,
               times: list[tuple[str, pd.Timestamp]], band: float = 0.3) -> Any | None:
    """GEX by strike for the snapshot in force at each time (one subplot per time)."""
    from plotly.subplots import make_subplots

    snaps = pd.DatetimeIndex(np.sort(strikes["ts"].unique()))
    chosen = []
    for name, ts in times:
        pos = snaps.searchsorted(ts, side="right") - 1
        if pos >= 0 and snaps[pos] not in [c[1] for c in chosen]:
            chosen.append((name, snaps[pos]))
    if not chosen:
        return None
    fig = make_subplots(rows=len(chosen), cols=1, vertical_spacing=0.08,
                        subplot_titles=[f"{name}: snapshot {snap:%Y-%m-%d %H:%M} UTC"
                                        for name, snap in chosen])
    summ = None if summary is None else summary.set_index("ts")
    for row, (_, snap) in enumerate(chosen, start=1):
        s = strikes[strikes["ts"] == snap]
        info = summ.loc[snap] if summ is not None and snap in summ.index else None
        spot = float(info["spot"]) if info is not None and "spot" in info else float(
            s["strike"].median())
        s = s[(s["strike"] >= spot * (1 - band)) & (s["strike"] <= spot * (1 + band))]
        show = row == 1
        fig.add_bar(x=s["strike"], y=s["gex_call"], name="calls", marker_color="#1e8449",
                    legendgroup="c", showlegend=show, row=row, col=1)
        fig.add_bar(x=s["strike"], y=s["gex_put"], name="puts", marker_color="#c0392b",
                    legendgroup="p", showlegend=show, row=row, col=1)
        fig.add_scatter(x=s["strike"], y=s["gex_net"], name="net", mode="lines+markers",
                        line={"color": "#222"}, legendgroup="n", showlegend=show,
                        row=row, col=1)
        marks = [("spot", spot, "#2874a6")]
        if info is not None:
            marks += [(k, float(info[k]), c) for k, c in (("gamma_flip", "#8e44ad"),
                                                          ("call_wall", "#1e8449"),
                                                          ("put_wall", "#c0392b"))
                      if k in info and np.isfinite(info[k])]
        # vertical marks as legend entries (labels on the lines collide when spot, flip
        # and walls sit close together, and with the panel titles)
        values = np.concatenate([s[c].to_numpy(dtype=float) for c in
                                 ("gex_call", "gex_put", "gex_net") if c in s.columns])
        values = values[np.isfinite(values)]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
        for name, x, color in marks:
            fig.add_scatter(x=[x, x], y=[lo, hi], mode="lines", name=name,
                            line={"color": color, "dash": "dot"}, legendgroup=name,
                            showlegend=show, hovertemplate=f"{name} %{{x:,.0f}}<extra></extra>",
                            row=row, col=1)
    fig.update_layout(barmode="relative", title="Dealer GEX by strike (USD per 1% move)",
                      meta={"rows": len(chosen)})
    fig.update_xaxes(title_text="strike (USD)")
    return fig


def liq_figure(liq_map: Any, bars: pd.DataFrame) -> Any | None:
    """Heatmap of estimated USD at risk by price and time, with the price path."""
    import plotly.graph_objects as go

    n = len(liq_map)
    if n == 0:
        return None
    picks = np.unique(np.linspace(0, n - 1, min(n, LIQ_COLUMNS)).astype(int))
    frames = [liq_map.frame(int(i)) for i in picks]
    close = _close_series(bars)
    lo, hi = float(bars["low"].min()) * 0.85, float(bars["high"].max()) * 1.15
    edges = np.linspace(lo, hi, LIQ_ROWS + 1)
    z = np.full((LIQ_ROWS, len(picks)), np.nan)
    for j, frame in enumerate(frames):
        if len(frame):
            usd = (frame["long_usd"] + frame["short_usd"]).to_numpy()
            hist, _ = np.histogram(frame["price"].to_numpy(), bins=edges, weights=usd)
            z[:, j] = np.where(hist > 0, hist, np.nan)
    if not np.isfinite(z).any():
        return None
    times = pd.DatetimeIndex(liq_map.lines["ts"]).take(picks)
    fig = go.Figure(go.Heatmap(x=times, y=(edges[:-1] + edges[1:]) / 2, z=z,
                               colorscale="Viridis", colorbar={"title": "USD"},
                               hoverongaps=False, name="USD at risk"))
    shown = _thin(close)
    fig.add_scatter(x=shown.index, y=shown.to_numpy(), mode="lines", name="close",
                    line={"color": "white", "width": 1.2})
    lines = liq_map.lines
    for col, color in (("liq_below", "#ff7979"), ("liq_above", "#7ed6df")):
        if col in lines.columns and lines[col].notna().any():
            s = pd.Series(lines[col].to_numpy(), index=pd.DatetimeIndex(lines["ts"]))
            s = _thin(s)
            fig.add_scatter(x=s.index, y=s.to_numpy(), mode="lines", name=col,
                            line={"color": color, "width": 1, "dash": "dot"})
    fig.update_layout(title="Estimated liquidation map (USD at risk) with the price path; "
                            "nearest clusters below/above dotted",
                      xaxis_title="UTC time", yaxis_title="price (USD)")
    return fig


def basis_figure(extra: pd.DataFrame | None, curve: pd.DataFrame | None = None) -> Any | None:
    """Annualized basis, funding APR and constant-maturity tenors; dislocations marked."""
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn = False
    if curve is not None and len(curve):
        for col in [c for c in curve.columns if c.startswith("basis_ann_")]:
            if curve[col].notna().any():
                fig.add_scatter(x=curve["ts"], y=curve[col].to_numpy(), mode="lines",
                                name=col.replace("basis_ann_", "CM "), line={"width": 1})
                drawn = True
    if extra is not None and len(extra):
        for col, name in (("basis_ann", "basis (30d CM / front)"),
                          ("funding_ann", "funding APR")):
            if col in extra.columns and extra[col].notna().any():
                s = extra[["ts", col]].dropna()
                fig.add_scatter(x=s["ts"], y=s[col].to_numpy(), mode="lines", name=name,
                                line={"width": 2 if col == "basis_ann" else 1})
                drawn = True
        if "basis_z" in extra.columns:
            hot = extra[(extra["basis_z"].abs() >= 2) & extra["basis_ann"].notna()]
            if len(hot):
                fig.add_scatter(x=hot["ts"], y=hot["basis_ann"].to_numpy(), mode="markers",
                                name="dislocation (|z| >= 2)",
                                marker={"color": "#c0392b", "size": 8, "symbol": "diamond"})
    if not drawn:
        return None
    fig.update_layout(title="Basis and funding, annualized", yaxis_tickformat=".1%",
                      xaxis_title="UTC time")
    return fig


def _basis_curve(inputs: Any) -> pd.DataFrame | None:
    if getattr(inputs, "futures", None) is None:
        return None
    from indicators.basis import basis_table, constant_maturity

    try:
        table = basis_table(inputs.futures, inputs.bars)
        stamps = np.sort(table["ts"].unique())
        if len(stamps) > MAX_CURVE_POINTS:  # a chart needs no more; interpolation is per stamp
            keep = stamps[np.linspace(0, len(stamps) - 1, MAX_CURVE_POINTS).astype(int)]
            table = table[table["ts"].isin(keep)]
        return constant_maturity(table, tenors=(30, 60, 90, 120))
    except ValueError:
        return None


def _usable(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """``frame`` stamped when its rows became usable (``available_at``: stamp plus the
    publication delay), so the charts show the snapshot the strategy had at a time."""
    if frame is None or "available_at" not in frame.columns:
        return frame
    return frame.assign(ts=frame["available_at"])


def _coverage(inputs: Any) -> list[dict[str, str]]:
    rows = []
    for name, frame in (("bars", inputs.bars), ("chain snapshots", inputs.summary),
                        ("basis / funding", inputs.extra),
                        ("liquidation lines", inputs.liq_lines), ("perp bars", inputs.perp)):
        if frame is None or len(frame) == 0:
            rows.append({"input": name, "rows": "0", "from": "-", "to": "-"})
        else:
            ts = pd.DatetimeIndex(frame["ts"])
            rows.append({"input": name, "rows": f"{len(frame):,d}",
                         "from": f"{ts.min():%Y-%m-%d %H:%M}", "to": f"{ts.max():%Y-%m-%d %H:%M}"})
    return rows


def write_report_page(result: Any, path: str | Path, *, plotlyjs_dir: str | Path) -> Path:
    """Write the report page of a :class:`gammabt.run.RunResult` to ``path``.

    Parameters
    ----------
    result
        The run. Its ``inputs`` (the market the run saw) give the market panels; without
        them only the price and trades are drawn.
    path
        The HTML file (written atomically).
    plotlyjs_dir
        Folder that holds (or will hold) plotly.js; the page links to it relatively.
    """
    import os

    path = Path(path)
    plotlyjs_dir = Path(plotlyjs_dir)
    write_plotlyjs(plotlyjs_dir)
    script = Path(os.path.relpath(plotlyjs_dir / plotlyjs_name(), path.parent)).as_posix()
    config = result.config
    inputs = getattr(result, "inputs", None)
    bars = inputs.bars if inputs is not None else result.equity
    period = f"{pd.Timestamp(bars['ts'].iloc[0]):%Y-%m-%d %H:%M} .. " \
             f"{pd.Timestamp(bars['ts'].iloc[-1]):%Y-%m-%d %H:%M} UTC"
    heading = f"{config.strategy}" + (f" [{config.label}]" if config.label else "")
    charts, missing = [], []
    summary = _usable(inputs.summary) if inputs is not None else None

    def titled(fig: Any) -> Any:  # every chart names the run and its period
        fig.update_layout(title_text=f"{fig.layout.title.text}<br><sup>{esc(heading)}, "
                                     f"{period}</sup>")
        return fig

    fig = price_figure(bars, summary, result.trades, title=f"{heading}: price, {period}")
    charts.append({"id": "chart-price", "title": "Price, gamma levels and trades",
                   "html": fig_html(fig, "chart-price", 520)})
    if inputs is not None and inputs.strikes is not None and len(inputs.strikes):
        times = snapshot_times(bars, result.equity, result.trades)
        fig = gex_figure(_usable(inputs.strikes), summary, times)
        if fig is not None:
            charts.append({"id": "chart-gex", "title": "GEX by strike at chosen times",
                           "html": fig_html(titled(fig), "chart-gex",
                                            260 * fig.layout.meta["rows"] + 120)})
    else:
        missing.append("GEX by strike (no option chain)")
    fig = liq_figure(inputs.liq_map, bars) if inputs is not None and inputs.liq_map is not None \
        else None
    if fig is not None:
        charts.append({"id": "chart-liq", "title": "Liquidation map",
                       "html": fig_html(titled(fig), "chart-liq", 520)})
    else:
        missing.append("liquidation map (no open interest, perp volume or liquidations)")
    fig = basis_figure(inputs.extra, _basis_curve(inputs)) if inputs is not None else None
    if fig is not None:
        charts.append({"id": "chart-basis", "title": "Basis and funding",
                       "html": fig_html(titled(fig), "chart-basis", 420)})
    else:
        missing.append("basis and funding (no futures or funding input)")
    metrics = result.metrics
    headline = [(key, fmt_metric(key, metrics.get(key)))
                for key in ("total_return", "sharpe", "max_drawdown", "n_trades",
                            "fees_paid_usd", "funding_paid_usd", "n_liquidations",
                            "final_value") if key in metrics]
    html = render("report.html.j2", title=f"{heading}: report, {period}", heading=heading,
                  run_id=result.run_id, period=period, params=dict(config.params),
                  headline=headline, charts=charts, missing=missing,
                  coverage=_coverage(inputs) if inputs is not None else [],
                  notes=list(result.notes), plotlyjs=script)
    return _write_text(path, html)


def check_plot_out(path: str | Path) -> Path:
    """``path`` when it names an ``.html`` or ``.png`` file; ConfigError otherwise."""
    from plumbing.errors import ConfigError

    path = Path(path)
    if path.suffix.lower() not in (".html", ".png"):
        raise ConfigError(f"unsupported output {path.suffix or '(no suffix)'!r}",
                          source=str(path), expected="an .html page or a .png image",
                          fix="name the output *.html (interactive) or *.png (static)")
    return path


def write_figure_page(fig: Any, path: str | Path, *, title: str,
                      notes: list[str] | None = None, height: int = 560) -> Path:
    """One chart for ``gammabt plot``: an offline page (``.html``, plotly.js beside it)
    or a static image (``.png``, drawn by Kaleido with the system's Chromium)."""
    path = check_plot_out(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        return _write_png(fig, path, title=title, notes=notes or [], height=height)
    write_plotlyjs(path.parent)
    html = render("plot.html.j2", title=title, notes=notes or [], chart_id="chart-plot",
                  chart=fig_html(fig, "chart-plot", height), plotlyjs=plotlyjs_name())
    return _write_text(path, html)


def _write_png(fig: Any, path: Path, *, title: str, notes: list[str], height: int) -> Path:
    """The chart as a PNG (title and notes on top), written atomically."""
    from plumbing.errors import ConfigError

    image = fig.__class__(fig)  # a copy: the caller's figure keeps its layout
    subtitle = "<br><sup>" + "; ".join(notes) + "</sup>" if notes else ""
    image.update_layout(title={"text": title + subtitle}, margin={"t": 90})

    def export(tmp: Path) -> None:
        try:
            image.write_image(tmp, format="png", width=1400, height=height, scale=1)
        except Exception as exc:  # Kaleido reports a missing browser with several types
            raise ConfigError(f"PNG export failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})",
                              source=str(path),
                              expected="a Chromium browser for Kaleido (Debian package "
                                       "chromium)",
                              fix="install chromium, or name the output *.html") from None

    return write_atomic(path, export)
