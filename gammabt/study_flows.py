"""Flow studies: what followed basis dislocations, and how price behaved at estimated
liquidation clusters.

``basis_study``: the annualized basis (30-day constant maturity, else the nearest
expiry with at least 7 days left, as the run's ``basis_ann`` line) at each futures
stamp; dislocations are jumps of ``z`` sigma or ``jump`` (annualized, fraction) within
``window`` observations (:func:`indicators.basis.dislocations`), declustered so that an
event within the longest horizon of the previous one is not counted again. Each event
and each matched non-event stamp (no dislocation within the longest horizon either
side) is measured forward from the first bar opening at or after its availability:
spot return, realized vol, |return|, largest adverse move, the mean funding APR and the
open-interest change over the horizon where those inputs are given. Tables: event vs
control means with moving-block bootstrap intervals, the event/control ratio of the
unsigned measures with its interval and a permutation p-value.

``liquidation_study``: the liquidation map estimated from bars (and OI) *without* the
observed liquidations, then (1) how well it predicts where liquidations happen, against
evenly spread and random levels at several tolerances
(:func:`indicators.liquidation.cluster_hit_rate`), and (2) what price does once a bar
reaches a cluster known at the previous close (:func:`indicators.events.cluster_touches`):
the share of touches that close through the level, and the forward move in the touch's
direction (acceleration > 0, stall or reversal <= 0) and realized vol from the next bar
on, against control bars without a touch (direction = the bar's own direction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from gammabt.study import (
    _concat_bars,
    _describe,
    forward_columns,
    horizon_name,
    write_study,
)
from indicators.basis import dislocations, funding_apr
from indicators.events import (
    bootstrap_ratio,
    cluster_touches,
    entry_index,
    permutation_pvalue,
)
from plumbing.errors import ConfigError, DataError
from plumbing.timeconv import timedelta_us, to_epoch_us

UNSIGNED = ("vol_ann", "abs_ret", "max_adverse")


@dataclass(frozen=True)
class FlowStudy:
    """One row per measured stamp or bar (``frame``) and the summary tables."""

    frame: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    notes: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


def _compare(frame: pd.DataFrame, group: pd.Series, horizons: Sequence[pd.Timedelta],
             measures: Sequence[str], *, n_boot: int, seed: int,
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Means per group and event/control ratios (``group``: 'event...' or 'control')."""
    rows, ratios = [], []
    group = group.astype("string")
    is_event = group.str.startswith("event").fillna(False).to_numpy(dtype=bool)
    is_control = (group == "control").fillna(False).to_numpy(dtype=bool)
    labels = np.where(is_event, -1.0, np.where(is_control, 1.0, np.nan))
    for h in (horizon_name(h) for h in horizons):
        for key in measures:
            col = f"{key}_{h}"
            if col not in frame.columns:
                continue
            for name in sorted(group.dropna().unique()):
                mask = (group == name).fillna(False).to_numpy(dtype=bool)
                rows.append({"horizon": h, "measure": key, "group": name,
                             **_describe(frame.loc[mask, col], 1, seed, n_boot)})
            if key in UNSIGNED:
                b = bootstrap_ratio(frame[col], labels, block_len=1, n_boot=n_boot,
                                    seed=seed)
                p = permutation_pvalue(frame[col], labels, n_perm=n_boot, seed=seed,
                                       method="shuffle")
                ratios.append({"horizon": h, "measure": key,
                               "ratio_event_control": b["ratio"], "ci_lo": b["lo"],
                               "ci_hi": b["hi"], "p_value": p, "n_event": b["n_short"],
                               "n_control": b["n_long"]})
    return pd.DataFrame(rows), pd.DataFrame(ratios)


# --------------------------------------------------------------------------- basis


