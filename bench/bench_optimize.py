"""Optimization benchmark: 16-config grids on a prepared market vs ``cerebro.optstrategy``.

Setup (seeded, in one process): 20,000 hourly bars with a gamma snapshot per bar
(the feed carries the gamma, liquidation and basis lines), prepared once and written
as a memory-mapped folder.

1. A 4 x 4 SMA-crossover grid (``SmaCross`` below) and a 4 x 4 ``gamma_flip`` grid:
   Backtrader's ``cerebro.optstrategy(maxcpus=2)`` on the same Cerebro (same feeds,
   broker, sizer, analyzers; metrics computed by the same code as a run) vs
   ``gammabt.optimize`` with a local pool of 2 workers and ``engine="auto"`` (the lean
   sweep engine where it reproduces the run). Throughput ratio, which engine ran the
   trials, and the largest metric difference per config over every metric both sides
   compute (relative; must be 0 or <= 1e-9).
2. 1 -> 2 local workers speed-up, beside the same ratio for a pure-Python busy loop
   (what this machine's two cores give at best); Dask ``LocalCluster`` (2 processes) vs
   the pool
   (a 64-config SMA grid on warmed executors, median of three sweeps; starting and
   closing them is reported apart).
3. Dispatch share: on a warmed pool of 2, a 64-config SMA grid; (wall time x workers
   - the trials' own time measured inside the workers) / the trials' own time.
4. Peak resident memory (all processes, sampled every 0.1 s) of a random search of
   ``N_RANDOM`` trials on a shorter market (``RANDOM_BARS`` bars), in a fresh process.

Run: ``.venv/bin/python -m bench.bench_optimize`` (or ``make bench``). Environment
``BENCH_OPT_BARS``, ``BENCH_OPT_RANDOM`` and ``BENCH_OPT_RANDOM_BARS`` shrink it for a
quick look; ``BENCH_OPT_ONLY=random`` runs the memory part alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import psutil

from gammabt import optimize as opt
from gammabt.config import RunConfig
from gammabt.prepared import load_prepared, save_prepared
from gammabt.report import compute_metrics
from gammabt.run import (
    MarketInputs,
    build_cerebro,
    buy_and_hold_returns,
    daily_returns,
    prepare,
)
from strategies.base import GammaStrategy
from strategies.rules import SingleLegRules, simple_moving_average

N_BARS = int(os.environ.get("BENCH_OPT_BARS", 20_000))
N_RANDOM = int(os.environ.get("BENCH_OPT_RANDOM", 1_000))
RANDOM_BARS = int(os.environ.get("BENCH_OPT_RANDOM_BARS", 2_000))
SMA_GRID = ("fast=5,10,15,20", "slow=30,50,80,120")
FLIP_GRID = ("lookback=6,12,18,24", "momentum_min=0.002,0.004,0.006,0.008")
DISPATCH_GRID = ("fast=5:40:5", "slow=50:190:20")


@dataclass(frozen=True)
class SmaCrossRules(SingleLegRules):
    """Long while the fast SMA of the close is above the slow one, flat otherwise."""

    fast: int
    slow: int

    inputs = ("sma_fast", "sma_slow")

    @property
    def warmup(self) -> int:
        return max(self.fast, self.slow) - 1

    def indicators(self, lines: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sma_fast": simple_moving_average(lines["close"], self.fast),
                "sma_slow": simple_moving_average(lines["close"], self.slow)}

    def decide(self, values: tuple[float, ...], direction: int, held: int | None,
               entry_price: float | None) -> int | None:
        fast, slow = values
        return 1 if fast - slow > 0 else 0


class SmaCross(GammaStrategy):
    """:class:`SmaCrossRules` on Backtrader's SMA indicators."""

    params = (("fast", 10), ("slow", 50))
    param_ranges = {"fast": (1, 10_000), "slow": (2, 10_000)}
    rules_class = SmaCrossRules

    def __init__(self) -> None:
        super().__init__()
        self.rules = SmaCrossRules.from_params(self.p)
        self.fast = bt.ind.SMA(self.data.close, period=self.p.fast)
        self.slow = bt.ind.SMA(self.data.close, period=self.p.slow)

    def next(self) -> None:
        target = self.rules.decide((self.fast[0], self.slow[0]), self.direction(), None,
                                   None)
        if target is not None:
            self.go(target)


