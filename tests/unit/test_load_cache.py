"""Parquet cache of canonical tables: hits, misses, corruption, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

import feeds.loaders as loaders
from feeds import cache
from feeds.formats import dispatch
from feeds.loaders import load_bars, load_chain
from tests.data.loader_fixtures import bars_frame, write_binance_klines, write_optionsdx


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("GAMMABT_CACHE", str(path))
    return path


@pytest.fixture
def klines(tmp_path: Path) -> Path:
    return write_binance_klines(tmp_path / "BTCUSDT-1h.csv", bars_frame(48, seed=4))


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.parquet")) if cache_dir.exists() else []


def no_build(*_args: object, **_kwargs: object) -> pa.Table:
    raise AssertionError("the loader ran although the cache should have answered")


def test_cache_dir_from_environment(cache_dir: Path) -> None:
    assert cache.cache_dir() == cache_dir


def test_default_cache_dir_is_in_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GAMMABT_CACHE", raising=False)
    repo = Path(loaders.__file__).resolve().parent.parent
    assert cache.cache_dir() == repo / ".cache" / "canonical"


def test_hit_returns_an_equal_table(cache_dir: Path, klines: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_bars(klines)
    assert len(entries(cache_dir)) == 1
    monkeypatch.setattr(dispatch, "_finish", no_build)
    second = load_bars(klines)
    assert second.equals(first)
    assert second.schema.field("ts").type == first.schema.field("ts").type
    # window and freq are applied after the cache: same entry serves them
    assert load_bars(klines, freq="4h").num_rows == 12
    assert len(entries(cache_dir)) == 1


def test_changed_file_misses(cache_dir: Path, klines: Path) -> None:
    first = load_bars(klines)
    lines = klines.read_text().splitlines()
    fields = lines[0].split(",")
    fields[5] = "999.0"  # volume of the first bar
    lines[0] = ",".join(fields)
    klines.write_text("\n".join(lines) + "\n")
    second = load_bars(klines)
    assert len(entries(cache_dir)) == 2
    assert second.column("volume")[0].as_py() == 999.0 != first.column("volume")[0].as_py()


def test_renamed_file_hits(cache_dir: Path, klines: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_bars(klines)
    moved = klines.with_name("renamed.csv")
    os.replace(klines, moved)
    monkeypatch.setattr(dispatch, "_finish", no_build)
    assert load_bars(moved).equals(first)


def test_cache_false_neither_reads_nor_writes(cache_dir: Path, klines: Path) -> None:
    load_bars(klines, cache=False)
    assert entries(cache_dir) == []


def test_options_are_part_of_the_key(cache_dir: Path, tmp_path: Path) -> None:
    path = write_optionsdx(tmp_path / "chain.txt")
    load_chain(path)
    load_chain(path, currency=None)
    spot = bars_frame(24 * 5, start="2022-01-09T00:00:00Z")
    with_spot = load_chain(path, spot=spot)
    assert len(entries(cache_dir)) == 3
    assert "index_price" in with_spot.column_names


def edited_source(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make the loader code look edited: ``module``'s source gains a comment."""
    real = dispatch.module_source

    def source(name: str) -> bytes:
        return real(name) + (b"\n# edited\n" if name == module else b"")

    monkeypatch.setattr(dispatch, "module_source", source)


@pytest.mark.parametrize("module", ["feeds.formats.binance", "feeds.formats.conform",
                                    "feeds.formats.dispatch", "feeds.formats.times",
                                    "feeds.schema"])
def test_changed_loader_code_misses(cache_dir: Path, klines: Path,
                                    monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """The format's module, the dispatch, the conform step and what they import."""
    load_bars(klines)
    edited_source(monkeypatch, module)
    load_bars(klines)
    assert len(entries(cache_dir)) == 2


def test_another_formats_code_does_not_miss(cache_dir: Path, klines: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_bars(klines)
    edited_source(monkeypatch, "feeds.formats.optionsdx")
    monkeypatch.setattr(dispatch, "_finish", no_build)
    assert load_bars(klines).equals(first)
    assert len(entries(cache_dir)) == 1


def test_cache_lives_where_the_environment_says(tmp_path: Path, klines: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "elsewhere" / "not" / "yet" / "made"
    monkeypatch.setenv("GAMMABT_CACHE", str(outside))
    first = load_bars(klines)
    (entry,) = outside.glob("bars-binance_kline-*.parquet")
    monkeypatch.setattr(dispatch, "_finish", no_build)
    assert load_bars(klines).equals(first)
    assert list(outside.iterdir()) == [entry]


@pytest.mark.parametrize("garbage", [b"", b"PAR1 not really parquet", b"\x00" * 100])
def test_corrupt_entry_is_ignored_and_rewritten(cache_dir: Path, klines: Path,
                                                garbage: bytes) -> None:
    first = load_bars(klines)
    (entry,) = entries(cache_dir)
    entry.write_bytes(garbage)
    assert load_bars(klines).equals(first)
    (rewritten,) = entries(cache_dir)
    assert rewritten == entry and rewritten.stat().st_size > 100
    assert cache.read_cached(entry.stem.split("-")[-1], kind="bars-binance_kline") is not None


def test_entry_with_wrong_columns_is_a_miss(cache_dir: Path, klines: Path) -> None:
    first = load_bars(klines)
    (entry,) = entries(cache_dir)
    cache.write_cached(entry.stem.split("-")[-1], pa.table({"x": [1]}),
                       kind="bars-binance_kline")
    assert load_bars(klines).equals(first)


def test_write_is_atomic(cache_dir: Path, klines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while writing leaves neither a partial entry nor a temp file."""
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        assert Path(src).parent == Path(dst).parent  # same directory: rename is atomic
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", spy)
    load_bars(klines)
    assert len(calls) == 1 and calls[0][1].endswith(".parquet")

    def crash(table: pa.Table, where: str) -> None:
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    for entry in entries(cache_dir):
        entry.unlink()
    monkeypatch.setattr(cache.pq, "write_table", crash)
    with pytest.warns(cache.CacheWriteWarning, match="disk full"):
        table = load_bars(klines)
    assert table.num_rows == 48
    assert list(cache_dir.iterdir()) == []


def test_key_is_stable_and_sensitive() -> None:
    base = cache.cache_key("ab" * 32, kind="bars", code="1", options={"a": 1, "b": "x"})
    assert base == cache.cache_key("ab" * 32, kind="bars", code="1",
                                   options={"b": "x", "a": 1})
    assert base != cache.cache_key("ab" * 32, kind="bars", code="2",
                                   options={"a": 1, "b": "x"})
    assert base != cache.cache_key("cd" * 32, kind="bars", code="1",
                                   options={"a": 1, "b": "x"})
    assert base != cache.cache_key("ab" * 32, kind="bars", code="1", options={"a": 2})
