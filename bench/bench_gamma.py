"""Gamma engine benchmark: ``indicators.gamma.summarize`` against the common public method.

Run: ``.venv/bin/python -m bench.bench_gamma`` (or ``make bench`` for every benchmark).

1. Real data: the 181 OptionsDX daily Deribit snapshots (six files, ~409 options each,
   loaded with ``feeds.loaders.load_chain``), both methods in the same process on the
   same pandas DataFrame, best of several runs.
   "Common public method": what public GEX scripts do (e.g. the widely copied
   "gamma exposure and zero gamma level" notebook): per snapshot, loop over 60 spot
   levels in 0.8..1.2 S, numpy over the rows with ``scipy.stats.norm.pdf``, then the
   *first* sign change, linearly interpolated. For transparency the same loop with a
   hand-written ``np.exp`` pdf ("tuned public") is timed too.
2. Scale: 8,760 hourly snapshots x 800 options. Source: ``feeds.synthetic.simulate``
   when it can produce that chain, else a seeded numpy chain generated here (Deribit-like
   expiries, strikes around a random-walk spot, smile, open interest); the output says
   which. Peak memory: ``tracemalloc`` peak during ``summarize`` (numpy and Python
   allocations), and the peak resident set of a fresh child process that reads the
   chain from Parquet and runs ``summarize`` on it: chain + engine, without the
   generator's memory (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` where there
   is no /proc, which on Linux would include the parent's peak inherited at fork).
"""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from indicators.gamma import summarize

MONTHS = ("202106", "202107", "202201", "202202", "202203", "202204")
YEAR_SECONDS = 365 * 86400


# ---------------------------------------------------------------------------------------
# The common public method (baseline)


def _np_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def public_method(chain: pd.DataFrame, *, pdf: Callable[[np.ndarray], np.ndarray] = norm.pdf,
                  n_levels: int = 60, lo: float = 0.8, hi: float = 1.2) -> pd.DataFrame:
    """Per snapshot: 60 spot levels in [lo, hi] * S, numpy over rows, first sign change.

    Same conventions as the engine (per-row forward moved with spot, r = q = 0, dealers
    long calls / short puts, USD per 1% move) so that the work compared is the same.
    """
    out = []
    for ts, snap in chain.groupby("ts", sort=True):
        T = (snap["expiry"] - snap["ts"]).dt.total_seconds().to_numpy() / YEAR_SECONDS
        K = snap["strike"].to_numpy()
        F = snap["underlying_price"].to_numpy()
        oi = snap["open_interest"].to_numpy()
        iv = snap["mark_iv"].to_numpy()
        sign = np.where(snap["right"].to_numpy() == "C", 1.0, -1.0)
        ok = (T > 0) & (oi > 0) & (iv > 0)
        K, F, oi, iv, sign, T = K[ok], F[ok], oi[ok], iv[ok], sign[ok], T[ok]
        spot = float(np.median(snap["underlying_price"]))
        levels = np.linspace(lo * spot, hi * spot, n_levels)
        total = []
        for level in levels:
            fwd = F * level / spot
            d1 = (np.log(fwd / K) + 0.5 * iv**2 * T) / (iv * np.sqrt(T))
            g = pdf(d1) / (fwd * iv * np.sqrt(T))
            total.append(np.sum(sign * g * oi * fwd**2 * 0.01))
        total_arr = np.array(total)
        cross = np.where(np.diff(np.sign(total_arr)))[0]
        flip = np.nan
        if cross.size:
            i = cross[0]
            flip = levels[i] - total_arr[i] * (levels[i + 1] - levels[i]) / (
                total_arr[i + 1] - total_arr[i])
        out.append((ts, spot, flip))
    return pd.DataFrame(out, columns=["ts", "spot", "gamma_flip"])


# ---------------------------------------------------------------------------------------
# Inputs


def load_optionsdx() -> tuple[pd.DataFrame, str]:
    """The six OptionsDX files as one pandas chain, and how they were read."""
    from feeds.realdata import real_data_root

    folder = real_data_root() / "options" / "optionsdx_btc_eod"
    paths = [folder / f"btc_eod_{m}.txt.gz" for m in MONTHS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"real data missing: {missing[0]}")
    try:
        from feeds.loaders import load_chain
    except ImportError:
        return pd.concat([_read_optionsdx(p) for p in paths], ignore_index=True), "pandas"
    return (pd.concat([load_chain(p).to_pandas() for p in paths], ignore_index=True),
            "feeds.loaders.load_chain")