def basis_study(futures: Sequence[Path], spot: Sequence[Path], *,
                funding: Path | None = None, oi: Path | None = None,
                horizons: Sequence[pd.Timedelta] = (pd.Timedelta("4h"), pd.Timedelta("24h")),
                z: float = 3.0, jump: float = 0.03, window: int = 30,
                delay: pd.Timedelta | None = None, n_boot: int = 2000,
                seed: int = 0) -> FlowStudy:
    """Basis dislocations and what followed them, against matched non-event stamps.

    Parameters
    ----------
    futures, spot
        Futures files (any layout ``feeds.derivs.load_futures`` reads) and spot bars
        (several files are concatenated).
    funding, oi
        Optional funding rates and open interest (forward mean funding APR and forward
        OI change; OI also marks dislocations that came with an OI drop).
    horizons
        Forward windows, multiples of the bar length.
    z, jump, window
        A dislocation is a one-step change of ``z`` sigma of the previous ``window``
        changes, or a move of at least ``jump`` (annualized basis, fraction) within
        ``window`` observations.
    delay
        Publication delay of the futures quotes (measured from ``ts + delay``; default 0).
    n_boot, seed
        Bootstrap resamples (and permutations) and their seed.
    """
    from feeds.derivs import load_funding, load_futures, load_open_interest
    from gammabt.run import basis_funding_lines

    if not futures or not spot:
        raise ConfigError("no futures or no spot file given", column="--futures",
                          expected="--futures FILE and --spot FILE", fix="pass both")
    for name, value, ok, expected, example in (
            ("z", z, math.isfinite(z) and z > 0, "a finite number > 0", "3"),
            ("jump", jump, math.isfinite(jump) and jump > 0, "a finite fraction > 0", "0.03"),
            ("window", window, window >= 2, "at least 2 observations", "30"),
            ("boot", n_boot, n_boot >= 100, "at least 100 resamples", "2000")):
        if not ok:  # name the flag the user gave
            raise ConfigError(f"--{name} {value} out of range", column=f"--{name}",
                              expected=expected, fix=f"e.g. --{name} {example}")
    bars = _concat_bars(spot)
    fut = load_futures(list(futures) if len(futures) > 1 else futures[0])
    lines = basis_funding_lines(bars, futures=fut, funding=None, zscore_window=window)
    if lines is None or lines["basis_ann"].notna().sum() < window + 2:
        raise DataError("too few basis observations over the spot bars",
                        source=str(futures[0]), column="basis_ann",
                        expected=f"more than {window + 2} stamps with a basis",
                        fix="give futures that overlap the spot bars, or a shorter --window")
    basis = lines.dropna(subset=["basis_ann"]).reset_index(drop=True)
    oi_series = None
    notes: list[str] = []
    if oi is not None:
        o = load_open_interest(oi).to_pandas()
        col = "oi_usd" if "oi_usd" in o.columns and o["oi_usd"].notna().any() else "oi_btc"
        oi_series = o.set_index("ts")[col].astype(float)
    flags = dislocations(basis.set_index("ts")["basis_ann"], window, k_sigma=z,
                         jump_pp=jump * 100, oi=oi_series).reset_index(drop=True)
    frame = pd.DataFrame({"ts": basis["ts"], "basis_ann": basis["basis_ann"],
                          "change": flags["change"], "z": flags["z"],
                          "direction": flags["direction"], "flag": flags["flag"]})
    if "flag_oi" in flags.columns:
        frame["oi_drop"] = flags["oi_drop"].to_numpy()
    delay = pd.Timedelta(0) if delay is None else delay
    available = frame["ts"] + delay
    entry = entry_index(to_epoch_us(bars["ts"]), to_epoch_us(available))
    for key, values in forward_columns(bars, entry, horizons).items():
        frame[key] = values
    longest = max(horizons)
    kept, last = [], None
    for i in np.flatnonzero(frame["flag"].to_numpy()):
        if last is None or frame["ts"].iloc[i] - frame["ts"].iloc[last] > longest:
            kept.append(i)
            last = i
    event = np.zeros(len(frame), dtype=bool)
    event[kept] = True
    flagged_us = to_epoch_us(frame.loc[frame["flag"], "ts"])
    ts_us = to_epoch_us(frame["ts"])
    span = timedelta_us(longest)
    pos = np.searchsorted(flagged_us, ts_us)
    near_next = (pos < len(flagged_us)) & (
        flagged_us[np.minimum(pos, len(flagged_us) - 1)] - ts_us <= span)
    near_prev = (pos > 0) & (ts_us - flagged_us[np.maximum(pos - 1, 0)] <= span)
    control = ~frame["flag"].to_numpy() & ~near_next & ~near_prev
    side = np.where(frame["direction"] > 0, "event: basis up", "event: basis down")
    frame["group"] = np.where(event, side, np.where(control, "control", None))
    if funding is not None:
        fund = load_funding(funding).to_pandas()
        apr = pd.Series(funding_apr(fund["rate_8h"].to_numpy()), index=fund["ts"])
        for h in horizons:
            frame[f"funding_apr_{horizon_name(h)}"] = _window_mean(apr, available, h)
    if oi_series is not None:
        for h in horizons:
            start = oi_series.reindex(available, method="ffill").to_numpy()
            end = oi_series.reindex(available + h, method="ffill").to_numpy()
            frame[f"oi_change_{horizon_name(h)}"] = end / start - 1.0
    n_events = int(event.sum())
    if n_events == 0:
        notes.append("no dislocation found: lower --z or --jump")
    measures = ("ret", "vol_ann", "abs_ret", "max_adverse", "funding_apr", "oi_change")
    by_group, ratios = _compare(frame, frame["group"], horizons, measures, n_boot=n_boot,
                                seed=seed)
    meta = {"futures": [str(p) for p in futures], "spot": [str(p) for p in spot],
            "z": z, "jump": jump, "window": window, "delay": str(delay),
            "horizons": [horizon_name(h) for h in horizons], "n_events": n_events,
            "n_control": int(control.sum()), "n_boot": n_boot, "seed": seed}
    return FlowStudy(frame=frame, tables={"ratios": ratios, "by_group": by_group},
                     notes=tuple(notes), meta=meta)


