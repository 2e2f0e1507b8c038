"""Run every benchmark: ``make bench`` (or ``python -m bench [names...]``).

Each ``bench/bench_<topic>.py`` has a ``main()`` that prints its own table and returns
a dict of figures. Figures are ratios against a baseline run in the same process
where possible (shared, noisy machines). The collected figures are written to
``bench/out/latest.json``; copy them into the README's performance section.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

TOPICS = ("gamma", "feed", "simulator", "liquidation", "instruments", "study", "report",
          "second_order", "optimize")


def main(argv: list[str]) -> int:
    topics = argv or list(TOPICS)
    figures: dict[str, object] = {"python": platform.python_version(),
                                  "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime())}
    for topic in topics:
        module = importlib.import_module(f"bench.bench_{topic}")
        print(f"\n=== bench_{topic} ===", flush=True)
        figures[topic] = module.main()
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nfigures written to {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
