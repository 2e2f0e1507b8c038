"""Run labels, the run index (atomic, rebuilt when stale, two writers) and `gammabt ls`."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pandas as pd
import pytest

from gammabt import index
from gammabt.cli import main
from gammabt.config import RunConfig
from plumbing.errors import ConfigError
from tests.data.runs import fake_run


@pytest.mark.parametrize("label", ["flip-8", "a_b.c", "X" * 64])
def test_valid_labels_pass(label):
    assert RunConfig(bars="x.csv", label=label).label == label


@pytest.mark.parametrize("label", ["", "has space", "a/b", "<script>alert(1)</script>",
                                   "X" * 65, "é"])
def test_invalid_labels_are_refused(label):
    with pytest.raises(ConfigError, match="label"):
        RunConfig(bars="x.csv", label=label)


def test_cli_refuses_bad_label_before_reading_inputs(tmp_path, capsys):
    missing = tmp_path / "never-read.csv"
    missing.write_text("not,a,bars,file\n")  # a bad label must be reported, not this file
    code = main(["run", "--bars", str(missing), "--label", "a b",
                 "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "--label" in err and "letters, digits" in err
    assert not (tmp_path / "r").exists()


def test_update_then_load(tmp_path):
    a = fake_run(tmp_path, "20240101T000000Z-a-00000001", label="a", seed=1)
    assert index.update_index(tmp_path, a)
    frame = pd.read_parquet(tmp_path / index.INDEX_NAME)
    assert list(frame["run_id"]) == [a.name]
    metrics = json.loads((a / "metrics.json").read_text())
    assert frame["sharpe"].iloc[0] == pytest.approx(metrics["sharpe"])
    assert frame["start"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert json.loads(frame["params"].iloc[0]) == {"lookback": 8}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_or_stale_index_is_rebuilt(tmp_path):
    fake_run(tmp_path, "r1", seed=1)
    fake_run(tmp_path, "r2", seed=2)
    assert sorted(index.load_index(tmp_path)["run_id"]) == ["r1", "r2"]  # was missing
    assert (tmp_path / index.INDEX_NAME).is_file()
    fake_run(tmp_path, "r3", seed=3)  # written without updating the index
    assert sorted(index.load_index(tmp_path)["run_id"]) == ["r1", "r2", "r3"]
    import shutil

    shutil.rmtree(tmp_path / "r1")  # deleted by hand
    assert sorted(index.load_index(tmp_path)["run_id"]) == ["r2", "r3"]
    (tmp_path / index.INDEX_NAME).write_bytes(b"garbage")
    assert sorted(index.load_index(tmp_path)["run_id"]) == ["r2", "r3"]


def _writer(root: str, names: list[str]) -> None:
    for name in names:
        index.update_index(root, os.path.join(root, name), timeout=30)


def test_two_concurrent_writers_lose_no_row(tmp_path):
    names = [f"run{i:02d}" for i in range(16)]
    for i, name in enumerate(names):
        fake_run(tmp_path, name, seed=i, days=20)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), names[k::2])) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    # read the file itself: load_index would hide lost rows by rebuilding
    frame = pd.read_parquet(tmp_path / index.INDEX_NAME)
    assert sorted(frame["run_id"]) == names
    assert not (tmp_path / index.LOCK_NAME).exists()


def test_held_lock_skips_update_and_readers_rebuild(tmp_path):
    a = fake_run(tmp_path, "a", seed=1)
    index.update_index(tmp_path, a)
    b = fake_run(tmp_path, "b", seed=2)
    (tmp_path / index.LOCK_NAME).write_text("123")
    started = time.monotonic()
    assert index.update_index(tmp_path, b, timeout=0.2) is False
    assert time.monotonic() - started < 5
    assert list(pd.read_parquet(tmp_path / index.INDEX_NAME)["run_id"]) == ["a"]
    (tmp_path / index.LOCK_NAME).unlink()
    assert sorted(index.load_index(tmp_path)["run_id"]) == ["a", "b"]


def test_abandoned_lock_is_broken(tmp_path):
    a = fake_run(tmp_path, "a", seed=1)
    lock = tmp_path / index.LOCK_NAME
    lock.write_text("123")
    old = time.time() - index.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    assert index.update_index(tmp_path, a, timeout=0.5)


def test_resolve_runs_by_id_glob_and_path(tmp_path):
    fake_run(tmp_path, "20240101T000000Z-flip-8-aaaaaaaa", label="flip-8", seed=1)
    fake_run(tmp_path, "20240102T000000Z-flip-12-bbbbbbbb", label="flip-12", seed=2)
    other = fake_run(tmp_path, "20240103T000000Z-hold-cccccccc", label="hold", seed=3)
    got = index.resolve_runs(["flip-*"], tmp_path)
    assert [p.name for p in got] == ["20240101T000000Z-flip-8-aaaaaaaa",
                                     "20240102T000000Z-flip-12-bbbbbbbb"]
    got = index.resolve_runs([other.name, str(other), "hold"], tmp_path)
    assert [p.name for p in got] == [other.name]
    with pytest.raises(ConfigError, match="no run matches 'nope'"):
        index.resolve_runs(["nope"], tmp_path)


def test_ls_filters_sorts_and_prints_json(tmp_path, capsys):
    for i, (label, strategy, mean) in enumerate([("a-1", "gamma_flip", 0.002),
                                                  ("a-2", "gamma_flip", 0.0),
                                                  ("b-1", "buy_and_hold", 0.004)]):
        fake_run(tmp_path, f"2024010{i + 1}T000000Z-{label}-0000000{i}", label=label,
                 strategy=strategy, seed=i, mean=mean)
    assert main(["ls", "--results", str(tmp_path), "--json", "--sort", "sharpe"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sharpes = [r["sharpe"] for r in rows]
    assert len(rows) == 3 and sharpes == sorted(sharpes, reverse=True)
    assert main(["ls", "--results", str(tmp_path), "--json", "--label", "a-*",
                 "--strategy", "gamma_flip", "--limit", "1", "--sort", "run_id"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["a-2"]  # newest first
    assert main(["ls", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "b-1" in out and "2024-01-01 .. 2024-04-29" in out and "lookback=8" in out


def test_unreadable_folder_is_left_out_with_one_warning(tmp_path):
    fake_run(tmp_path, "good", seed=1)
    bad = fake_run(tmp_path, "bad", seed=2)
    (bad / "metrics.json").write_text("{not json")
    with pytest.warns(index.IndexWarning, match="bad .*JSONDecodeError") as caught:
        frame = index.load_index(tmp_path)
    assert list(frame["run_id"]) == ["good"] and len(caught) == 1
    assert list(pd.read_parquet(tmp_path / index.INDEX_NAME)["run_id"]) == ["good"]
