"""Regime study: what the market did after each dealer-gamma snapshot.

For every chain snapshot: regime (sign of net GEX at spot), flip-distance bucket, GEX
quintile and distance to the nearest wall; per horizon the forward realized volatility,
absolute and signed return and largest adverse excursion, measured on the bars from the
snapshot's availability time onward (the first bar opening at or after it). Tables give
n, mean, median and a moving-block bootstrap interval per bucket, the short/long ratio
with its interval and a circular-shift permutation p-value, overall and per period.
Statistics live in :mod:`indicators.events`; this module loads, joins and writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from feeds.loaders import bar_freq, load_bars, load_chain
from gammabt.inputs import INPUT_SPECS
from indicators.events import (
    bootstrap_mean_ci,
    bootstrap_ratio,
    entry_index,
    forward_measures,
    mean_run_length,
    permutation_pvalue,
)
from indicators.gamma import summarize
from plumbing.atomic import write_atomic, write_text_atomic
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import parse_duration, timedelta_us, to_epoch_us

MEASURES = ("vol_ann", "abs_ret", "ret", "max_adverse")
RATIO_MEASURES = ("vol_ann", "abs_ret", "max_adverse")
FLIP_EDGES = (-np.inf, -5.0, -2.0, 0.0, 2.0, 5.0, np.inf)
FLIP_LABELS = ("< -5%", "-5..-2%", "-2..0%", "0..2%", "2..5%", "> 5%")
WALL_EDGES = (0.0, 2.0, 5.0, 10.0, np.inf)
WALL_LABELS = ("< 2%", "2..5%", "5..10%", "> 10%")


def parse_horizons(text: str) -> tuple[pd.Timedelta, ...]:
    """``'1h,4h,24h'`` -> Timedeltas; a one-line ConfigError for anything else."""
    return tuple(parse_duration(part.strip(), name="--horizons", example="1h,4h,24h")
                 for part in text.split(","))


def horizon_name(td: pd.Timedelta) -> str:
    """``Timedelta('1 days')`` -> ``'24h'``, ``Timedelta('30min')`` -> ``'30min'``."""
    secs = int(td.total_seconds())
    return f"{secs // 3600}h" if secs % 3600 == 0 else f"{secs // 60}min"


@dataclass(frozen=True)
class RegimeStudy:
    """Result of :func:`regime_study` (values; writing is :func:`write_regime_study`)."""

    snapshots: pd.DataFrame
    by_regime: pd.DataFrame
    ratios: pd.DataFrame
    by_flip: pd.DataFrame
    by_period: pd.DataFrame
    notes: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


def _flip_bucket(dist_pct: np.ndarray) -> pd.Categorical:
    cat = pd.cut(dist_pct, FLIP_EDGES, labels=list(FLIP_LABELS), right=False)
    return cat.add_categories(["no flip"]).fillna("no flip")


def snapshot_features(summary: pd.DataFrame, *, n_quantiles: int = 5) -> pd.DataFrame:
    """Per-snapshot features from :func:`indicators.gamma.summarize`.

    ``flip_dist_pct = (spot / gamma_flip - 1) * 100`` (positive: spot above the flip),
    ``flip_bucket``; ``gex_q``: quintile of net GEX over the whole sample (1 = most
    negative; descriptive, not point in time); ``wall_dist_pct``: distance from spot to
    the nearer of call and put wall in % of spot, and ``wall_bucket``.
    """
    s = summary.copy()
    s["flip_dist_pct"] = (s["spot"] / s["gamma_flip"] - 1.0) * 100.0
    s["flip_bucket"] = _flip_bucket(s["flip_dist_pct"].to_numpy())
    if len(s) >= n_quantiles:
        s["gex_q"] = pd.qcut(s["gex"].rank(method="first"), n_quantiles,
                             labels=False).astype("Int64") + 1
    else:
        s["gex_q"] = pd.array([pd.NA] * len(s), dtype="Int64")
    walls = np.abs(np.c_[s["call_wall"], s["put_wall"]] - s["spot"].to_numpy()[:, None])
    with np.errstate(invalid="ignore"):
        near = np.where(np.isnan(walls).all(axis=1), np.nan, np.nanmin(
            np.where(np.isnan(walls), np.inf, walls), axis=1))
    s["wall_dist_pct"] = near / s["spot"] * 100.0
    s["wall_bucket"] = pd.cut(s["wall_dist_pct"], WALL_EDGES, labels=list(WALL_LABELS),
                              right=False)
    return s


def forward_columns(bars: pd.DataFrame, entry: np.ndarray,
                    horizons: Sequence[pd.Timedelta]) -> dict[str, np.ndarray]:
    """Forward measures (:func:`indicators.events.forward_measures`) from each entry bar,
    per horizon, as columns ``<measure>_<h>``.

    Raises
    ------
    ConfigError
        A horizon that is not a whole number of bars.
    """
    freq = bar_freq(bars)
    ts_us = to_epoch_us(bars["ts"])
    out: dict[str, np.ndarray] = {}
    for h in horizons:
        n_bars = h / freq
        if n_bars < 1 or abs(n_bars - round(n_bars)) > 1e-9:
            raise ConfigError(f"horizon {horizon_name(h)} is not a whole number of "
                              f"{horizon_name(freq)} bars", column="horizons",
                              expected=f"multiples of {horizon_name(freq)}",
                              fix="choose horizons that are multiples of the bar length")
        m = forward_measures(ts_us, bars["open"], bars["high"], bars["low"], bars["close"],
                             entry, int(round(n_bars)), bar_us=timedelta_us(freq),
                             periods_per_year=pd.Timedelta(days=365) / freq)
        for key, values in m.items():
            out[f"{key}_{horizon_name(h)}"] = values
    return out


def attach_forward(snap: pd.DataFrame, bars: pd.DataFrame, horizons: Sequence[pd.Timedelta],
                   available: pd.Series) -> pd.DataFrame:
    """Add ``entry_ts`` and ``<measure>_<h>`` columns measured from availability onward."""
    entry = entry_index(to_epoch_us(bars["ts"]), to_epoch_us(available))
    out = snap.copy()
    inside = entry < len(bars)
    out["entry_ts"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us, UTC]")
    out.loc[inside, "entry_ts"] = bars["ts"].to_numpy()[entry[inside]]
    for key, values in forward_columns(bars, entry, horizons).items():
        out[key] = values  # MEASURES per horizon
    return out


def _period(ts: pd.Series, by: str) -> pd.Series:
    return ts.dt.year.astype(str) if by == "year" else ts.dt.strftime("%Y-%m")


def _describe(values: pd.Series, block: int, seed: int, n_boot: int) -> dict:
    v = values.dropna().to_numpy()
    lo, hi = bootstrap_mean_ci(v, block_len=block, n_boot=n_boot, seed=seed)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else np.nan,
            "median": float(np.median(v)) if v.size else np.nan, "ci_lo": lo, "ci_hi": hi}


def regime_tables(snap: pd.DataFrame, horizons: Sequence[pd.Timedelta], *,
                  by: Literal["year", "month"] | None = None, n_boot: int = 2000,
                  seed: int = 0) -> dict[str, pd.DataFrame]:
    """Summary tables of a per-snapshot frame from :func:`attach_forward`."""
    hs = [horizon_name(h) for h in horizons]
    block = max(2, int(round(mean_run_length(snap["regime"].to_numpy()))))
    rows_regime, rows_ratio, rows_flip, rows_period = [], [], [], []
    name = {-1: "short gamma", 1: "long gamma"}
    for h in hs:
        for k in MEASURES:
            col = f"{k}_{h}"
            for reg in (-1, 1):
                sub = snap.loc[snap["regime"] == reg, col]
                rows_regime.append({"horizon": h, "measure": k, "regime": name[reg],
                                    **_describe(sub, block, seed, n_boot)})
        for k in RATIO_MEASURES:
            col = f"{k}_{h}"
            b = bootstrap_ratio(snap[col], snap["regime"], n_boot=n_boot, seed=seed)
            p = permutation_pvalue(snap[col], snap["regime"], n_perm=n_boot, seed=seed)
            rows_ratio.append({"horizon": h, "measure": k, "ratio_short_long": b["ratio"],
                               "ci_lo": b["lo"], "ci_hi": b["hi"], "p_value": p,
                               "n_short": b["n_short"], "n_long": b["n_long"],
                               "block_len": b["block_len"]})
        col = f"vol_ann_{h}"
        for bucket, sub in snap.groupby("flip_bucket", observed=False)[col]:
            if sub.notna().any():
                rows_flip.append({"horizon": h, "flip_bucket": str(bucket),
                                  **_describe(sub, block, seed, n_boot)})
        if by:
            for period, sub in snap.groupby(_period(snap["ts"], by)):
                b = bootstrap_ratio(sub[col], sub["regime"], n_boot=n_boot, seed=seed)
                p = permutation_pvalue(sub[col], sub["regime"], n_perm=n_boot, seed=seed)
                rows_period.append({"period": period, "horizon": h,
                                    "ratio_short_long": b["ratio"], "ci_lo": b["lo"],
                                    "ci_hi": b["hi"], "p_value": p, "n_short": b["n_short"],
                                    "n_long": b["n_long"]})
    return {"by_regime": pd.DataFrame(rows_regime), "ratios": pd.DataFrame(rows_ratio),
            "by_flip": pd.DataFrame(rows_flip), "by_period": pd.DataFrame(rows_period)}


def _concat_bars(paths: Sequence[Path]) -> pd.DataFrame:
    frames = [load_bars(p).to_pandas() for p in paths]
    bars = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable")
    dup = bars["ts"].duplicated(keep="last")
    return bars[~dup].reset_index(drop=True)


def regime_study(chains: Sequence[Path], bars: Sequence[Path] | Path, *,
                 spot: Path | None = None,
                 horizons: Sequence[pd.Timedelta] = (pd.Timedelta("1h"), pd.Timedelta("4h"),
                                                     pd.Timedelta("24h")),
                 by: Literal["year", "month"] | None = None, dealer: str = "auto",
                 delay: pd.Timedelta | None = None, n_boot: int = 2000,
                 seed: int = 0) -> RegimeStudy:
    """Run the regime study on chain files and price bars.

    Parameters
    ----------
    chains : paths
        Option-chain files (any format :func:`feeds.loaders.load_chain` reads).
    bars : path or paths
        Price bars the forward measures are taken on (several files are concatenated;
        on overlapping stamps the later file wins).
    spot : path, optional
        Bars giving the chain's reference spot (``index_price``); by default ``bars``
        when there is one file.
    horizons, by, dealer, n_boot, seed
        Forward horizons (whole multiples of the bar length), period split, dealer
        convention (``auto`` as in ``gammabt gex``), bootstrap and permutation settings.
    delay : Timedelta, optional
        Publication delay added to each snapshot's ``ts``; default per chain format
        (0 for OptionsDX, 1 h for the Deribit hourly file, 0 otherwise).
    """
    from gammabt.run import resolve_dealer

    if not chains:
        raise ConfigError("no chain file given", column="--chain",
                          expected="at least one --chain FILE", fix="pass --chain FILE")
    bar_paths = [bars] if isinstance(bars, (str, Path)) else list(bars)
    bar_frame = _concat_bars(bar_paths)
    spot_src = spot if spot is not None else (bar_paths[0] if len(bar_paths) == 1 else None)
    sums, notes = [], []
    for path in chains:
        table = load_chain(path, spot=spot_src)
        s = summarize(table, dealer=resolve_dealer(dealer, table))
        lag = delay if delay is not None else INPUT_SPECS["chain"].delay(Path(path))
        s["available_at"] = s["ts"] + lag
        s["source"] = Path(path).name
        sums.append(s)
    summary = pd.concat(sums, ignore_index=True).sort_values("ts", kind="stable")
    summary = summary.drop_duplicates("ts", keep="last").reset_index(drop=True)
    if summary.empty:
        raise DataError("the chain files hold no snapshot", source=str(chains[0]),
                        expected="at least one snapshot", fix="check the --chain files")
    snap = attach_forward(snapshot_features(summary), bar_frame, horizons,
                          summary["available_at"])
    last = horizon_name(max(horizons))
    missing = int(snap[f"vol_ann_{last}"].isna().sum())
    if missing:
        notes.append(f"{missing} of {len(snap)} snapshots have no complete {last} window in "
                     "the bars (outside their range or a missing bar): left out")
    zero = int((snap["regime"] == 0).sum())
    if zero:
        notes.append(f"{zero} snapshots with zero net GEX are in neither regime")
    tables = regime_tables(snap, horizons, by=by, n_boot=n_boot, seed=seed)
    meta = {"chains": [str(p) for p in chains], "bars": [str(p) for p in bar_paths],
            "spot": str(spot_src) if spot_src else None,
            "horizons": [horizon_name(h) for h in horizons], "by": by, "n_boot": n_boot,
            "seed": seed, "spot_source": sorted(set(summary["spot_source"].astype(str)))}
    return RegimeStudy(snapshots=snap, notes=tuple(notes), meta=meta, **tables)


# ---------------------------------------------------------------- writing

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<script src="plotly.min.js"></script>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:right}th{background:#eee}</style></head><body>
<h1>{{ title }}</h1>
<p>{% for line in meta_lines %}{{ line }}<br>{% endfor %}</p>
{% for note in notes %}<p><em>{{ note }}</em></p>{% endfor %}
{% for name, html in tables %}<h2>{{ name }}</h2>{{ html | safe }}{% endfor %}
{% for fig in figures %}{{ fig | safe }}{% endfor %}
</body></html>
"""