def hourly_inputs(n: int, seed: int = 5) -> MarketInputs:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2022-01-01", periods=n, freq="1h", tz="UTC").as_unit("us")
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    open_ = np.r_[40_000, close[:-1]]
    wick = np.abs(rng.normal(0, 0.002, n)) * close
    bars = pd.DataFrame({"ts": ts, "open": open_, "high": np.maximum(open_, close) + wick,
                         "low": np.minimum(open_, close) - wick, "close": close,
                         "volume": 10.0})
    regime = np.where(np.sin(np.arange(n) / 150) > 0, 1.0, -1.0)
    summary = pd.DataFrame({"ts": ts, "spot": close, "gex": regime * 1e8,
                            "gamma_flip": close * (1 - 0.02 * regime),
                            "call_wall": close * 1.1, "put_wall": close * 0.9,
                            "regime": regime, "n_contracts": 100})
    return MarketInputs(bars=bars, summary=summary)


def _grid_values(grid: tuple[str, ...], strategy: str) -> dict[str, list[Any]]:
    return {d.name: list(d.values) for d in (opt.parse_dimension(g, strategy) for g in grid)}


def optstrategy_baseline(config: RunConfig, market: Any, strategy: type,
                         grid: dict[str, list[Any]]) -> tuple[float, dict[tuple, dict]]:
    """Backtrader's own optimizer on the same Cerebro; metrics as ``gammabt.run`` does
    (timed together: both sides deliver the same metrics per config)."""
    cerebro = build_cerebro(config, market)
    cerebro.strats.clear()
    cerebro.optstrategy(strategy, **grid)
    started = time.perf_counter()
    results = cerebro.run(maxcpus=2, optreturn=True)
    bench_bars = market.bars()
    out = {}
    for [strat] in results:
        equity = strat.analyzers.equity.get_analysis()
        returns = daily_returns(equity, config.cash)
        benchmark = buy_and_hold_returns(bench_bars).reindex(returns.index)
        metrics = compute_metrics(returns, benchmark, periods_per_year=365,
                                  trades=strat.analyzers.trades.get_analysis(),
                                  orders=strat.analyzers.orders.get_analysis())
        metrics["final_value"] = float(equity["value"].iloc[-1])
        key = tuple(getattr(strat.params, k) for k in grid)
        out[key] = metrics
    # the metrics are part of the job: a trial row of gammabt carries them too
    return time.perf_counter() - started, out


def _timed(spec: opt.OptimizeSpec, market: Any, folder: Path, executor: opt.Executor,
           out: Path) -> tuple[float, pd.DataFrame]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    try:
        trials = opt.optimize(spec, market, folder, executor, folder=out).trials
    finally:
        executor.close()
    return time.perf_counter() - started, trials


REPEATS = 3


def _busy(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def machine_scaling(n: int = 6_000_000, jobs: int = 8) -> float:
    """How much faster 2 processes finish ``jobs`` pure-Python busy loops than 1 (a
    fork pool, median of 3): the ceiling for any 1 -> 2 worker speed-up here (shared
    virtual cores rarely give 2x)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    walls = {}
    for workers in (1, 2):
        with context.Pool(workers) as pool:
            times = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                pool.map(_busy, [n] * jobs)
                times.append(time.perf_counter() - started)
        walls[workers] = float(np.median(times))
    return walls[1] / walls[2]


def _repeated(spec: opt.OptimizeSpec, market: Any, folder: Path, executor: opt.Executor,
              out: Path, closing: list[float]) -> tuple[float, pd.DataFrame]:
    """Median wall time of ``REPEATS`` optimizations on one executor (each into a fresh
    folder, so every trial runs), then the executor's close, timed into ``closing``."""
    times, trials = [], None
    try:
        for _ in range(REPEATS):
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            trials = opt.optimize(spec, market, folder, executor, folder=out).trials
            times.append(time.perf_counter() - started)
    finally:
        started = time.perf_counter()
        executor.close()
        closing.append(time.perf_counter() - started)
    return float(np.median(times)), trials


def _warmed(executor: opt.Executor, market: Any, workers: int) -> opt.Executor:
    """``executor`` after a buy-and-hold task per worker: processes started, modules
    imported, the market mapped (no indicator a timed trial could reuse)."""
    base = RunConfig(strategy="buy_and_hold", bars="bench")
    tasks = [opt.make_task(dataclasses.replace(base, cash=1e5 + i), i, {},
                           market.input_hashes) for i in range(2 * workers)]
    list(executor.map_unordered(tasks))
    return executor


def _max_diff(trials: pd.DataFrame, baseline: dict[tuple, dict], names: list[str],
              ) -> tuple[float, float]:
    """Largest absolute and relative difference over every metric the baseline has."""
    worst_abs = worst_rel = 0.0
    for _, row in trials.iterrows():
        ref = baseline[tuple(row[f"param.{n}"] for n in names)]
        for m, want in ref.items():
            if m not in row.index or not isinstance(want, int | float | type(None)):
                continue
            a = np.nan if row[m] is None else float(row[m])
            b = np.nan if want is None else float(want)
            if np.isnan(a) and np.isnan(b):
                continue
            diff = abs(a - b)
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, 0.0 if diff == 0 else diff / max(abs(a), abs(b)))
    return worst_abs, worst_rel


