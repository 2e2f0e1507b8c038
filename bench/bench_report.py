"""Reporting benchmark: the comparison page, the run report page and the tearsheet.

- ``gammabt compare`` of 10 one-year runs (365 daily returns, trades, metrics each),
  from resolving the label glob to the written page. Baseline: reading the same 10 run
  folders (``load_runs`` alone). Target: at most 5 s.
- The report page of a one-year hourly run (8,760 bars, a gamma snapshot per bar,
  perp, funding and four quarterly futures: price, basis and funding panels) and of a
  14-day simulated market (every panel, including GEX by strike and the liquidation
  map). Baseline: writing the run's tables (``write_run`` without pages). Target: at
  most 3 s.
- The QuantStats tearsheet of the one-year run. Same baseline. Target: at most 2 s.

Figures are seconds (best of N in one process) and ratios to the baseline measured in
the same process. Run: ``.venv/bin/python -m bench.bench_report`` (or ``make bench``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_instruments import year_inputs
from feeds.synthetic import simulate
from gammabt.compare import load_runs, write_compare
from gammabt.config import RunConfig
from gammabt.report import write_tearsheet
from gammabt.results import tearsheet_header, write_run
from gammabt.run import run
from gammabt.runpage import write_report_page
from tests.data.runs import fake_run

REPEATS = 3


def best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        root = work / "results"
        for i in range(10):
            fake_run(root, f"20240101T0000{i:02d}Z-year-{i}-{i:08d}", label=f"year-{i}",
                     seed=i, days=365, n_trades=120, mean=0.0005 * (i - 4),
                     params={"lookback": 4 + i})
        load_s = best_of(lambda: load_runs(["year-*"], root))
        compare_s = best_of(lambda: write_compare(load_runs(["year-*"], root),
                                                  work / "cmp" / "compare.html"))

        _, full = year_inputs()
        result = run(RunConfig(bars="bench.csv", instrument="perp", borrow=True), full)
        counter = iter(range(1000))
        tables_s = best_of(lambda: write_run(result, work / f"tables{next(counter)}",
                                             tearsheet=False, report=False))
        report_year_s = best_of(lambda: write_report_page(result, work / "year.html",
                                                          plotlyjs_dir=work))
        tearsheet_s = best_of(lambda: write_tearsheet(
            result.returns, result.benchmark, work / "tearsheet.html", title="bench",
            header=tearsheet_header(result)))

        simulate("basis_unwind", days=14, freq="1h", seed=1).write(work / "market")
        sim = run(RunConfig(strategy="gamma_flip", market=str(work / "market"),
                            instrument="perp"))
        report_sim_s = best_of(lambda: write_report_page(sim, work / "sim.html",
                                                         plotlyjs_dir=work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("compare, 10 one-year runs", compare_s, load_s, 5.0),
        ("report page, one-year hourly run", report_year_s, tables_s, 3.0),
        ("report page, 14-day simulated market (all panels)", report_sim_s, tables_s, 3.0),
        ("tearsheet, one-year run", tearsheet_s, tables_s, 2.0),
    ]
    print(f"{'what':<52} {'seconds':>8} {'x baseline':>11} {'target s':>9}")
    for name, secs, base, target in rows:
        print(f"{name:<52} {secs:8.2f} {secs / base:10.1f}x {target:9.1f}"
              f"{'' if secs <= target else '  OVER TARGET'}")
    print(f"baselines: reading the 10 runs {load_s:.3f} s; writing the run's tables "
          f"{tables_s:.3f} s")
    return {"compare_10_runs_s": round(compare_s, 3), "load_10_runs_s": round(load_s, 3),
            "compare_ratio": round(compare_s / load_s, 1),
            "report_year_s": round(report_year_s, 3),
            "report_sim_s": round(report_sim_s, 3), "tearsheet_year_s": round(tearsheet_s, 3),
            "write_tables_s": round(tables_s, 3),
            "report_ratio": round(report_year_s / tables_s, 1),
            "tearsheet_ratio": round(tearsheet_s / tables_s, 1)}


if __name__ == "__main__":
    main()
