"""Regime-study benchmark: ``gammabt study regime`` on all six OptionsDX months.

Run: ``.venv/bin/python -m bench.bench_study`` (or ``make bench``).

The study of the 181 daily OptionsDX snapshots (2021-06/07, 2022-01..04) against the
Bitstamp hourly bars (37,387 bars), horizons 1h, 4h, 24h, split by year, 2000 bootstrap
resamples, written to a temporary folder (parquet, tables, HTML with plotly.js): the
whole command as a user runs it, in-process. Budget: 10 s. The first run may build the
loaders' Parquet cache; the best of the later runs shows the steady state.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from feeds.realdata import real_file
from gammabt.cli import main as cli_main

MONTHS = ("202106", "202107", "202201", "202202", "202203", "202204")
BUDGET_S = 10.0


def main() -> dict[str, object]:
    chains = [real_file(f"options/optionsdx_btc_eod/btc_eod_{m}.txt.gz") for m in MONTHS]
    bars = real_file("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")
    if bars is None or any(c is None for c in chains):
        print("real data not found: skipped")
        return {"skipped": "real data not found"}
    args = ["study", "regime", "--bars", str(bars), "--by", "year"]
    for c in chains:
        args += ["--chain", str(c)]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(3):
            t0 = time.perf_counter()
            code = cli_main(args + ["--out", str(Path(tmp) / f"run{k}")])
            times.append(time.perf_counter() - t0)
            if code != 0:
                raise SystemExit(f"study regime failed with exit code {code}")
    first, best = times[0], min(times[1:])
    ok = first <= BUDGET_S
    print(f"study regime, 6 OptionsDX months x Bitstamp 1h: first {first:.2f} s, "
          f"best of later runs {best:.2f} s (budget {BUDGET_S:.0f} s: "
          f"{'OK' if ok else 'OVER'})")
    return {"first_s": round(first, 3), "best_s": round(best, 3), "budget_s": BUDGET_S,
            "within_budget": ok}


if __name__ == "__main__":
    main()