def _window_mean(values: pd.Series, start: pd.Series, horizon: pd.Timedelta) -> np.ndarray:
    """Mean of ``values`` stamped in ``(start, start + horizon]`` per start (NaN if none)."""
    ts = to_epoch_us(pd.Series(values.index))
    cum = np.r_[0.0, np.cumsum(values.to_numpy())]
    s = to_epoch_us(start)
    lo = np.searchsorted(ts, s, side="right")
    hi = np.searchsorted(ts, s + timedelta_us(horizon), side="right")
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (cum[hi] - cum[lo]) / n, np.nan)


# --------------------------------------------------------------------------- liquidations


def liquidation_study(bars: pd.DataFrame, liquidations: pa.Table, *,
                      oi: pa.Table | None = None,
                      tolerances: Sequence[float] = (0.0025, 0.005, 0.01, 0.02),
                      horizons: Sequence[pd.Timedelta] = (pd.Timedelta("1h"),
                                                          pd.Timedelta("6h")),
                      min_cluster_usd: float = 0.0, burn_in: int = 24,
                      n_boot: int = 2000, seed: int = 0, source: str = "") -> FlowStudy:
    """How well estimated clusters predict liquidations, and what price does at them.

    Parameters
    ----------
    bars
        Canonical bars the map is estimated from (perpetual bars when available: the
        leverage lives there).
    liquidations
        Observed liquidations (LIQUIDATIONS), the ground truth (never fed to the map).
    oi
        Open interest (PERP_OI); without it the map is built from volume.
    tolerances
        Price tolerances (fractions) for a liquidation to count as predicted.
    horizons
        Forward windows after a touch, multiples of the bar length.
    min_cluster_usd
        Smallest cluster (USD at risk) whose touch counts.
    burn_in
        Bars skipped at the start while the map fills.
    """
    from indicators.liquidation import cluster_hit_rate, estimate_liq_map

    if liquidations is None or liquidations.num_rows == 0:
        raise DataError("no liquidation events", source=source, column="liquidations",
                        expected="observed liquidations (a simulated market has them)",
                        fix="pass --liquidations FILE or a --market folder")
    if any(not 0 < t < 1 for t in tolerances):
        raise ConfigError(f"tolerances {list(tolerances)}", column="tolerances",
                          expected="fractions in (0, 1)", fix="e.g. 0.0025,0.005,0.01")
    m = estimate_liq_map(bars, oi=oi)
    hits = pd.DataFrame([cluster_hit_rate(m, liquidations, tol_frac=t, burn_in=burn_in,
                                          seed=seed) for t in tolerances])
    hits = hits.rename(columns={"tol_frac": "tolerance"})
    hits.insert(0, "tolerance", hits.pop("tolerance"))
    lines = m.lines
    touches = cluster_touches(bars["high"], bars["low"], lines["liq_below"],
                              lines["liq_below_usd"], lines["liq_above"],
                              lines["liq_above_usd"], min_usd=min_cluster_usd)
    keep = touches["bar"] >= burn_in
    t_bar, t_dir, t_level = (touches[k][keep] for k in ("bar", "direction", "level"))
    touched = np.zeros(len(bars), dtype=bool)
    touched[t_bar] = True
    ctrl_bar = np.flatnonzero(~touched & (np.arange(len(bars)) >= burn_in))
    close, open_ = bars["close"].to_numpy(), bars["open"].to_numpy()
    ctrl_dir = np.sign(close[ctrl_bar] - open_[ctrl_bar]).astype(np.int64)
    ctrl_bar, ctrl_dir = ctrl_bar[ctrl_dir != 0], ctrl_dir[ctrl_dir != 0]
    frame = pd.DataFrame({
        "bar": np.r_[t_bar, ctrl_bar],
        "direction": np.r_[t_dir, ctrl_dir],
        "level": np.r_[t_level, np.full(len(ctrl_bar), np.nan)],
        "group": np.r_[np.where(t_dir < 0, "event: touch below", "event: touch above"),
                       np.full(len(ctrl_bar), "control")]})
    frame.insert(0, "ts", bars["ts"].to_numpy()[frame["bar"]])
    crossed = np.where(frame["direction"] < 0, close[frame["bar"]] < frame["level"],
                       close[frame["bar"]] > frame["level"])
    frame["closed_through"] = np.where(frame["group"] == "control", np.nan, crossed)
    forward = forward_columns(bars, frame["bar"].to_numpy() + 1, horizons)
    for key, values in forward.items():
        if key.startswith("ret_"):
            frame["continuation" + key[3:]] = frame["direction"].to_numpy() * values
        elif key.startswith(("vol_ann_", "abs_ret_")):
            frame[key] = values
    by_group, ratios = _compare(frame, frame["group"], horizons,
                                ("continuation", "vol_ann", "abs_ret"),
                                n_boot=n_boot, seed=seed)
    through = frame[frame["group"] != "control"].groupby("group")["closed_through"].agg(
        ["count", "mean"]).reset_index().rename(columns={"count": "n_touches",
                                                         "mean": "share_closed_through"})
    notes = [] if len(t_bar) else ["no bar reached a cluster: lower --min-cluster-usd"]
    meta = {"source": source, "tolerances": list(tolerances),
            "horizons": [horizon_name(h) for h in horizons],
            "min_cluster_usd": min_cluster_usd, "burn_in": burn_in,
            "n_touches": int(len(t_bar)), "n_events": int(liquidations.num_rows),
            "map_from": "open interest" if oi is not None else "volume",
            "n_boot": n_boot, "seed": seed}
    return FlowStudy(frame=frame, tables={"hit_rates": hits, "through": through,
                                          "by_group": by_group, "ratios": ratios},
                     notes=tuple(notes), meta=meta)


