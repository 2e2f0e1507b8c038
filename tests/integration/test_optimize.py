"""Optimization: searches, executors, resume, torn files, walk forward, the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gammabt import optimize as opt
from gammabt.config import RunConfig
from gammabt.prepared import load_prepared, save_prepared
from gammabt.run import MarketInputs, prepare, run
from plumbing.errors import ConfigError
from tests.data.hand_made import make_bars, make_summary

GRID = ("lookback=6,12", "momentum_min=0.005,0.01")


@pytest.fixture(scope="module")
def base() -> RunConfig:
    return RunConfig(strategy="gamma_flip", bars="unused.csv", borrow=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, base) -> tuple[Path, Any]:
    bars = make_bars(n=24 * 48, seed=5)
    market = prepare(base, MarketInputs(bars=bars, summary=make_summary(bars, -1.0, 1.05)))
    folder = save_prepared(market, tmp_path_factory.mktemp("prep") / "market")
    return folder, load_prepared(folder)


def _spec(base: RunConfig, grid: Sequence[str] = GRID, **kw: Any) -> opt.OptimizeSpec:
    return opt.OptimizeSpec(base=base, dims=tuple(opt.parse_dimension(g, base.strategy)
                                                   for g in grid), **kw)


def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="elapsed_s").sort_values("trial", ignore_index=True)


class Interrupting(opt.Executor):
    """Delivers ``limit`` results, then raises as Ctrl-C would."""

    def __init__(self, inner: opt.Executor, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def map_unordered(self, tasks: Sequence[opt.Task]) -> Iterator[dict[str, Any]]:
        for result in self.inner.map_unordered(tasks):
            if self.count >= self.limit:
                raise KeyboardInterrupt
            self.count += 1
            yield result


class Counting(opt.Executor):
    def __init__(self, inner: opt.Executor) -> None:
        self.inner, self.digests = inner, []

    def map_unordered(self, tasks: Sequence[opt.Task]) -> Iterator[dict[str, Any]]:
        self.digests.extend(t.digest for t in tasks)
        yield from self.inner.map_unordered(tasks)


@pytest.fixture(scope="module")
def grid_result(prepared, base, tmp_path_factory) -> pd.DataFrame:
    folder, market = prepared
    out = tmp_path_factory.mktemp("opt") / "grid"
    return opt.optimize(_spec(base), market, folder, opt.InProcess(folder, market),
                        folder=out).trials


def test_grid_rows_equal_direct_runs(grid_result, prepared, base) -> None:
    _, market = prepared
    trials = grid_result
    assert len(trials) == 4 and trials["digest"].is_unique
    assert trials[["param.lookback", "param.momentum_min"]].values.tolist() == [
        [6, 0.005], [6, 0.01], [12, 0.005], [12, 0.01]]
    for _, row in trials.iterrows():
        config = dataclasses.replace(base, params=(("lookback", int(row["param.lookback"])),
                                                   ("momentum_min", row["param.momentum_min"])))
        direct = run(config, market)
        assert row["digest"] == direct.digest
        assert row["sharpe"] == direct.metrics["sharpe"] == row["objective"]
        assert row["total_return"] == direct.metrics["total_return"]
        np.testing.assert_array_equal(row["returns"], direct.returns.to_numpy())
    assert trials["n_trades"].min() > 0, "the fixture must trade for the test to mean much"
    assert trials["sharpe"].nunique() == 4


@pytest.mark.slow
def test_identical_whichever_executor(grid_result, prepared, base, tmp_path) -> None:
    folder, market = prepared
    pool = opt.LocalPool(folder, 2)
    try:
        pooled = opt.optimize(_spec(base), market, folder, pool, folder=tmp_path / "p").trials
    finally:
        pool.close()
    dask = opt.DaskExecutor(folder, local_workers=2, processes=False)
    try:
        dasked = opt.optimize(_spec(base), market, folder, dask, folder=tmp_path / "d").trials
    finally:
        dask.close()
    pd.testing.assert_frame_equal(_stable(pooled), _stable(grid_result))
    pd.testing.assert_frame_equal(_stable(dasked), _stable(grid_result))


def test_resume_after_interrupt_skips_finished(grid_result, prepared, base, tmp_path) -> None:
    folder, market = prepared
    out = tmp_path / "opt"
    with pytest.raises(KeyboardInterrupt):
        opt.optimize(_spec(base), market, folder,
                     Interrupting(opt.InProcess(folder, market), 2), folder=out,
                     flush_every_s=0.0)
    done = set(pd.read_parquet(out / "trials.parquet")["digest"])
    assert len(done) == 2
    counting = Counting(opt.InProcess(folder, market))
    resumed = opt.optimize(_spec(base), market, folder, counting, folder=out).trials
    assert len(counting.digests) == 2 and not set(counting.digests) & done
    pd.testing.assert_frame_equal(_stable(resumed), _stable(grid_result))


def test_torn_trials_file_is_repaired(grid_result, prepared, base, tmp_path) -> None:
    folder, market = prepared
    out = tmp_path / "opt"
    with pytest.raises(KeyboardInterrupt):
        opt.optimize(_spec(base), market, folder,
                     Interrupting(opt.InProcess(folder, market), 3), folder=out,
                     flush_every_s=0.0)
    path = out / "trials.parquet"
    assert len(pd.read_parquet(path)) == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn write
    counting = Counting(opt.InProcess(folder, market))
    result = opt.optimize(_spec(base), market, folder, counting, folder=out)
    assert result.repaired
    assert len(counting.digests) == 2  # the previous good state held two trials
    pd.testing.assert_frame_equal(_stable(result.trials), _stable(grid_result))
    assert len(pd.read_parquet(path)) == 4


def test_a_different_search_in_the_same_folder_is_refused(prepared, base, tmp_path) -> None:
    folder, market = prepared
    ex = opt.InProcess(folder, market)
    opt.optimize(_spec(base, grid=("lookback=6",)), market, folder, ex, folder=tmp_path / "o")
    with pytest.raises(ConfigError, match="different optimization"):
        opt.optimize(_spec(base, grid=("lookback=12",)), market, folder, ex,
                     folder=tmp_path / "o")
    assert _spec(base).opt_id("k") != _spec(base, grid=("lookback=6",)).opt_id("k")


def test_random_points_seeded_and_in_range() -> None:
    dims = (opt.parse_dimension("lookback=4:30", "gamma_flip"),
            opt.parse_dimension("momentum_min=0.001:0.02", "gamma_flip"),
            opt.parse_dimension("allow_short=true,false", "gamma_flip"))
    a = opt.random_points(dims, 50, seed=3)
    assert a == opt.random_points(dims, 50, seed=3)
    assert a[:10] == opt.random_points(dims, 10, seed=3)  # draw i depends on i only
    assert a != opt.random_points(dims, 50, seed=4)
    assert all(isinstance(p["lookback"], int) and 4 <= p["lookback"] <= 30 for p in a)
    assert all(0.001 <= p["momentum_min"] <= 0.02 for p in a)
    assert {p["allow_short"] for p in a} == {True, False}


def test_parse_dimension_forms_and_range_checks() -> None:
    d = opt.parse_dimension("momentum_min=0.005:0.02:0.005", "gamma_flip")
    assert d.values == (0.005, 0.01, 0.015, 0.02)
    assert opt.parse_dimension("lookback=6:24:6", "gamma_flip").values == (6, 12, 18, 24)
    with pytest.raises(ConfigError, match="lookback"):
        opt.parse_dimension("lookback=0,6", "gamma_flip")  # below the declared range
    with pytest.raises(ConfigError, match="lookback"):
        opt.parse_dimension("lookback=0:10:2", "gamma_flip")
    with pytest.raises(ConfigError, match="did you mean"):
        opt.parse_dimension("lookbak=6", "gamma_flip")
    with pytest.raises(ConfigError, match="no step"):
        opt.grid_points((opt.parse_dimension("lookback=6:12", "gamma_flip"),))
    with pytest.raises(ConfigError, match="not a number"):
        opt.parse_dimension("lookback=a:12", "gamma_flip")


def test_constraints_and_objective(prepared, base, tmp_path) -> None:
    c = opt.parse_constraint("max_drawdown>-0.3")
    assert (c.metric, c.op, c.value) == ("max_drawdown", ">", -0.3)
    assert c.holds({"max_drawdown": -0.1}) and not c.holds({"max_drawdown": -0.3})
    assert not c.holds({"max_drawdown": float("nan")})
    with pytest.raises(ConfigError, match="metric<op>value"):
        opt.parse_constraint("max_drawdown=-0.3")
    folder, market = prepared
    ex = opt.InProcess(folder, market)
    none = opt.optimize(_spec(base, constraints=(opt.parse_constraint("n_trades>=100000"),)),
                        market, folder, ex, folder=tmp_path / "c")
    assert not none.trials["feasible"].any() and none.best is None
    with pytest.raises(ConfigError, match="unknown objective"):
        opt.optimize(_spec(base, objective="sharpee"), market, folder, ex,
                     folder=tmp_path / "o")


def test_optuna_seeded_and_resumes_to_the_same_trials(prepared, base, tmp_path) -> None:
    folder, market = prepared
    grid = ("lookback=4:30", "momentum_min=0.001:0.02")
    spec = _spec(base, grid=grid, search="optuna", n_trials=6, seed=11)
    ex = opt.InProcess(folder, market)
    first = opt.optimize(spec, market, folder, ex, folder=tmp_path / "a").trials
    assert len(first) == 6 and (tmp_path / "a" / "study.db").exists()
    with pytest.raises(KeyboardInterrupt):
        opt.optimize(spec, market, folder, Interrupting(ex, 2), folder=tmp_path / "b",
                     flush_every_s=0.0)
    resumed = opt.optimize(spec, market, folder, ex, folder=tmp_path / "b").trials
    pd.testing.assert_frame_equal(_stable(resumed), _stable(first))
    other = opt.optimize(dataclasses.replace(spec, seed=12), market, folder, ex,
                         folder=tmp_path / "c").trials
    assert other["digest"].tolist() != first["digest"].tolist()


def test_folds_by_hand() -> None:
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    wf = opt.parse_walk_forward("train=20d,test=10d")
    got = opt.folds(t0, t0 + pd.Timedelta("48D"), wf)
    days = [[(x - t0).days for x in fold] for fold in got]
    assert days == [[0, 20, 30], [10, 30, 40], [20, 40, 48]]
    anchored = opt.folds(t0, t0 + pd.Timedelta("48D"), opt.parse_walk_forward(
        "train=20d,test=10d,anchored"))
    assert [(x - t0).days for x in anchored[-1]] == [0, 40, 48]
    with pytest.raises(ConfigError, match="train=DURATION"):
        opt.parse_walk_forward("train=20d")


def test_walk_forward_stitches_the_winners_out_of_sample(prepared, base, tmp_path) -> None:
    folder, market = prepared
    ex = opt.InProcess(folder, market)
    table, stitched = opt.walk_forward(_spec(base), market, folder, ex, folder=tmp_path / "w",
                                       wf=opt.parse_walk_forward("train=20d,test=14d"))
    assert table["test_start"].tolist() == ["2024-01-21", "2024-02-04"]
    pieces = []
    for _, row in table.iterrows():
        train = dataclasses.replace(base, start=row["train_start"], end=row["test_start"])
        scores = {}
        for lb in (6, 12):
            for mm in (0.005, 0.01):
                res = run(dataclasses.replace(train, params=(("lookback", lb),
                                                             ("momentum_min", mm))), market)
                scores[(lb, mm)] = res.metrics["sharpe"]
        best = max(scores, key=lambda k: scores[k])
        assert json.loads(row["params"]) == {"lookback": best[0], "momentum_min": best[1]}
        assert row["is_objective"] == scores[best]
        test = dataclasses.replace(base, start=row["test_start"], end=row["test_end"],
                                   params=(("lookback", best[0]), ("momentum_min", best[1])))
        oos = run(test, market)
        assert row["oos_sharpe"] == oos.metrics["sharpe"]
        pieces.append(oos.returns)
    # the day shared by two folds (a window's last bar closes at midnight) compounds
    shared = pieces[0].index[-1]
    assert shared == pieces[1].index[0]
    expected = pd.concat([pieces[0].iloc[:-1], pieces[1]])
    expected.iloc[len(pieces[0]) - 1] = (1 + pieces[0].iloc[-1]) * (1 + pieces[1].iloc[0]) - 1
    np.testing.assert_array_equal(stitched.to_numpy(), expected.to_numpy())
    assert (stitched.index == expected.index).all()


@pytest.mark.slow
def test_cli_prepare_optimize_and_run_prepared(tmp_path, capsys) -> None:
    from feeds.synthetic import simulate
    from gammabt.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        simulate("calm", days=10, seed=2).write(tmp_path / "m")
    assert main(["prepare", "--market", str(tmp_path / "m"), "--out", str(tmp_path / "p")]) == 0
    res = tmp_path / "res"
    code = main(["optimize", "--prepared", str(tmp_path / "p"), "--grid", "lookback=6,12",
                 "--grid", "momentum_min=0.002:0.004:0.002", "--constraint",
                 "max_drawdown>-0.5", "--name", "t", "--no-progress", "--results", str(res)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Deflated Sharpe ratio" in out and "Probability of backtest overfitting" in out
    html = (res / "opt-t" / "summary.html").read_text()
    assert "Deflated Sharpe ratio" in html and "cdn" not in html.lower()
    assert '<script src="plotly.min.js">' in html and (res / "opt-t" / "plotly.min.js").exists()
    assert len(pd.read_parquet(res / "opt-t" / "trials.parquet")) == 4
    best = [p for p in res.iterdir() if p.name.endswith(tuple("0123456789abcdef"))
            and "opt-t-best" in p.name]
    assert len(best) == 1 and (best[0] / "metrics.json").exists()
    # the runners-up are re-run too and compared with the winner on one page
    trials = pd.read_parquet(res / "opt-t" / "trials.parquet")
    ranked = trials[trials["feasible"]].sort_values(["objective", "trial"],
                                                    ascending=[False, True])
    for rank, digest in ((2, ranked["digest"].iloc[1]), (3, ranked["digest"].iloc[2])):
        assert len(list(res.glob(f"*-opt-t-top{rank}-{digest[:8]}"))) == 1
    page = (res / "opt-t" / "compare.html").read_text()
    assert "opt-t-best" in page and "opt-t-top3" in page
    # the same command again resumes: nothing left to run, same rows
    assert main(["optimize", "--prepared", str(tmp_path / "p"), "--grid", "lookback=6,12",
                 "--grid", "momentum_min=0.002:0.004:0.002", "--constraint",
                 "max_drawdown>-0.5", "--name", "t", "--no-progress", "--results",
                 str(res)]) == 0
    assert len([p for p in res.iterdir() if "opt-t-best" in p.name]) == 1  # not re-run
    assert len([p for p in res.iterdir() if "opt-t-top" in p.name]) == 2
    # a prepared run equals a run from the files
    assert main(["run", "--prepared", str(tmp_path / "p"), "--results", str(tmp_path / "a"),
                 "--from", "2025-01-08"]) == 0
    assert main(["run", "--market", str(tmp_path / "m"), "--results", str(tmp_path / "b"),
                 "--from", "2025-01-08"]) == 0
    [a] = [p for p in (tmp_path / "a").iterdir() if p.is_dir()]  # beside index, plotly.js
    [b] = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    assert a.name[-8:] == b.name[-8:]  # same digest
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text())
    # out-of-range values are refused before anything runs
    assert main(["optimize", "--prepared", str(tmp_path / "p"), "--grid", "lookback=0,6",
                 "--results", str(res)]) == 2
    assert "lookback" in capsys.readouterr().err


def test_run_optimization_walk_forward_outputs(prepared, base, tmp_path) -> None:
    from rich.console import Console

    folder, _ = prepared
    text = io.StringIO()
    out = opt.run_optimization(base, grid=GRID, walk="train=20d,test=14d",
                               prepared_dir=folder, results_dir=tmp_path, progress=False,
                               console=Console(file=text, width=200), name="wf")
    folds = pd.read_parquet(out / "folds.parquet")
    assert len(folds) == 2 and folds["params"].str.startswith("{").all()
    oos = pd.read_parquet(out / "oos_returns.parquet")["out_of_sample"]
    assert oos.index.is_monotonic_increasing and oos.index.is_unique
    assert (out / "oos_tearsheet.html").exists()
    html = (out / "summary.html").read_text()
    assert "Walk forward" in html and "stitched out-of-sample" in html
    assert "stitched out-of-sample returns: Sharpe" in text.getvalue()
    # each fold's in-sample search is judged: DSR of its winner, PBO of the search
    assert {"is_dsr", "is_pbo"} <= set(folds.columns)
    assert folds["is_dsr"].between(0, 1).all() and folds["is_pbo"].between(0, 1).all()
    assert text.getvalue().count("in-sample search") == 2 and "overfitting" in html
    fold_stats = json.loads((out / "fold-0" / "stats.json").read_text())
    assert "dsr" in fold_stats and "pbo" in fold_stats


def test_random_search_runs_n_distinct_configurations(prepared, base, tmp_path) -> None:
    folder, market = prepared
    # 2 x 2 = 4 configurations: 3 distinct ones need more than 3 draws with this seed
    spec = _spec(base, search="random", n_trials=3, seed=0)
    draws = [tuple(opt.random_point(spec.dims, 0, i).values()) for i in range(3)]
    assert len(set(draws)) < 3, "pick a seed whose first draws repeat"
    trials = opt.optimize(spec, market, folder, opt.InProcess(folder, market),
                          folder=tmp_path / "r").trials
    assert len(trials) == 3 and trials["digest"].is_unique
    first_seen: dict[tuple, int] = {}
    i = 0
    while len(first_seen) < 3:
        first_seen.setdefault(tuple(opt.random_point(spec.dims, 0, i).values()), i)
        i += 1
    assert trials["trial"].tolist() == sorted(first_seen.values())
    assert [tuple(r) for r in trials[["param.lookback", "param.momentum_min"]].values] == \
        list(first_seen)


# ------------------------------------------------------------ engines, cross-check

def test_lean_trials_equal_backtrader_trials(grid_result, prepared, base, tmp_path) -> None:
    folder, market = prepared
    assert set(grid_result["engine"]) == {"lean"} and set(grid_result["engine_note"]) == {""}
    full = opt.optimize(_spec(base, engine="backtrader"), market, folder,
                        opt.InProcess(folder, market), folder=tmp_path / "bt").trials
    assert set(full["engine"]) == {"backtrader"}
    drop = ["engine", "engine_note"]
    pd.testing.assert_frame_equal(_stable(full).drop(columns=drop),
                                  _stable(grid_result).drop(columns=drop))


def test_lean_engine_refused_up_front_for_what_it_never_runs(prepared, base, tmp_path) -> None:
    folder, market = prepared
    spec = _spec(dataclasses.replace(base, strategy="funding_carry"), grid=(), engine="lean")
    with pytest.raises(ConfigError, match="lean engine cannot run"):
        opt.optimize(spec, market, folder, opt.InProcess(folder, market), folder=tmp_path / "l")
    with pytest.raises(ConfigError, match="unknown engine"):
        opt.check_engine("fast", base, market)


def test_cross_check_names_the_configuration(grid_result) -> None:
    row = grid_result.iloc[0]
    metrics = {k: row[k] for k in ("sharpe", "total_return", "n_trades")}
    assert opt.cross_check(row, metrics, {"lookback": 6}) == 0.0
    off = {**metrics, "sharpe": float(row["sharpe"]) * (1 + 1e-6)}
    with pytest.raises(opt.EngineMismatch, match=r'trial 0 \{"lookback": 6\}.*sharpe'):
        opt.cross_check(row, off, {"lookback": 6})
    assert opt.cross_check(row, {**metrics, "sharpe": float(row["sharpe"]) * (1 + 1e-12)},
                           {}) < 1e-9


def test_run_optimization_checks_and_records_the_top_reruns(prepared, base, tmp_path) -> None:
    from rich.console import Console

    folder, _ = prepared
    text = io.StringIO()
    out = opt.run_optimization(base, grid=GRID, prepared_dir=folder, results_dir=tmp_path,
                               progress=False, console=Console(file=text, width=200),
                               name="chk", top=2)
    printed = text.getvalue()
    assert "trials by engine: lean 4" in printed
    assert "engine cross-check: the top 2 trial(s) (2 from the lean engine)" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert any(n.startswith("engine cross-check") for n in stats["notes"])
    assert "engine cross-check" in (out / "summary.html").read_text()


def test_batches_cover_every_task_in_order() -> None:
    tasks = list(range(37))
    for workers in (1, 2, 5):
        cut = opt.batches(tasks, workers)  # type: ignore[arg-type]
        assert [t for b in cut for t in b] == tasks
        assert max(len(b) for b in cut) <= 32
    assert opt.batches([], 2) == []  # type: ignore[arg-type]


@pytest.mark.slow
def test_dask_workers_remove_their_market_copy_on_close(prepared, base) -> None:
    import os

    folder, market = prepared
    dask = opt.DaskExecutor(folder, local_workers=2, processes=True)
    try:
        task = opt.make_task(base, 0, {"lookback": 6}, opt._trial_hashes(market, base.strategy))
        [result] = list(dask.map_unordered([task]))
        assert result["engine"] == "lean"
        copies = dask.client.run(lambda copy: os.path.exists(opt._dask_folder(copy)),
                                 dask.copy)
        assert any(copies.values()), "a worker unpacked the market"
    finally:
        dask.close()
    assert not os.path.exists(opt._dask_folder(dask.copy))  # same host: same temp dir
