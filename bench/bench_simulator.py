"""Simulator benchmark: one year of hourly bars with ~800-option hourly chains.

Target: at most 60 s and under 2 GB peak memory on the 2-core machine.

Each case runs in a fresh child process so that its peak resident memory
(``VmHWM`` of the child from /proc/self/status, which includes the interpreter and
imported libraries) is measured alone. Not ``ru_maxrss``: Linux carries that figure over
``execve``, so a child started by a process that once grew large reports the parent's
peak; wall time is measured inside the child around ``simulate`` only, with
the write to Parquet timed separately.

Run: ``python -m bench simulator`` (or ``python -m bench.bench_simulator``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CASES = (
    # label, scenario, days, freq, chain_freq, n_options
    ("year 1h bars + 1h chains (target)", "calm", 365, "1h", "1h", 800),
    ("year 1h bars, daily chains", "calm", 365, "1h", "1D", 800),
    ("30 days 1min bars + 1h chains", "gamma_squeeze_down", 30, "1min", "1h", 800),
)

_CHILD = textwrap.dedent("""
    import json, sys, tempfile, time
    from pathlib import Path
    t0 = time.perf_counter()
    from feeds.synthetic import simulate
    scenario, days, freq, chain_freq, n_options = json.loads(sys.argv[1])
    t1 = time.perf_counter()
    m = simulate(scenario, days=days, freq=freq, chain_freq=chain_freq, seed=0,
                 n_options=n_options)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m.write(Path(tmp) / "m")
        size = sum(p.stat().st_size for p in (Path(tmp) / "m").iterdir())
    t3 = time.perf_counter()
    print(json.dumps({
        "simulate_s": t2 - t1, "write_s": t3 - t2, "import_s": t1 - t0,
        "bars": m.bars.num_rows, "chain_rows": m.chain.num_rows,
        "snapshots": len(set(m.chain.column("ts").to_numpy())),
        "liquidations": m.liquidations.num_rows, "parquet_mb": size / 1e6,
        "peak_mb": next(int(line.split()[1]) for line in open("/proc/self/status")
                        if line.startswith("VmHWM:")) / 1024}))
""")


def _run_case(scenario: str, days: int, freq: str, chain_freq: str, n_options: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _CHILD,
                          json.dumps([scenario, days, freq, chain_freq, n_options])],
                         cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> dict:
    """Run the cases, print a table and return the figures."""
    figures: dict[str, dict] = {}
    header = (f"{'case':<36} {'simulate s':>10} {'write s':>8} {'peak MB':>8} {'bars':>7} "
              f"{'chain rows':>11} {'rows/snap':>9} {'liqs':>6}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory():
        for label, scenario, days, freq, chain_freq, n_options in CASES:
            f = _run_case(scenario, days, freq, chain_freq, n_options)
            f.update({"scenario": scenario, "days": days, "freq": freq,
                      "chain_freq": chain_freq, "n_options": n_options})
            figures[label] = f
            print(f"{label:<36} {f['simulate_s']:>10.1f} {f['write_s']:>8.1f} "
                  f"{f['peak_mb']:>8.0f} {f['bars']:>7} {f['chain_rows']:>11} "
                  f"{f['chain_rows'] / max(f['snapshots'], 1):>9.0f} {f['liquidations']:>6}")
    target = figures[CASES[0][0]]
    ok = target["simulate_s"] <= 60 and target["peak_mb"] < 2048
    print(f"\ntarget (<= 60 s, < 2 GB peak RSS of the child process): "
          f"{'met' if ok else 'NOT met'}")
    figures["target_met"] = ok  # type: ignore[assignment]
    return figures


if __name__ == "__main__":
    main()