# --------------------------------------------------------------------------- writing


def _bar_figure(table: pd.DataFrame, measure: str, title: str, y_title: str) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for h, sub in table[table["measure"] == measure].groupby("horizon", sort=False):
        fig.add_trace(go.Bar(
            name=str(h), x=sub["group"], y=sub["mean"],
            error_y={"type": "data", "symmetric": False,
                     "array": (sub["ci_hi"] - sub["mean"]).tolist(),
                     "arrayminus": (sub["mean"] - sub["ci_lo"]).tolist()},
            text=[f"n={n}" for n in sub["n"]]))
    fig.update_layout(title=title, yaxis_title=y_title, barmode="group")
    return fig.to_html(full_html=False, include_plotlyjs=False)


def write_basis_study(study: FlowStudy, out: Path) -> Path:
    """Write the basis study's folder (``study.parquet``, ``tables.json``, ``study.html``)."""
    m = study.meta
    lines = [f"Futures: {', '.join(m['futures'])}", f"Spot: {', '.join(m['spot'])}",
             f"Dislocation: z >= {m['z']} or a move >= {m['jump']:.2%} annualized within "
             f"{m['window']} observations; {m['n_events']} events, {m['n_control']} control "
             f"stamps; publication delay {m['delay']}; block bootstrap ({m['n_boot']}, seed "
             f"{m['seed']}), shuffle permutation p-values."]
    figure = _bar_figure(study.tables["by_group"], "vol_ann",
                         "Forward realized vol after basis dislocations vs control stamps "
                         "(mean, 95% bootstrap interval)", "vol (fraction, annualized)")
    return write_study(out, frame=study.frame, tables=[
        ("Event / control ratios", study.tables["ratios"]),
        ("By group", study.tables["by_group"])],
        title="Basis study: what followed basis dislocations", meta_lines=lines,
        notes=study.notes, figures=[figure])


def write_liquidation_study(study: FlowStudy, out: Path) -> Path:
    """Write the liquidation study's folder."""
    import plotly.graph_objects as go

    m = study.meta
    lines = [f"Market: {m['source']}; map from {m['map_from']}, without the observed "
             f"liquidations; {m['n_events']} observed liquidations; {m['n_touches']} cluster "
             f"touches (clusters >= {m['min_cluster_usd']:,.0f} USD); burn-in {m['burn_in']} "
             "bars."]
    hits = study.tables["hit_rates"]
    fig = go.Figure([go.Bar(name=name, x=[f"{t:.2%}" for t in hits["tolerance"]],
                            y=hits[col])
                     for name, col in (("estimated map", "hit_rate"),
                                       ("evenly spread", "uniform_baseline"),
                                       ("random", "random_baseline"))])
    fig.update_layout(title="Share of liquidated USD near a cluster predicted before it",
                      xaxis_title="tolerance", yaxis_title="hit rate", barmode="group")
    figures = [fig.to_html(full_html=False, include_plotlyjs=False),
               _bar_figure(study.tables["by_group"], "continuation",
                           "Move in the touch's direction after reaching a cluster vs "
                           "control bars (log units)", "continuation (log return)")]
    return write_study(out, frame=study.frame, tables=[
        ("Prediction vs baselines", hits), ("Touches that closed through the level",
                                            study.tables["through"]),
        ("Event / control ratios", study.tables["ratios"]),
        ("By group", study.tables["by_group"])],
        title="Liquidation study: estimated clusters vs what happened", meta_lines=lines,
        notes=study.notes, figures=figures)
