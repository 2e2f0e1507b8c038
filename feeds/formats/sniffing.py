"""Sniffing and reading data files: the raw frame every format's ``map`` starts from.

A file is sniffed once (:func:`sniff_file`): gzip is detected from its magic bytes, a
zip archive holding one CSV from ``PK``, Parquet from ``PAR1``; the first 64 KiB of
text are kept for detection. Readers turn pandas' parser errors into
:class:`~plumbing.errors.DataError` naming the 0-based data row (header lines
excluded). Cell helpers parse whole columns, reporting the first bad row.
"""

from __future__ import annotations

import gzip
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plumbing.aliases import PathLike
from plumbing.errors import DataError

__all__ = [
    "Sniff",
    "column_lookup",
    "empty_file",
    "is_number",
    "map_values",
    "missing_columns",
    "per_unique",
    "read_csv",
    "read_frame",
    "read_parquet",
    "read_table",
    "sniff_file",
    "split_header",
    "to_float",
]

_HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class Sniff:
    """What a loader knows about a file before reading it."""

    path: Path
    source: str
    parquet: bool
    gzip: bool
    head: str
    parquet_columns: tuple[str, ...] = ()
    zip: bool = False  # a zip archive holding one CSV (Binance's data downloads)

    @property
    def compression(self) -> str | None:
        return "gzip" if self.gzip else "zip" if self.zip else None

    @property
    def first_line(self) -> str:
        return self.head.splitlines()[0].strip() if self.head else ""

    @property
    def url_line(self) -> bool:
        """The first line is a URL (CryptoDataDownload puts its address above the header)."""
        return self.first_line.lower().startswith("http")

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names: Parquet's, or the CSV header's trimmed of quotes and ``[brackets]``.

        The header is the first line, or the second after a URL line.
        """
        if self.parquet:
            return self.parquet_columns
        lines = self.head.splitlines()
        line = lines[1] if self.url_line and len(lines) > 1 else self.first_line
        return tuple(f.strip("[] ") for f in split_header(line))

    @property
    def lower_columns(self) -> frozenset[str]:
        return frozenset(c.lower() for c in self.columns)


def sniff_file(path: PathLike) -> Sniff:
    """Sniff ``path``: container (gzip, zip, Parquet) and the head of its text.

    Raises
    ------
    DataError
        Missing file, empty file, unreadable gzip / zip / Parquet.
    """
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise DataError("file not found" if not p.exists() else "not a file", source=source,
                        expected="an existing data file", fix="check the path")
    with open(p, "rb") as fh:
        magic = fh.read(4)
        if not magic:
            raise empty_file(source)
        if magic == b"PAR1":
            try:
                names = tuple(pq.read_schema(p).names)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"not a readable Parquet file ({exc})", source=source,
                                expected="a complete Parquet file",
                                fix="re-export the file") from None
            return Sniff(p, source, True, False, "", names)
        is_gzip = magic[:2] == b"\x1f\x8b"
        is_zip = magic == b"PK\x03\x04"
        if is_zip:
            raw = _zip_head(p, source)
        elif is_gzip:
            try:
                with gzip.open(p, "rb") as gz:
                    raw = gz.read(_HEAD_BYTES)
            except (OSError, EOFError) as exc:
                raise DataError(f"not a readable gzip file ({exc})", source=source,
                                expected="a complete gzip file",
                                fix="download or compress the file again") from None
        else:
            fh.seek(0)
            raw = fh.read(_HEAD_BYTES)
    head = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not head.strip():
        raise empty_file(source)
    return Sniff(p, source, False, is_gzip, head, zip=is_zip)


def _zip_head(path: Path, source: str) -> bytes:
    """First 64 KiB of the single member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise DataError(f"zip archive holds {len(members)} files", source=source,
                                expected="exactly one CSV file inside the zip",
                                fix="unzip it and pass the CSV file itself")
            with archive.open(members[0]) as member:
                return member.read(_HEAD_BYTES)
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a readable zip file ({exc})", source=source,
                        expected="a complete zip archive",
                        fix="download the file again") from None


def empty_file(source: str) -> DataError:
    """The error for a file without data."""
    return DataError("empty file", source=source, expected="a header and data rows",
                     fix="check the download or export finished")