def _engines(trials: pd.DataFrame) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(trials["engine"].value_counts().items()))


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Equal trial rows (NaN equals NaN; elapsed time and column order ignored)."""
    cols = sorted(set(a.columns) - {"elapsed_s"})
    if cols != sorted(set(b.columns) - {"elapsed_s"}):
        return False
    try:
        pd.testing.assert_frame_equal(a[cols].reset_index(drop=True),
                                      b[cols].reset_index(drop=True), check_exact=True)
    except AssertionError:
        return False
    return True


class PeakRss:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self.peak_pss = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = pss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    total += info.rss
                    pss += getattr(info, "pss", info.rss)
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, pss)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> dict[str, Any]:
    opt.quiet()
    work = Path(tempfile.mkdtemp(prefix="bench-opt-"))
    figures: dict[str, Any] = {"n_bars": N_BARS}
    if os.environ.get("BENCH_OPT_ONLY") == "random":
        try:
            return {"random": random_memory(work)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        inputs = hourly_inputs(N_BARS)
        base = RunConfig(strategy="gamma_flip", bars="bench", borrow=True)
        folder = save_prepared(prepare(base, inputs), work / "market")
        market = load_prepared(folder)
        print(f"{N_BARS} hourly bars, 16-config grids, 2 cores")
        print(f"{'grid':10s} {'optstrategy s':>13s} {'gammabt s':>10s} {'ratio':>6s} "
              f"{'max |diff|':>10s} {'max rel':>8s}  engines")
        for label, strategy_spec, cls, grid in (
                ("sma_cross", "bench.bench_optimize:SmaCross", SmaCross, SMA_GRID),
                ("gamma_flip", "gamma_flip", None, FLIP_GRID)):
            config = RunConfig(strategy=strategy_spec, bars="bench", borrow=True)
            from strategies.registry import get_strategy

            klass = cls if cls is not None else get_strategy(strategy_spec)
            values = _grid_values(grid, strategy_spec)
            t_bt, baseline = optstrategy_baseline(config, market, klass, values)
            spec = opt.OptimizeSpec(base=config, dims=tuple(
                opt.parse_dimension(g, strategy_spec) for g in grid), engine="auto")
            t_us, trials = _timed(spec, market, folder, opt.LocalPool(folder, 2),
                                  work / f"opt-{label}")
            diff, rel = _max_diff(trials, baseline, list(values))
            print(f"{label:10s} {t_bt:13.2f} {t_us:10.2f} {t_bt / t_us:6.2f} {diff:10.2g} "
                  f"{rel:8.2g}  {_engines(trials)}")
            figures[label] = {"optstrategy_maxcpus2_s": t_bt, "gammabt_pool2_s": t_us,
                              "throughput_ratio": t_bt / t_us, "max_metric_diff": diff,
                              "max_metric_rel_diff": rel, "engines": _engines(trials),
                              "configs_per_s": len(trials) / t_us,
                              "mean_trial_s": float(trials["elapsed_s"].mean())}
        # from here on, warmed executors: the trials, not process start-up, are timed
        # (start and close of each executor are timed apart), on the 64-config SMA grid
        # (the 16-config one is about a second of work: too short to time scaling) and
        # as the median of REPEATS sweeps, each into a fresh folder
        strategy = "bench.bench_optimize:SmaCross"
        spec = opt.OptimizeSpec(base=RunConfig(strategy=strategy, bars="bench", borrow=True),
                                dims=tuple(opt.parse_dimension(g, strategy)
                                           for g in DISPATCH_GRID), engine="auto")
        closing: list[float] = []
        t_pool1, _ = _repeated(spec, market, folder,
                               _warmed(opt.LocalPool(folder, 1), market, 1), work / "p1",
                               closing)
        t_pool2w, trials2 = _repeated(spec, market, folder,
                                      _warmed(opt.LocalPool(folder, 2), market, 2),
                                      work / "p2", closing)
        started = time.perf_counter()
        dask = _warmed(opt.DaskExecutor(folder, local_workers=2), market, 2)
        t_dask_start = time.perf_counter() - started
        t_dask, trials_dask = _repeated(spec, market, folder, dask, work / "dask", closing)
        same = _same_rows(trials_dask, trials2)
        ceiling = machine_scaling()
        figures["workers"] = {"n_trials": len(trials2), "pool1_s": t_pool1,
                              "machine_speedup_1_to_2": ceiling,
                              "pool2_s": t_pool2w, "speedup_1_to_2": t_pool1 / t_pool2w,
                              "dask2_s": t_dask, "dask_vs_pool": t_dask / t_pool2w,
                              "dask_identical": same, "dask_start_s": t_dask_start,
                              "dask_close_s": closing[-1]}
        print(f"sma_cross {len(trials2)} configs, warmed executors, median of {REPEATS}: "
              f"pool 1 worker {t_pool1:.2f} s, 2 workers {t_pool2w:.2f} s (speed-up "
              f"{t_pool1 / t_pool2w:.2f}x; a pure-Python busy loop on this machine: "
              f"{ceiling:.2f}x); Dask LocalCluster 2 {t_dask:.2f} s "
              f"({t_dask / t_pool2w:.2f}x the pool, identical rows: {same}; cluster start "
              f"and warm-up {t_dask_start:.1f} s, close {closing[-1]:.1f} s)")
        figures["dispatch"] = dispatch_share(market, folder, work)
        if N_RANDOM:
            figures["random"] = random_memory_alone()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def dispatch_share(market: Any, folder: Path, work: Path) -> dict[str, Any]:
    """Dispatch and imbalance on a warmed pool of 2: a 64-config SMA grid."""
    strategy = "bench.bench_optimize:SmaCross"
    spec = opt.OptimizeSpec(base=RunConfig(strategy=strategy, bars="bench", borrow=True),
                            dims=tuple(opt.parse_dimension(g, strategy)
                                       for g in DISPATCH_GRID), engine="auto")
    wall, trials = _timed(spec, market, folder, _warmed(opt.LocalPool(folder, 2), market, 2),
                          work / "dispatch")
    busy = float(trials["elapsed_s"].sum())
    share = (wall * 2 - busy) / busy
    print(f"dispatch (warmed pool of 2, {len(trials)} configs): wall {wall:.2f} s, trials "
          f"{busy / len(trials):.3f} s each, dispatch + imbalance {100 * share:.1f}% of "
          f"the trials' time; engines: {_engines(trials)}")
    return {"n_trials": len(trials), "wall_s": wall, "trial_s_mean": busy / len(trials),
            "dispatch_share": share}


def random_memory_alone() -> dict[str, Any]:
    """:func:`random_memory` in a fresh process, so the figure is the search's own and
    not the 20,000-bar market and baselines this process holds by then."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "random.json"
        env = {**os.environ, "BENCH_OPT_ONLY": "random", "BENCH_OPT_JSON": str(out)}
        subprocess.run([sys.executable, "-m", "bench.bench_optimize"], env=env, check=True,
                       cwd=Path(__file__).resolve().parents[1])
        return json.loads(out.read_text())


