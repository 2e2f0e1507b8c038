"""Instruments benchmark: one year of hourly bars traded with spot, perp and four
quarterly futures vs the single-instrument ``gamma_flip`` run on the same bars.

Both runs go through ``gammabt.run.run`` (Cerebro, the account broker, analyzers,
ledger, metrics) on the same hand-made year (seeded): spot bars, a gamma snapshot per
bar, perp bars with 8-hourly funding and four quarterly futures quoted at every bar.
Baseline: ``gamma_flip`` on spot alone (borrowing on). Measured: the same strategy on
the perp with all six feeds wired (spot, perp, four futures and the front series), and
``basis_dislocation`` trading spot against the futures. Figures: seconds (best of N in
one process) and the ratio to the baseline. Target: at most 3x.

Run: ``.venv/bin/python -m bench.bench_instruments`` (or ``make bench``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run

N_BARS = 8_760
REPEATS = 3
EXPIRIES = ("2024-03-29 08:00", "2024-06-28 08:00", "2024-09-27 08:00", "2024-12-27 08:00")


def year_inputs(seed: int = 3) -> tuple[MarketInputs, MarketInputs]:
    """(spot only, spot + perp + funding + four quarterly futures) on the same bars."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=N_BARS, freq="1h", tz="UTC").as_unit("us")
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.006, N_BARS)))
    open_ = np.r_[40_000, close[:-1]]
    wick = np.abs(rng.normal(0, 0.002, N_BARS)) * close
    bars = pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) + wick,
                         "low": np.minimum(open_, close) - wick, "close": close,
                         "volume": 10.0})
    regime = np.where(np.sin(np.arange(N_BARS) / 200) > 0, 1.0, -1.0)
    summary = pd.DataFrame({"ts": ts, "spot": close, "gex": regime * 1e8,
                            "gamma_flip": close * (1 - 0.02 * regime),
                            "call_wall": close * 1.1, "put_wall": close * 0.9,
                            "regime": regime, "n_contracts": 100})
    premium = 1 + 2e-4 * rng.standard_normal(N_BARS)
    perp = bars.assign(open=open_ * premium, close=close * premium,
                       high=bars["high"] * premium, low=bars["low"] * premium)
    stamps = ts[ts.hour % 8 == 0][1:]
    funding = pd.DataFrame({"ts": stamps, "rate_8h": 1e-4 + 5e-5 * rng.standard_normal(
        len(stamps)), "interval_h": 8.0})
    frames = []
    for expiry in EXPIRIES:
        e = pd.Timestamp(expiry, tz="UTC")
        live = ts < e
        dte = (e - ts[live]) / pd.Timedelta(days=1)
        basis = 0.08 + 0.03 * np.sin(np.arange(live.sum()) / 300)
        frames.append(pd.DataFrame({"ts": ts[live], "expiry": e,
                                    "price": open_[live] * (1 + basis * dte / 365),
                                    "instrument": f"BTC-{e.strftime('%d%b%y').upper()}"}))
    futures = pd.concat(frames, ignore_index=True)
    single = MarketInputs(bars=bars, summary=summary)
    multi = MarketInputs(bars=bars, summary=summary, perp=perp, funding=funding,
                         futures=futures)
    return single, multi


def _best(config: RunConfig, inputs: MarketInputs) -> tuple[float, dict]:
    best, metrics = float("inf"), {}
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = run(config, inputs)
        best = min(best, time.perf_counter() - started)
        metrics = result.metrics
    return best, metrics


def main() -> dict[str, float]:
    single, multi = year_inputs()
    base = RunConfig(strategy="gamma_flip", bars="bench", borrow=True)
    t_base, m_base = _best(base, single)
    t_perp, m_perp = _best(base.replace(instrument="perp"), multi)
    carry = RunConfig(strategy="basis_dislocation", bars="bench",
                      params=(("signal", "front"),))
    t_carry, m_carry = _best(carry, multi)
    rows = [("gamma_flip, spot only (baseline)", t_base, m_base),
            ("gamma_flip on the perp, 7 feeds", t_perp, m_perp),
            ("basis_dislocation, 7 feeds", t_carry, m_carry)]
    print(f"{N_BARS} hourly bars, best of {REPEATS}")
    print(f"{'run':38s} {'seconds':>8s} {'ratio':>6s} {'orders':>7s}")
    for label, seconds, metrics in rows:
        print(f"{label:38s} {seconds:8.2f} {seconds / t_base:6.2f} {metrics['n_orders']:7d}")
    return {"baseline_s": t_base, "gamma_flip_perp_7_feeds_s": t_perp,
            "gamma_flip_ratio": t_perp / t_base, "basis_dislocation_s": t_carry,
            "basis_dislocation_ratio": t_carry / t_base}


if __name__ == "__main__":
    main()