def _read_optionsdx(path: Path) -> pd.DataFrame:
    """Fallback reader (only when feeds.loaders is unavailable)."""
    raw = pd.read_csv(path, skipinitialspace=True)
    raw.columns = [c.strip("[] ") for c in raw.columns]

    def utc(col: str) -> pd.Series:
        return pd.to_datetime(raw[col], unit="s", utc=True).astype("datetime64[us, UTC]")

    return pd.DataFrame({
        "ts": utc("QUOTE_UNIXTIME"), "expiry": utc("EXPIRY_UNIX"),
        "strike": raw["STRIKE"].astype(float),
        "right": np.where(raw["OPTION_RIGHT"].str.strip() == "call", "C", "P"),
        "open_interest": raw["OPEN_INTEREST"].astype(float),
        "mark_iv": raw["MARK_IV"].astype(float) / 100.0,
        "underlying_price": raw["UNDERLYING_PRICE"].astype(float),
        "multiplier": raw["CONTRACT_SIZE"].astype(float),
    }).sort_values(["ts", "expiry", "strike", "right"], ignore_index=True)


def synthetic_chain(n_snap: int = 8760, n_options: int = 800, seed: int = 2024,
                    ) -> pd.DataFrame:
    """Seeded Deribit-like hourly chain: ``n_snap`` snapshots x ``n_options`` options.

    Spot: GBM at 60% annual vol from 60,000 USD. Ten expiries per snapshot (three
    dailies, three weeklies, three monthlies, one quarterly; 08:00 UTC), ``n_options / 20``
    strikes per expiry spread over +-3 standard deviations (at least +-9%, rounded to
    50 USD), calls
    and puts. Forward = spot * (1 + 5% * T). IV: term structure + skew + smile.
    Open interest: lognormal, largest near the money and on round strikes.
    """
    rng = np.random.default_rng(seed)
    per_exp = max(1, n_options // 20)
    start = np.datetime64("2024-01-01T00:00", "us")
    ts = start + np.arange(n_snap) * np.timedelta64(3600, "s")
    spot = 60_000.0 * np.exp(np.cumsum(0.6 / np.sqrt(8760) * rng.standard_normal(n_snap)))
    day = ts.astype("datetime64[D]")
    first = day + np.where(ts >= day + np.timedelta64(8, "h"), 1, 0)  # next 08:00 day
    offsets = np.array([0, 1, 2, 7, 14, 21, 30, 60, 90, 180])  # days after the first expiry
    expiry = (first[:, None] + offsets[None, :]).astype("datetime64[us]") + np.timedelta64(8, "h")
    T = (expiry - ts[:, None]).astype(np.int64) / 1e6 / YEAR_SECONDS  # (n_snap, 10)
    fwd = spot[:, None] * (1 + 0.05 * T)
    z = np.linspace(-3.0, 3.0, per_exp)
    base_iv = 0.45 + 0.15 * np.exp(-T * 12)  # (n_snap, 10)
    width = np.maximum(base_iv * np.sqrt(T), 0.03)[..., None]  # no duplicate strikes
    K = np.round(fwd[..., None] * np.exp(width * z) / 50.0) * 50.0  # (n_snap, 10, per_exp)
    m = np.log(K / fwd[..., None]) / np.maximum(np.sqrt(T)[..., None], 0.05)
    iv = base_iv[..., None] * (1 - 0.08 * m + 0.05 * m * m) * np.exp(
        0.02 * rng.standard_normal(K.shape))
    round_bonus = np.where(K % 5000 == 0, 3.0, 1.0)
    shape = (n_snap, offsets.size, per_exp, 2)
    oi = np.round(rng.lognormal(3.0, 1.0, shape) * (round_bonus * np.exp(-0.3 * z * z))[..., None]
                  * (1 + 2 * (offsets[None, :, None, None] >= 7)), 1)

    def expand(a: np.ndarray) -> np.ndarray:  # (n_snap, 10, per_exp) -> rows
        return np.broadcast_to(a[..., None], shape).ravel()

    n_rows = int(np.prod(shape))
    chain = pd.DataFrame({
        "ts": pd.Series(np.repeat(ts, n_rows // n_snap)).dt.tz_localize("UTC"),
        "expiry": pd.Series(expand(np.broadcast_to(expiry[..., None], K.shape))
                            ).dt.tz_localize("UTC"),
        "strike": expand(K),
        "right": pd.Series(np.tile(np.array(["C", "P"]), n_rows // 2), dtype="string"),
        "open_interest": oi.ravel(),
        "mark_iv": expand(np.clip(iv, 0.1, 3.0)),
        "underlying_price": expand(np.broadcast_to(fwd[..., None], K.shape)),
        "multiplier": 1.0,
        "index_price": np.repeat(spot, n_rows // n_snap),
    })
    return chain


def scale_chain(n_snap: int, n_options: int, source: str) -> tuple[pd.DataFrame, str]:
    """The scale input: the simulator's chain if asked for and usable, else synthetic."""
    if source in ("auto", "simulate"):
        try:
            from feeds.synthetic import simulate

            market = simulate("calm", days=n_snap / 24, freq="1h", chain_freq="1h", seed=0,
                              n_options=n_options)
            chain = market.chain.to_pandas()
            if chain["ts"].nunique() >= 0.95 * n_snap:
                return chain, "feeds.synthetic.simulate('calm', seed=0)"
            reason = f"simulate gave {chain['ts'].nunique()} snapshots"
        except Exception as exc:  # the simulator is optional for this benchmark
            if source == "simulate":
                raise
            reason = f"{type(exc).__name__}: {exc}"
        print(f"  (feeds.synthetic.simulate not usable here: {reason[:120]}; "
              "using the seeded generator in bench_gamma)")
    return synthetic_chain(n_snap, n_options), "bench_gamma.synthetic_chain(seed=2024)"


# ---------------------------------------------------------------------------------------
# Measurement


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = np.inf, None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _rss_mb(rss: int) -> float:
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


_CHILD = """
import resource, sys, time
from pathlib import Path
import pandas as pd
from indicators.gamma import summarize
chain = pd.read_parquet(sys.argv[1])
t0 = time.perf_counter()
summarize(chain)
seconds = time.perf_counter() - t0
status = Path("/proc/self/status")
if status.exists():
    hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
    peak_mb = int(hwm[0].split()[1]) / 1024
else:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(peak_mb, seconds)
"""


def child_peak_rss(chain: pd.DataFrame) -> tuple[float, float]:
    """(peak RSS MB, summarize seconds) of a fresh process: read Parquet + summarize."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.parquet"
        chain.to_parquet(path, index=False)
        done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True,
                              capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    peak_mb, seconds = done.stdout.strip().splitlines()[-1].split()
    return float(peak_mb), float(seconds)


def bench_real(repeats: int = 7) -> dict[str, Any]:
    chain, how = load_optionsdx()
    n_snap = chain["ts"].nunique()
    t_fast, fast = _best(lambda: summarize(chain), repeats)
    t_pub, pub = _best(lambda: public_method(chain), max(1, repeats // 3))
    t_tuned, _ = _best(lambda: public_method(chain, pdf=_np_pdf), max(1, repeats // 3))
    both = np.isfinite(fast["gamma_flip"]) & np.isfinite(pub["gamma_flip"])
    rel = (fast["gamma_flip"] / pub["gamma_flip"] - 1).abs()
    return {
        "loader": how,
        "snapshots": int(n_snap),
        "options": len(chain),
        "options_per_snapshot": len(chain) / n_snap,
        "summarize_s": t_fast,
        "summarize_ms_per_snapshot": 1e3 * t_fast / n_snap,
        "public_s": t_pub,
        "public_tuned_s": t_tuned,
        "speedup_vs_public": t_pub / t_fast,
        "speedup_vs_public_tuned": t_tuned / t_fast,
        "flip_found_fast": int(fast["gamma_flip"].notna().sum()),
        "flip_found_public": int(pub["gamma_flip"].notna().sum()),
        "flip_differs_gt_0.5pct": int((both & (rel > 0.005)).sum()),
    }


def bench_scale(n_snap: int = 8760, n_options: int = 800, source: str = "auto",
                ) -> dict[str, Any]:
    t0 = time.perf_counter()
    chain, how = scale_chain(n_snap, n_options, source)
    t_gen = time.perf_counter() - t0
    t_sum, s = _best(lambda: summarize(chain), 2)
    gc.collect()
    tracemalloc.start()
    summarize(chain)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    child_rss, child_s = child_peak_rss(chain)
    # The public method on the first 200 snapshots, extrapolated per snapshot.
    first = chain["ts"] < np.sort(chain["ts"].unique())[min(200, n_snap) - 1] + pd.Timedelta(1, "s")
    sub = chain[first]
    t_pub = _best(lambda: public_method(sub), 1)[0]
    per_pub = t_pub / sub["ts"].nunique()
    return {
        "source": how,
        "snapshots": int(chain["ts"].nunique()),
        "options": len(chain),
        "generate_s": t_gen,
        "summarize_s": t_sum,
        "summarize_ms_per_snapshot": 1e3 * t_sum / max(1, s.shape[0]),
        "chain_memory_mb": chain.memory_usage(deep=True).sum() / 2**20,
        "peak_tracemalloc_mb": peak / 2**20,
        "child_peak_rss_mb": child_rss,
        "child_summarize_s": child_s,
        "process_maxrss_mb": _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "public_ms_per_snapshot": 1e3 * per_pub,
        "speedup_vs_public_extrapolated": per_pub * s.shape[0] / t_sum,
        "flips_found": int(s["gamma_flip"].notna().sum()),
    }


def main(*, repeats: int = 7, scale_snapshots: int = 8760, scale_options: int = 800,
         scale_source: str = "auto") -> dict[str, Any]:
    """Run both benchmarks, print a table, return the figures."""
    figures: dict[str, Any] = {}
    try:
        figures["real"] = bench_real(repeats)
    except FileNotFoundError as exc:
        print(f"  real-data benchmark skipped: {exc}")
    figures["scale"] = bench_scale(scale_snapshots, scale_options, scale_source)
    rows = []
    if "real" in figures:
        r = figures["real"]
        rows += [
            ("real: chain", f"{r['snapshots']} snapshots, {r['options']} options "
                            f"({r['options_per_snapshot']:.0f}/snapshot), {r['loader']}"),
            ("real: summarize", f"{1e3 * r['summarize_s']:.1f} ms "
                                f"({r['summarize_ms_per_snapshot']:.3f} ms/snapshot)"),
            ("real: public method (norm.pdf)", f"{1e3 * r['public_s']:.1f} ms"),
            ("real: public method (np.exp pdf)", f"{1e3 * r['public_tuned_s']:.1f} ms"),
            ("real: speed-up vs public", f"{r['speedup_vs_public']:.1f}x "
                                         f"(target >= 20x); vs tuned "
                                         f"{r['speedup_vs_public_tuned']:.1f}x"),
            ("real: flips found (fast / public)",
             f"{r['flip_found_fast']} / {r['flip_found_public']}; differ by >0.5%: "
             f"{r['flip_differs_gt_0.5pct']}"),
        ]
    s = figures["scale"]
    rows += [
        ("scale: chain", f"{s['snapshots']} x {s['options'] // max(1, s['snapshots'])} = "
                         f"{s['options']:,} options, {s['source']}"),
        ("scale: summarize", f"{s['summarize_s']:.2f} s (target <= 15 s), "
                             f"{s['summarize_ms_per_snapshot']:.3f} ms/snapshot"),
        ("scale: peak memory", f"{s['child_peak_rss_mb']:.0f} MB peak RSS of a fresh process "
                               "reading the chain + summarize (target < 2048 MB)"),
        ("scale: memory detail", f"chain {s['chain_memory_mb']:.0f} MB in pandas; summarize "
                                 f"allocations peak {s['peak_tracemalloc_mb']:.0f} MB "
                                 f"(tracemalloc); this process maxrss "
                                 f"{s['process_maxrss_mb']:.0f} MB incl. the generator"),
        ("scale: public method (200 snapshots)", f"{s['public_ms_per_snapshot']:.2f} ms/snapshot"
                                                 f" -> {s['speedup_vs_public_extrapolated']:.0f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'gamma engine'.ljust(width)}  figure")
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return figures


if __name__ == "__main__":
    main()