def random_memory(work: Path) -> dict[str, Any]:
    """Peak memory of all processes during a random search of ``N_RANDOM`` trials."""
    base = RunConfig(strategy="gamma_flip", bars="bench", borrow=True)
    small = save_prepared(prepare(base, hourly_inputs(RANDOM_BARS, seed=6)),
                          work / "small")
    small_market = load_prepared(small)
    rspec = opt.OptimizeSpec(base=RunConfig(strategy="bench.bench_optimize:SmaCross",
                                            bars="bench", borrow=True),
                             dims=(opt.parse_dimension("fast=2:40", "bench.bench_optimize:"
                                                       "SmaCross"),
                                   opt.parse_dimension("slow=41:200", "bench.bench_"
                                                       "optimize:SmaCross")),
                             search="random", n_trials=N_RANDOM, seed=1, engine="auto")
    with PeakRss() as rss:
        t_rand, rtrials = _timed(rspec, small_market, small, opt.LocalPool(small, 2),
                                 work / "random")
    print(f"random search: {len(rtrials)} trials ({_engines(rtrials)}) x {RANDOM_BARS} bars "
          f"in {t_rand:.1f} s, "
          f"peak of all processes: RSS {rss.peak / 2**20:.0f} MB (shared pages counted "
          f"once per process), PSS {rss.peak_pss / 2**20:.0f} MB (shared pages split)")
    return {"n_trials": len(rtrials), "n_bars": RANDOM_BARS, "seconds": t_rand,
            "peak_rss_mb_all_processes": rss.peak / 2**20,
            "peak_pss_mb_all_processes": rss.peak_pss / 2**20}


if __name__ == "__main__":
    figures = main()
    if os.environ.get("BENCH_OPT_JSON"):  # read back by random_memory_alone
        Path(os.environ["BENCH_OPT_JSON"]).write_text(
            json.dumps(figures.get("random", figures), default=str))
