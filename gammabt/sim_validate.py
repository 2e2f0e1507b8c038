"""Simulated stylized facts against the real hourly data: ``gammabt simulate --validate``.

Facts per series (see :func:`indicators.events.stylized_facts`): annualized vol,
excess kurtosis of hourly log returns, autocorrelation of |r| at lags 1, 24 and 168;
plus the short/long-gamma forward 24 h vol ratio and the share of snapshots in short
gamma, measured on both sides with the same pipeline as ``gammabt study regime``
(daily chain snapshots, regime from :func:`indicators.gamma.summarize`, forward vol
from the first bar at or after the snapshot). ``ratio_true_regime`` is the simulator's
own per-bar figure (RMS hourly return in the true short vs long dealer regime, as in the
simulator validation tests); the real data has no such truth.
Real side: every calendar year with at least 90 % of its hours in each hourly bars
file; the ratio and share from the OptionsDX chains (2021, 2022) with Bitstamp bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from feeds.loaders import load_bars
from feeds.realdata import real_file
from gammabt.study import attach_forward, parse_horizons, regime_study, snapshot_features
from indicators.events import ratio_of_means, stylized_facts
from indicators.gamma import summarize

FACTS = ("vol_ann", "kurtosis_excess", "acf_abs_1", "acf_abs_24", "acf_abs_168",
         "ratio_short_long", "share_short", "ratio_true_regime")
DEFAULT_REAL_BARS = ("ohlcv/Bitstamp_BTCUSD_1h.csv.gz", "ohlcv/binance_BTCUSDT_1h_2023-2026.csv.gz")
OPTIONSDX = tuple(f"options/optionsdx_btc_eod/btc_eod_{m}.txt.gz"
                  for m in ("202106", "202107", "202201", "202202", "202203", "202204"))
SIM = {"days": 30, "freq": "1h", "chain_freq": "1D", "n_options": 400}


def _log_returns(bars: pd.DataFrame) -> np.ndarray:
    c = bars["close"].to_numpy()
    r = np.diff(np.log(c))
    # a missing hour would make a two-hour return: leave it out
    gap = np.diff(bars["ts"].to_numpy()) != np.timedelta64(1, "h")
    r[gap] = np.nan
    return r


def real_facts(bars_files: Sequence[Path]) -> pd.DataFrame:
    """One row per (file, calendar year) with at least 90 % of its hours."""
    rows = []
    for path in bars_files:
        bars = load_bars(path).to_pandas()
        for year, sub in bars.groupby(bars["ts"].dt.year):
            if len(sub) < 0.9 * 8760:
                continue
            rows.append({"series": f"{Path(path).name} {year}",
                         **stylized_facts(_log_returns(sub.reset_index(drop=True)))})
    return pd.DataFrame(rows)


def real_regime_facts() -> pd.DataFrame:
    """Forward 24 h vol ratio and short share per year on OptionsDX x Bitstamp."""
    chains = [real_file(p) for p in OPTIONSDX]
    bars = real_file(DEFAULT_REAL_BARS[0])
    if bars is None or any(c is None for c in chains):
        return pd.DataFrame(columns=["series", "ratio_short_long", "share_short"])
    st = regime_study(chains, bars, horizons=parse_horizons("24h"), n_boot=100)
    s = st.snapshots
    rows = []
    for year, sub in s.groupby(s["ts"].dt.year):
        rows.append({"series": f"OptionsDX x Bitstamp {year}",
                     "ratio_short_long": ratio_of_means(sub["vol_ann_24h"], sub["regime"]),
                     "share_short": float((sub["regime"] < 0).mean())})
    return pd.DataFrame(rows)


def simulated_facts(scenario: str = "calm", seeds: int = 20) -> pd.DataFrame:
    """One row per seed ``0 .. seeds-1`` of ``scenario`` (30 days, daily chains)."""
    from feeds.synthetic import simulate

    rows = []
    for seed in range(seeds):
        m = simulate(scenario, seed=seed, **SIM)
        bars = m.bars.to_pandas()
        summ = summarize(m.chain)
        snap = attach_forward(snapshot_features(summ), bars, parse_horizons("24h"),
                              summ["ts"])
        dg = m.dealer_gamma.to_pandas()
        r = np.log(bars["close"] / bars["open"]).to_numpy()
        reg = dg["regime"].to_numpy()
        true_ratio = (np.sqrt(np.mean(r[reg < 0] ** 2) / np.mean(r[reg > 0] ** 2))
                      if (reg < 0).any() and (reg > 0).any() else np.nan)
        rows.append({"series": f"{scenario} seed {seed}", "ratio_true_regime": true_ratio,
                     **stylized_facts(_log_returns(bars)),
                     "ratio_short_long": ratio_of_means(snap["vol_ann_24h"], snap["regime"]),
                     "share_short": float((snap["regime"] < 0).mean())})
    return pd.DataFrame(rows)


def compare(real: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side: real min / max over series, simulated mean, min, max, in range."""
    rows = []
    for f in FACTS:
        rv = real[f].dropna() if f in real else pd.Series(dtype=float)
        sv = sim[f].dropna() if f in sim else pd.Series(dtype=float)
        lo, hi = (rv.min(), rv.max()) if len(rv) else (np.nan, np.nan)
        mean = sv.mean() if len(sv) else np.nan
        rows.append({"fact": f, "real_min": lo, "real_max": hi, "real_n": int(len(rv)),
                     "sim_mean": mean, "sim_min": sv.min() if len(sv) else np.nan,
                     "sim_max": sv.max() if len(sv) else np.nan,
                     "sim_mean_in_real_range": bool(lo <= mean <= hi) if len(rv) else None})
    return pd.DataFrame(rows)
