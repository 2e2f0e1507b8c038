"""Where the real recorded market data lives (never copied into this repository).

``GAMMABT_REAL_DATA`` overrides the default ``<repo>/../shared/data/real``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "GAMMABT_REAL_DATA"
DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real"


def real_data_root() -> Path:
    """Return the configured real-data folder (it may not exist)."""
    return Path(os.environ.get(ENV_VAR, DEFAULT))


def real_file(relative: str) -> Path | None:
    """Return ``root / relative`` if it exists, else None."""
    path = real_data_root() / relative
    return path if path.exists() else None
