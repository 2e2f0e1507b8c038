"""Typing aliases shared across packages."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import TypeAlias

import pandas as pd
import pyarrow as pa

__all__ = ["DurationLike", "PathLike", "TableLike", "TimeLike"]

#: A file or folder path.
PathLike: TypeAlias = str | os.PathLike[str]
#: A point in time: ISO text, a datetime or a Timestamp (naive values are read as UTC
#: where a function says so).
TimeLike: TypeAlias = str | datetime | pd.Timestamp
#: A length of time: pandas duration text (``"26h"``, ``"15min"``, ``"1D"``), a timedelta
#: or a Timedelta.
DurationLike: TypeAlias = str | timedelta | pd.Timedelta
#: A table in either in-memory form: a pyarrow Table or a pandas DataFrame.
TableLike: TypeAlias = pa.Table | pd.DataFrame