def read_csv(sniff: Sniff, *, header_lines: int, **kwargs: object) -> pd.DataFrame:
    """``pd.read_csv`` with vendor parser errors turned into DataError with a data row.

    ``header_lines`` is the number of lines before the first data row, so that a parser
    error on file line ``n`` is reported as data row ``n - 1 - header_lines``.
    """
    try:
        frame = pd.read_csv(sniff.path, compression=sniff.compression,
                            **kwargs)  # type: ignore[call-overload]
    except pd.errors.EmptyDataError:
        raise empty_file(sniff.source) from None
    except pd.errors.ParserError as exc:
        text = str(exc).strip()
        match = re.search(r"line (\d+)", text)
        row = int(match.group(1)) - 1 - header_lines if match else None
        raise DataError(f"unparsable row ({text})", source=sniff.source, row=row,
                        expected="the same number of fields on every line",
                        fix="repair or remove the row") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", source=sniff.source,
                        expected="a UTF-8 CSV file", fix="re-encode the file as UTF-8") from None
    if len(frame) == 0:
        raise DataError("no data rows", source=sniff.source,
                        expected="at least one data row after the header",
                        fix="check the file is complete")
    return frame


def read_parquet(sniff: Sniff) -> pd.DataFrame:
    """The Parquet file as a DataFrame (DataError when unreadable or empty)."""
    try:
        frame = pd.read_parquet(sniff.path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", source=sniff.source,
                        expected="a complete Parquet file", fix="re-export the file") from None
    if len(frame) == 0:
        raise DataError("no data rows", source=sniff.source, expected="at least one row",
                        fix="check the export is not empty")
    return frame


def read_table(sniff: Sniff) -> pd.DataFrame:
    """Parquet, or a CSV whose first line is the header."""
    return read_parquet(sniff) if sniff.parquet else read_csv(sniff, header_lines=1)


def read_frame(sniff: Sniff) -> pd.DataFrame:
    """Parquet, or a CSV with one header line (after an optional URL line).

    Values may be padded after the comma; ``[bracketed]`` and padded header names are
    trimmed.
    """
    if sniff.parquet:
        return read_parquet(sniff)
    skip = 1 if sniff.url_line else 0
    frame = read_csv(sniff, header_lines=1 + skip, skiprows=skip, skipinitialspace=True)
    frame.columns = [str(c).strip().strip("[] ") for c in frame.columns]
    return frame


def column_lookup(columns: Sequence[object] | pd.Index) -> dict[str, str]:
    """Trimmed lower-case name -> the file's column name (the first of equal names)."""
    lookup: dict[str, str] = {}
    for c in columns:
        lookup.setdefault(str(c).strip().lower(), c)  # type: ignore[arg-type]
    return lookup


def missing_columns(source: str, missing: list[str], expected: str, fix: str) -> DataError:
    """The error for required columns absent from a file."""
    return DataError(f"missing column(s) {missing}", source=source, column=missing[0],
                     expected=expected, fix=fix)


def per_unique(col: pd.Series, fn: Callable[[str], object]) -> pd.Series:
    """Apply ``fn`` once per distinct value (symbols repeat across millions of rows).

    Missing values map to None.
    """
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    table = np.array([fn(str(u)) for u in uniques] + [None], dtype=object)
    return pd.Series(table[codes], index=col.index)


def split_header(line: str) -> list[str]:
    """Fields of a CSV header line, trimmed of blanks and quotes."""
    return [f.strip().strip('"').strip() for f in line.split(",")]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_float(col: pd.Series, column: str, source: str) -> pd.Series:
    """A column as float64; a non-empty cell that is not a number is an error."""
    num = pd.to_numeric(col, errors="coerce").astype("float64")
    bad = (num.isna() & col.notna()).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"cannot parse {col.iloc[i]!r} as a number", source=source, row=i,
                        column=column, expected="a decimal number",
                        fix="repair or remove the row")
    return num


def map_values(col: pd.Series, mapping: Mapping[str, str], *, source: str, column: str,
               what: str, expected: str) -> pd.Series:
    """Map a categorical column (trimmed, upper-cased) through ``mapping``.

    Each distinct value is looked up once; a value that ``mapping`` lacks (or a missing
    one) is an error naming the first such row.
    """
    upper = {str(k).upper(): v for k, v in mapping.items()}
    mapped = per_unique(col, lambda text: upper.get(text.strip().upper()))
    bad = mapped.isna().to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} {col.iloc[i]!r} not recognized", source=source, row=i,
                        column=column, expected=expected, fix="repair or remove the row")
    return mapped.astype("string")