def write_study(out: Path, *, frame: pd.DataFrame, tables: Sequence[tuple[str, pd.DataFrame]],
                title: str, meta_lines: Sequence[str], notes: Sequence[str],
                figures: Sequence[str]) -> Path:
    """Write a study folder: ``study.parquet`` (``frame``), ``tables.json``,
    ``study.html`` (Jinja2, autoescaped) and ``plotly.min.js`` beside it, each file
    written to a temporary name, then renamed. Returns the page's path."""
    import jinja2
    from plotly.offline import get_plotlyjs

    out = Path(out)
    write_atomic(out / "study.parquet", lambda p: frame.to_parquet(p, index=False))
    write_text_atomic(out / "tables.json", json.dumps(
        {name: t.to_dict(orient="records") for name, t in tables}, indent=1, default=str))
    env = jinja2.Environment(autoescape=True)
    html = env.from_string(_TEMPLATE).render(
        title=title, meta_lines=meta_lines, notes=notes,
        tables=[(n, t.to_html(index=False, float_format=lambda x: f"{x:.4g}"))
                for n, t in tables if not t.empty],
        figures=figures)
    write_text_atomic(out / "plotly.min.js", get_plotlyjs())
    write_text_atomic(out / "study.html", html)
    return out / "study.html"


def _figures(study: RegimeStudy) -> list[str]:
    import plotly.graph_objects as go

    h = study.meta["horizons"][-1]
    flip = study.by_flip[study.by_flip["horizon"] == h]
    f1 = go.Figure(go.Bar(x=flip["flip_bucket"], y=flip["mean"],
                          error_y={"type": "data", "symmetric": False,
                                   "array": (flip["ci_hi"] - flip["mean"]).tolist(),
                                   "arrayminus": (flip["mean"] - flip["ci_lo"]).tolist()},
                          text=[f"n={n}" for n in flip["n"]]))
    f1.update_layout(title=f"Forward {h} realized vol (annualized) by distance of spot to "
                     "the flip, mean and 95% block-bootstrap interval",
                     xaxis_title="spot vs flip", yaxis_title="vol (fraction, annualized)")
    s = study.snapshots
    f2 = go.Figure()
    for reg, name, color in ((-1, "short gamma", "#d62728"), (1, "long gamma", "#1f77b4")):
        sub = s[s["regime"] == reg]
        f2.add_trace(go.Scatter(x=sub["ts"], y=sub[f"vol_ann_{h}"], mode="markers",
                                name=name, marker={"color": color, "size": 6}))
    f2.update_layout(title=f"Forward {h} realized vol by regime over time",
                     yaxis_title="vol (fraction, annualized)")
    return [f.to_html(full_html=False, include_plotlyjs=False) for f in (f1, f2)]


def write_regime_study(study: RegimeStudy, out: Path) -> Path:
    """Write the regime study's folder (see :func:`write_study`)."""
    meta = study.meta
    tables = [("Short / long gamma ratio", study.ratios), ("By regime", study.by_regime),
              ("Forward vol by flip distance", study.by_flip), ("By period", study.by_period)]
    lines = [f"Chains: {', '.join(meta['chains'])}", f"Bars: {', '.join(meta['bars'])}",
             f"Reference spot: {', '.join(meta['spot_source'])}; horizons "
             f"{', '.join(meta['horizons'])}; moving-block bootstrap ({meta['n_boot']} "
             f"resamples, seed {meta['seed']}) and circular-shift permutation p-values."]
    return write_study(out, frame=study.snapshots, tables=tables,
                       title="Regime study: forward moves after dealer-gamma snapshots",
                       meta_lines=lines, notes=study.notes, figures=_figures(study))
