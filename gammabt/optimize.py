"""Parameter optimization over a prepared market: search, execute, record, resume.

One optimization lives in ``<results>/opt-<id>/``:

- ``trials.parquet``: one row per finished configuration (``trial``, ``digest``,
  ``param.<name>`` columns, every scalar metric, ``objective``, ``feasible``,
  ``engine`` and ``engine_note``, ``elapsed_s`` and the trial's daily returns as a list
  column). Rewritten atomically
  (temporary file + ``os.replace``) in batches as trials finish; the previous good
  state is kept as ``trials.prev.parquet`` so a torn file is repaired on resume.
- ``study.db``: the Optuna study (SQLite), so an Optuna search resumes too.
- ``optimization.json``: the search definition; resuming with a different one is refused.

Every trial is identified by the digest of its full run configuration (parameters,
window, costs) and the inputs' content hashes, so a resumed search skips what is done
and a run with any executor or worker count produces the same rows.

Trials of single-leg strategies (spot or perpetual) run on the lean sweep engine
(:mod:`gammabt.sweep_engine`), which reproduces the Backtrader run bit for bit and
hands back to Backtrader any run it does not reproduce (``engine`` says which ran, and
``engine_note`` why Backtrader did). The best configurations are always re-run on
Backtrader and checked against their trial rows (:func:`cross_check`). Workers get
trials in batches (:func:`batches`), so dispatch stays small next to ~0.1 s trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feeds.pit import US_PER_DAY
from gammabt.config import RunConfig
from gammabt.run import PreparedMarket, run
from plumbing.atomic import write_atomic, write_dir_atomic, write_text_atomic
from plumbing.errors import ConfigError, GammabtError
from plumbing.timeconv import parse_duration, to_epoch_us
from strategies.params import strategy_params
from strategies.registry import check_params, get_strategy

Search = Literal["grid", "random", "optuna"]
#: ``backtrader``: every trial is a full run; ``lean``: the sweep engine
#: (``gammabt.sweep_engine``), refused up front for a strategy or instrument it never
#: supports; ``auto``: lean when supported, else Backtrader. A trial whose path the
#: lean engine does not reproduce (a refusal, a liquidation) always runs Backtrader.
Engine = Literal["auto", "backtrader", "lean"]
ENGINES: tuple[str, ...] = ("auto", "backtrader", "lean")
OPTUNA_BATCH = 4  # trials asked per round: fixed so results do not depend on workers
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_SKIP_METRICS = {"refusals"}


# --------------------------------------------------------------------- search space

@dataclass(frozen=True)
class Dimension:
    """One searched parameter: explicit ``values``, or continuous ``[low, high]``."""

    name: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False

    @property
    def continuous(self) -> bool:
        return not self.values


def _number(text: str, key: str) -> float:
    try:
        value = float(text)
        problem = None if math.isfinite(value) else "is not finite"
    except ValueError:
        value, problem = math.nan, "is not a number"
    if problem is not None:
        raise ConfigError(f"--grid {key}: {text!r} {problem}", column=key,
                          expected="k=a,b,c or k=lo:hi:step or k=lo:hi with finite numbers",
                          fix=f"e.g. --grid {key}=6,12,24")
    return value


def _check_value(cls: type, key: str, value: Any, spec: str) -> Any:
    """``value`` checked against the strategy's declared range, the error naming the
    ``--grid`` option it came from (not ``--param``)."""
    try:
        return check_params(cls, {key: value})[key]
    except ConfigError as exc:
        raise ConfigError(f"--grid {spec}: {exc.problem}", column=key, expected=exc.expected,
                          fix=f"keep every value of --grid {key} within that range"
                          ) from None


def parse_dimension(spec: str, strategy: str) -> Dimension:
    """Parse ``k=a,b,c``, ``k=lo:hi:step`` (inclusive) or ``k=lo:hi`` (continuous).

    Every value (and both bounds) is checked against the strategy's declared ranges
    with :func:`strategies.registry.check_params` before anything runs.
    """
    key, sep, text = spec.partition("=")
    key, text = key.strip(), text.strip()
    if not sep or not key or not text:
        raise ConfigError(f"--grid {spec!r} is not key=values", column="grid",
                          expected="k=a,b,c or k=lo:hi:step or k=lo:hi",
                          fix="e.g. --grid lookback=6,12,24")
    cls = get_strategy(strategy)
    known = strategy_params(cls)
    check_params(cls, {key: known.get(key)} if key in known else {key: None})
    integer = isinstance(known[key], int) and not isinstance(known[key], bool)
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"--grid {spec!r}: a range is lo:hi or lo:hi:step", column=key,
                              expected="k=lo:hi:step", fix=f"e.g. --grid {key}=0.005:0.02:0.005")
        low, high = _number(parts[0], key), _number(parts[1], key)
        if high < low:
            raise ConfigError(f"--grid {spec!r}: high < low", column=key,
                              expected="lo <= hi", fix="swap the bounds")
        _check_value(cls, key, int(low) if integer else low, spec)
        _check_value(cls, key, int(high) if integer else high, spec)
        if len(parts) == 2:
            return Dimension(key, low=low, high=high, integer=integer)
        step = _number(parts[2], key)
        if step <= 0:
            raise ConfigError(f"--grid {spec!r}: step must be > 0", column=key,
                              expected="a positive step", fix=f"e.g. --grid {key}=6:24:6")
        count = int(math.floor((high - low) / step + 1e-9)) + 1
        raw = [low + i * step for i in range(count)]
        values = [int(round(v)) if integer else round(v, 12) for v in raw]
    else:
        values = [v.strip() for v in text.split(",") if v.strip()]
    checked = tuple(dict.fromkeys(_check_value(cls, key, v, spec) for v in values))
    return Dimension(key, values=checked, integer=integer)


def grid_points(dims: Sequence[Dimension]) -> list[dict[str, Any]]:
    """Every combination of the dimensions' values, in a stable order."""
    if any(d.continuous for d in dims):
        name = next(d.name for d in dims if d.continuous)
        raise ConfigError(f"--grid {name}=lo:hi has no step: a grid needs finite values",
                          column=name, expected="k=lo:hi:step or k=a,b,c",
                          fix="add a step, or use --random N / --optuna N")
    names = [d.name for d in dims]
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(d.values for d in dims))]


def random_points(dims: Sequence[Dimension], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` configurations drawn with ``numpy.random.default_rng(seed)``: a value list
    is sampled uniformly, a continuous range uniformly in ``[low, high]`` (integers
    inclusive). Draw ``i`` depends only on ``seed`` and ``i``."""
    return [random_point(dims, seed, i) for i in range(n)]


def random_point(dims: Sequence[Dimension], seed: int, i: int) -> dict[str, Any]:
    """Draw ``i`` of :func:`random_points` (``numpy.random.default_rng([seed, i])``)."""
    rng = np.random.default_rng([seed, i])
    point: dict[str, Any] = {}
    for d in dims:
        if d.continuous:
            assert d.low is not None and d.high is not None
            point[d.name] = int(rng.integers(int(d.low), int(d.high) + 1)) if d.integer \
                else float(rng.uniform(d.low, d.high))
        else:
            point[d.name] = d.values[int(rng.integers(len(d.values)))]
    return point


# ---------------------------------------------------------------- objective, limits

@dataclass(frozen=True)
class Constraint:
    """``metric op value`` such as ``max_drawdown>-0.3``."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def holds(self, metrics: dict[str, Any]) -> bool:
        value = metrics.get(self.metric)
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return _OPS[self.op](float(value), self.value)


def parse_constraint(text: str) -> Constraint:
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*", text)
    if not match:
        raise ConfigError(f"--constraint {text!r} is not metric<op>value", column="constraint",
                          expected="e.g. max_drawdown>-0.3 (ops >, >=, <, <=)",
                          fix="quote it: --constraint \"max_drawdown>-0.3\"")
    try:
        value = float(match.group(3))
    except ValueError:
        raise ConfigError(f"--constraint {text!r}: {match.group(3)!r} is not a number",
                          column="constraint", expected="metric<op>number",
                          fix="e.g. --constraint \"n_trades>=5\"") from None
    return Constraint(match.group(1), match.group(2), value)


def objective_value(metrics: dict[str, Any], objective: str) -> float:
    """The metric to maximize; NaN or missing counts as the worst (``-inf``)."""
    value = metrics.get(objective)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return -math.inf
    return float(value)


# ------------------------------------------------------------------------- trials

@dataclass(frozen=True)
class Task:
    """One configuration to evaluate (the unit shipped to a worker)."""

    number: int
    params: tuple[tuple[str, Any], ...]
    config: RunConfig
    digest: str
    engine: Engine = "auto"


def make_task(base: RunConfig, number: int, params: dict[str, Any],
              input_hashes: dict[str, str], engine: Engine = "auto") -> Task:
    config = dataclasses.replace(base, params=tuple({**dict(base.params), **params}.items()))
    return Task(number=number, params=tuple(sorted(params.items())), config=config,
                digest=config.digest(input_hashes), engine=engine)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a trial row keeps: numbers (as float), booleans and None."""
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in metrics.items()
            if k not in _SKIP_METRICS and isinstance(v, (int, float, bool, type(None)))}


def evaluate(task: Task, market: PreparedMarket) -> dict[str, Any]:
    """Run one trial and keep only what the optimizer needs: scalar metrics and the
    daily returns (as plain lists, so results stay small across process boundaries).

    The lean sweep engine runs it unless ``task.engine`` is ``backtrader`` or the
    engine does not reproduce this run (``engine_note`` then says why); ``engine``
    names what ran.
    """
    from gammabt.sweep_engine import LeanRun, replay

    started = time.perf_counter()
    result: Any = None
    note = ""
    if task.engine != "backtrader":
        lean = replay(task.config, market)
        if isinstance(lean, LeanRun):
            result = lean
        else:
            note = lean.reason
    engine = "lean" if result is not None else "backtrader"
    if result is None:
        result = run(task.config, market)
    return {"number": task.number, "digest": task.digest, "params": dict(task.params),
            "metrics": scalar_metrics(result.metrics), "engine": engine, "engine_note": note,
            "returns_day": [int(d) for d in to_epoch_us(result.returns.index) // US_PER_DAY],
            "returns": [float(x) for x in result.returns.to_numpy()],
            "elapsed_s": time.perf_counter() - started}


def evaluate_batch(tasks: Sequence[Task], market: PreparedMarket) -> list[dict[str, Any]]:
    """:func:`evaluate` on several tasks (one unit shipped to a worker)."""
    return [evaluate(task, market) for task in tasks]


def batches(tasks: Sequence[Task], workers: int, *, per_worker: int = 4,
            largest: int = 32) -> list[list[Task]]:
    """``tasks`` cut into consecutive batches: about ``per_worker`` batches per worker
    (so work stays balanced) of at most ``largest`` tasks (so results flow steadily)."""
    if not tasks:
        return []
    size = max(1, min(largest, math.ceil(len(tasks) / (per_worker * max(1, workers)))))
    return [list(tasks[i:i + size]) for i in range(0, len(tasks), size)]


# ---------------------------------------------------------------------- executors

_WORKER_MARKETS: dict[str, PreparedMarket] = {}


def _market_in_worker(folder: str) -> PreparedMarket:
    market = _WORKER_MARKETS.get(folder)
    if market is None:
        from gammabt.prepared import load_prepared

        market = _WORKER_MARKETS[folder] = load_prepared(folder)
    return market


def _pool_init(folder: str) -> None:
    quiet()
    _market_in_worker(folder)


def _pool_eval(tasks: list[Task], folder: str) -> list[dict[str, Any]]:
    return evaluate_batch(tasks, _market_in_worker(folder))


def _dask_folder(copy: str) -> str:
    """Where a worker unpacks the prepared market of one executor (``copy`` names the
    market and the executor, so two optimizations never remove each other's copy)."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"gammabt-prepared-{copy}")


def _dask_cleanup(copy: str) -> bool:
    """Run on every Dask worker when the executor closes: forget the market and remove
    this worker's unpacked copy of the prepared folder. True when something was removed."""
    import shutil

    folder = _dask_folder(copy)
    _WORKER_MARKETS.pop(folder, None)
    if not os.path.exists(folder):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _dask_eval(tasks: list[Task], blob: dict[str, bytes], copy: str) -> list[dict[str, Any]]:
    """Dask task: unpack the shipped prepared folder once per worker, memory-map it."""
    folder = _dask_folder(copy)
    if folder not in _WORKER_MARKETS and not os.path.exists(os.path.join(folder, "market.json")):
        def fill(tmp: Path) -> None:
            for name, data in blob.items():
                (tmp / name).write_bytes(data)

        with contextlib.suppress(OSError):  # another worker on this host won the race
            write_dir_atomic(folder, fill)
    quiet()
    # The worker's event loop thread asks for the GIL on every timer; at the default
    # 5 ms switch interval the trial thread hands it over so often that trials run a
    # fifth slower than in a process pool. 50 ms keeps heartbeats timely (restored after).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(max(interval, 0.05))
    try:
        return evaluate_batch(tasks, _market_in_worker(folder))
    finally:
        sys.setswitchinterval(interval)


class Executor:
    """Runs tasks and yields their results as they finish (any order)."""

    def map_unordered(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Executor):
    def __init__(self, folder: str | Path, market: PreparedMarket | None = None) -> None:
        self.market = market if market is not None else _market_in_worker(str(folder))

    def map_unordered(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield evaluate(task, self.market)


class LocalPool(Executor):
    """A process pool; each worker memory-maps the prepared folder once (initializer)."""

    def __init__(self, folder: str | Path, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.folder = str(folder)
        self.workers = workers
        # fork: workers start with the parent's modules already imported (no re-import
        # per worker); they only map the prepared folder
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                        initializer=_pool_init, initargs=(self.folder,))

    def map_unordered(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        from concurrent.futures import as_completed

        futures = [self.pool.submit(_pool_eval, batch, self.folder)
                   for batch in batches(tasks, self.workers)]
        for future in as_completed(futures):
            yield from future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """Dask distributed: a ``LocalCluster`` on loopback or an existing scheduler.

    The prepared folder's bytes are scattered to every worker once (broadcast); each
    task carries only a reference to them, and a worker unpacks and maps them once.
    """

    def __init__(self, folder: str | Path, *, local_workers: int | None = None,
                 scheduler: str | None = None, processes: bool = True) -> None:
        from distributed import Client, LocalCluster

        quiet()
        self.cluster = None
        if scheduler is None:
            import dask

            # loopback TCP even for threads (the in-process transport looks up the host's
            # public address). Worker defaults meant for long tasks on big machines slow
            # these short pure-Python trials (by a third, measured on 2 cores) and are
            # changed for the cluster we start (a user's own scheduler keeps its
            # settings): MALLOC_TRIM_THRESHOLD_=65536 returns every numpy/pandas
            # allocation to the OS at once; the statistical profiler samples the running
            # task's stack every 10 ms; the event-loop tick (20 ms), memory monitor
            # (100 ms) and system monitor (500 ms) wake five processes that share the
            # trials' cores.
            with dask.config.set({
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                    "distributed.worker.profile.enabled": False,
                    "distributed.admin.tick.interval": "1s",
                    "distributed.worker.memory.monitor-interval": "1s",
                    "distributed.admin.system-monitor.interval": "2s"}):
                self.cluster = LocalCluster(n_workers=local_workers or 1, threads_per_worker=1,
                                            processes=processes, host="127.0.0.1",
                                            protocol="tcp://", dashboard_address=None,
                                            silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            self.client = Client(scheduler)
        folder = Path(folder)
        blob = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.key = json.loads(blob["market.json"])["key"]
        self.copy = f"{self.key[:16]}-{uuid.uuid4().hex[:8]}"
        [self.blob] = self.client.scatter([blob], broadcast=True)

    def map_unordered(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        from distributed import as_completed

        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        futures = [self.client.submit(_dask_eval, batch, self.blob, self.copy, pure=False)
                   for batch in batches(tasks, workers)]
        for future in as_completed(futures):
            yield from future.result()

    def close(self) -> None:
        # every worker removes its unpacked copy of the prepared folder
        with contextlib.suppress(Exception):
            self.client.run(_dask_cleanup, self.copy)
        # heartbeats racing the shutdown log closed-stream errors that mean nothing here
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def quiet() -> None:
    """Silence the libraries' informational chatter (not our warnings)."""
    for name in ("optuna", "distributed", "distributed.worker", "distributed.scheduler",
                 "distributed.nanny", "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ------------------------------------------------------------------- trial storage

class TrialStore:
    """``trials.parquet`` kept atomically, with the previous good state beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "trials.parquet"
        self.prev = folder / "trials.prev.parquet"
        self.rows: list[dict[str, Any]] = []
        self.repaired = False
        self._load()

    def _load(self) -> None:
        for path in (self.path, self.prev):
            if not path.exists():
                continue
            try:
                self.rows = pq.read_table(path).to_pylist()
            except (OSError, pa.ArrowInvalid):
                self.repaired = True
                continue
            if path is self.prev:
                self.repaired = True
                self.flush()
            return

    @property
    def digests(self) -> set[str]:
        return {row["digest"] for row in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        # through pandas: columns are the union over rows (from_pylist reads the first)
        frame = pd.DataFrame(sorted(self.rows, key=lambda r: r["trial"]))
        table = pa.Table.from_pandas(frame, preserve_index=False)

        def write(tmp: Path) -> None:
            pq.write_table(table, tmp)
            if self.path.exists():  # the last good state, for repairing a torn file
                with contextlib.suppress(OSError):
                    os.replace(self.path, self.prev)

        write_atomic(self.path, write)

    def frame(self) -> pd.DataFrame:
        # rows in trial order first: the column order must not depend on completion order
        return pd.DataFrame(sorted(self.rows, key=lambda r: r["trial"])) if self.rows \
            else pd.DataFrame()


def _row(result: dict[str, Any], objective: str,
         constraints: Sequence[Constraint]) -> dict[str, Any]:
    metrics = result["metrics"]
    if objective not in metrics:
        import difflib

        hint = difflib.get_close_matches(objective, metrics, n=1)
        raise ConfigError(f"unknown objective {objective!r}", column="objective",
                          expected="a scalar metric such as sharpe, sortino, calmar, "
                                   "total_return, max_drawdown",
                          fix=f"did you mean {hint[0]!r}?" if hint else "pick a metric "
                              "listed in a run's metrics.json")
    row: dict[str, Any] = {"trial": result["number"], "digest": result["digest"]}
    row.update({f"param.{k}": v for k, v in sorted(result["params"].items())})
    row["objective"] = objective_value(metrics, objective)
    row["feasible"] = all(c.holds(metrics) for c in constraints)
    row.update({k: v for k, v in sorted(metrics.items())})
    row["engine"] = result.get("engine", "backtrader")
    row["engine_note"] = result.get("engine_note", "")
    row["elapsed_s"] = result["elapsed_s"]
    row["returns_day"] = result["returns_day"]
    row["returns"] = result["returns"]
    return row


# ----------------------------------------------------------------------- optimize

@dataclass(frozen=True)
class OptimizeSpec:
    """What to search: the base run, the space, the search kind, objective and limits."""

    base: RunConfig
    dims: tuple[Dimension, ...]
    search: Search = "grid"
    n_trials: int | None = None
    objective: str = "sharpe"
    constraints: tuple[Constraint, ...] = ()
    seed: int = 0
    # where trials run, not what they are: left out of the identity (same rows either way)
    engine: Engine = "auto"

    def identity(self) -> dict[str, Any]:
        return {"strategy": self.base.strategy, "search": self.search,
                "n_trials": self.n_trials, "objective": self.objective, "seed": self.seed,
                "constraints": [str(c) for c in self.constraints],
                "dims": [dataclasses.asdict(d) for d in self.dims],
                "base": self.base.digest()}

    def opt_id(self, market_key: str) -> str:
        payload = json.dumps({"spec": self.identity(), "market": market_key},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class OptimizeResult:
    folder: Path
    trials: pd.DataFrame
    best: pd.Series | None
    repaired: bool


def _trial_hashes(market: PreparedMarket, strategy: str) -> dict[str, str]:
    from strategies.registry import strategy_source_sha256

    return {**market.input_hashes, "strategy_source": strategy_source_sha256(strategy)}


def optimize(spec: OptimizeSpec, market: PreparedMarket, prepared_dir: str | Path,
             executor: Executor, *, folder: Path,
             progress: Callable[[int, int, float], None] | None = None,
             flush_every_s: float = 1.0) -> OptimizeResult:
    """Run (or resume) the search of ``spec`` into ``folder`` and return its trials.

    Finished trials found in ``folder/trials.parquet`` are skipped by digest; the
    executor only changes where trials run, never which trials or their numbers.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "optimization.json"
    identity = {"spec": spec.identity(), "market": market.key}
    if manifest.exists():
        if json.loads(manifest.read_text()) != json.loads(json.dumps(identity, default=str)):
            raise ConfigError("this folder holds a different optimization", source=str(folder),
                              expected="the same strategy, space, search, objective and seed",
                              fix="pass another --name, or delete the folder")
    else:
        write_text_atomic(manifest, json.dumps(identity, indent=2, default=str) + "\n")
    check_engine(spec.engine, spec.base, market)
    store = TrialStore(folder)
    hashes = _trial_hashes(market, spec.base.strategy)
    last_flush = time.monotonic()

    def record(results: Iterable[dict[str, Any]], total: int) -> list[dict[str, Any]]:
        nonlocal last_flush
        rows = []
        for result in results:
            row = _row(result, spec.objective, spec.constraints)
            store.add(row)
            rows.append(row)
            if time.monotonic() - last_flush >= flush_every_s:
                store.flush()
                last_flush = time.monotonic()
            if progress is not None:
                progress(len(store.rows), total, _best_value(store.rows))
        return rows

    if spec.search == "optuna":
        _optuna_loop(spec, folder, store, hashes, executor, record)
    else:
        wanted = int(spec.n_trials or 0)
        if spec.search == "grid":
            points: Iterable[dict[str, Any]] = grid_points(spec.dims)
        else:  # draws until N distinct configurations (or 100 N draws: a small space)
            points = (random_point(spec.dims, spec.seed, i) for i in range(100 * wanted))
        tasks, seen = [], set()
        for number, point in enumerate(points):
            task = make_task(spec.base, number, point, hashes, spec.engine)
            if task.digest in seen:  # the same configuration drawn twice: run it once
                continue
            seen.add(task.digest)
            tasks.append(task)
            if spec.search == "random" and len(tasks) == wanted:
                break
        done = store.digests
        todo = [t for t in tasks if t.digest not in done]
        if progress is not None:
            progress(len(store.rows), len(tasks), _best_value(store.rows))
        record(executor.map_unordered(todo), len(tasks))
    store.flush()
    trials = store.frame()
    return OptimizeResult(folder=folder, trials=trials, best=best_trial(trials),
                          repaired=store.repaired)


def check_engine(engine: str, config: RunConfig, market: PreparedMarket) -> None:
    """Refuse an unknown engine, and ``lean`` for a run the lean engine never supports."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", column="engine",
                          expected=f"one of {list(ENGINES)}", fix="e.g. --engine auto")
    if engine == "lean":
        from gammabt.sweep_engine import static_check

        why = static_check(config, market)
        if why is not None:
            raise ConfigError(f"the lean engine cannot run this sweep: {why.reason}",
                              column="engine", expected="a single-leg strategy with declared "
                              "rules (rules_class) trading spot or the perpetual",
                              fix="use --engine auto (falls back to Backtrader) or "
                                  "--engine backtrader")


def _best_value(rows: list[dict[str, Any]]) -> float:
    values = [r["objective"] for r in rows if r["feasible"]]
    return max(values) if values else -math.inf


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The feasible trial with the highest objective (lowest trial number on ties)."""
    top = top_trials(trials, 1)
    return None if top.empty else top.iloc[0]


def top_trials(trials: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` feasible trials with the highest objective (lowest number on ties)."""
    if trials.empty:
        return trials
    ok = trials[trials["feasible"] & np.isfinite(trials["objective"])]
    return ok.sort_values(["objective", "trial"], ascending=[False, True]).head(k)


def _optuna_loop(spec: OptimizeSpec, folder: Path, store: TrialStore,
                 hashes: dict[str, str], executor: Executor,
                 record: Callable[[Iterable[dict[str, Any]], int], list[dict[str, Any]]],
                 ) -> None:
    """TPE in rounds of :data:`OPTUNA_BATCH` asks; the sampler is reseeded from the
    seed and the number of trials so far, so a resumed study asks what an
    uninterrupted one would have."""
    import optuna

    quiet()
    total = int(spec.n_trials or 0)
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(study_name="gammabt", storage=storage, direction="maximize",
                                load_if_exists=True)
    by_digest = {row["digest"]: row for row in store.rows}
    # trials asked before an interruption but never told: finish them first
    pending = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    while True:
        complete = [t for t in study.trials if t.state.is_finished()]
        if not pending and len(complete) >= total:
            break
        asked: list[tuple[optuna.trial.Trial | optuna.trial.FrozenTrial, Task]] = []
        if pending:
            for frozen in pending:
                trial = optuna.trial.Trial(study, frozen._trial_id)
                task = make_task(spec.base, frozen.number, dict(frozen.params), hashes,
                                 spec.engine)
                asked.append((trial, task))
            pending = []
        else:
            study.sampler = optuna.samplers.TPESampler(seed=spec.seed * 1_000_003 + len(
                study.trials))
            for _ in range(min(OPTUNA_BATCH, total - len(complete))):
                trial = study.ask()
                point = {}
                for d in spec.dims:
                    if d.continuous:
                        assert d.low is not None and d.high is not None
                        point[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high)) \
                            if d.integer else trial.suggest_float(d.name, d.low, d.high)
                    else:
                        point[d.name] = trial.suggest_categorical(d.name, list(d.values))
                asked.append((trial, make_task(spec.base, trial.number, point, hashes,
                                                spec.engine)))
        todo = [task for _, task in asked if task.digest not in by_digest]
        rows = record(executor.map_unordered(todo), total)
        for row in rows:
            by_digest[row["digest"]] = row
        for trial, task in asked:
            row = by_digest[task.digest]
            value = row["objective"] if row["feasible"] and math.isfinite(row["objective"]) \
                else None
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
    store.flush()


# --------------------------------------------------------------------- statistics

def returns_matrix(trials: pd.DataFrame) -> pd.DataFrame:
    """Days x trials matrix of daily returns (columns = trial numbers), flat days 0.0."""
    cols = {}
    for _, row in trials.iterrows():
        days = pd.to_datetime(np.asarray(row["returns_day"], dtype=np.int64), unit="D",
                              utc=True)
        cols[int(row["trial"])] = pd.Series(np.asarray(row["returns"], dtype=float), index=days)
    return pd.DataFrame(cols).sort_index().fillna(0.0)


# ------------------------------------------------------------------- walk forward

@dataclass(frozen=True)
class WalkForward:
    """``train=180d,test=30d[,anchored]``: fold lengths and whether training is anchored."""

    train: pd.Timedelta
    test: pd.Timedelta
    anchored: bool = False


def parse_walk_forward(text: str) -> WalkForward:
    parts = {p.strip().partition("=")[0]: p.strip().partition("=")[2]
             for p in text.split(",") if p.strip()}
    anchored = "anchored" in parts
    parts.pop("anchored", None)
    try:
        if set(parts) != {"train", "test"}:
            raise ValueError
        train, test = (parse_duration(parts[k].strip(), name=f"--walk-forward {k}",
                                      example="180d") for k in ("train", "test"))
    except ValueError:
        raise ConfigError(f"--walk-forward {text!r}", column="walk_forward",
                          expected="train=DURATION,test=DURATION[,anchored]",
                          fix="e.g. --walk-forward train=180d,test=30d") from None
    if train <= pd.Timedelta(0) or test <= pd.Timedelta(0):
        raise ConfigError(f"--walk-forward {text!r}: durations must be positive",
                          column="walk_forward", expected="train > 0 and test > 0",
                          fix="e.g. --walk-forward train=180d,test=30d")
    return WalkForward(train, test, anchored)


def folds(first: pd.Timestamp, end: pd.Timestamp, wf: WalkForward,
          ) -> list[tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]]:
    """``(train_start, test_start, test_end)`` per fold; test windows tile the span after
    the first training window without overlap (the last one may be shorter)."""
    out = []
    test_start = first + wf.train
    while test_start < end:
        train_start = first if wf.anchored else test_start - wf.train
        out.append((train_start, test_start, min(test_start + wf.test, end)))
        test_start += wf.test
    return out


def walk_forward(spec: OptimizeSpec, market: PreparedMarket, prepared_dir: str | Path,
                 executor: Executor, *, folder: Path, wf: WalkForward,
                 progress: Callable[[int, int, float], None] | None = None,
                 ) -> tuple[pd.DataFrame, pd.Series]:
    """Optimize on each training window, run the winner on the following test window.

    Each fold is an ordinary (resumable) optimization in ``folder/fold-<k>``; the
    analytics come from the market prepared on the full history, so every window is
    point in time. Each fold's in-sample search is judged too: its winner's deflated
    Sharpe ratio (``is_dsr``) and the search's probability of backtest overfitting
    (``is_pbo``; ``fold-<k>/stats.json`` has the details). Returns the per-fold table
    and the stitched out-of-sample daily returns.
    """
    from gammabt.optreport import winner_stats

    spot = market.legs[0][1]
    first = pd.Timestamp(int(spot.open_us[0]), unit="us", tz="UTC")
    end = pd.Timestamp(int(spot.open_us[-1]) + spot.bar_freq_us, unit="us", tz="UTC")
    if spec.base.start is not None:
        first = max(first, pd.Timestamp(spec.base.start))
    if spec.base.end is not None:
        end = min(end, pd.Timestamp(spec.base.end))
    plan = folds(first, end, wf)
    if not plan:
        raise ConfigError(f"no fold fits: the data span {first:%Y-%m-%d} to {end:%Y-%m-%d} is "
                          f"shorter than the training window {wf.train}",
                          column="walk_forward", expected="train shorter than the data",
                          fix="shorten train= or use more data")
    rows, pieces = [], []
    hashes = _trial_hashes(market, spec.base.strategy)
    for k, (train_start, test_start, test_end) in enumerate(plan):
        base = dataclasses.replace(spec.base, start=train_start.isoformat(),
                                   end=test_start.isoformat())
        fold_spec = dataclasses.replace(spec, base=base)
        result = optimize(fold_spec, market, prepared_dir, executor,
                          folder=folder / f"fold-{k}", progress=progress)
        row: dict[str, Any] = {"fold": k, "train_start": f"{train_start:%Y-%m-%d}",
                               "test_start": f"{test_start:%Y-%m-%d}",
                               "test_end": f"{test_end:%Y-%m-%d}"}
        best = result.best
        # how much the in-sample search itself can be trusted
        stats = winner_stats(returns_matrix(result.trials) if len(result.trials)
                             else pd.DataFrame(), None if best is None else int(best["trial"]))
        (folder / f"fold-{k}" / "stats.json").write_text(
            json.dumps(stats.as_dict(), indent=2, default=str) + "\n")
        row["is_dsr"] = stats.dsr.dsr if stats.dsr is not None else math.nan
        row["is_pbo"] = stats.pbo.pbo if stats.pbo is not None else math.nan
        if best is None:
            row.update({"params": "none feasible", "is_objective": math.nan,
                        "oos_objective": math.nan})
            rows.append(row)
            continue
        params = {c[6:]: _plain(best[c]) for c in best.index if c.startswith("param.")}
        test_base = dataclasses.replace(spec.base, start=test_start.isoformat(),
                                        end=test_end.isoformat())
        task = make_task(test_base, k, params, hashes, spec.engine)
        [out] = list(executor.map_unordered([task]))
        pieces.append(pd.Series(out["returns"], index=pd.to_datetime(
            np.asarray(out["returns_day"], dtype=np.int64), unit="D", utc=True)))
        row.update({"params": json.dumps(params, sort_keys=True),
                    "is_objective": float(best["objective"]),
                    "oos_objective": objective_value(out["metrics"], spec.objective),
                    "is_sharpe": best.get("sharpe"),
                    "oos_sharpe": out["metrics"].get("sharpe"),
                    "is_total_return": best.get("total_return"),
                    "oos_total_return": out["metrics"].get("total_return"),
                    "oos_n_trades": out["metrics"].get("n_trades")})
        rows.append(row)
    stitched = pd.concat(pieces).sort_index() if pieces else pd.Series(dtype=float)
    # a test window's last bar closes at the next window's first day: both folds hold a
    # piece of that day, compounded
    stitched = (1.0 + stitched).groupby(level=0).prod() - 1.0
    stitched.name = "out_of_sample"
    return pd.DataFrame(rows), stitched


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------- engine cross-check

class EngineMismatch(GammabtError):
    """A Backtrader re-run disagrees with the trial row the lean engine produced."""


#: relative tolerance of :func:`cross_check` (the engines agree bit for bit when right)
CHECK_RTOL = 1e-9


def cross_check(row: pd.Series, metrics: dict[str, Any], params: dict[str, Any]) -> float:
    """Compare a trial row with the metrics of its full Backtrader re-run.

    Every scalar metric must be equal, both missing (None or NaN), or within
    :data:`CHECK_RTOL` relative. Returns the largest relative difference.

    Raises
    ------
    EngineMismatch
        A metric differs; the message names the configuration and the metric.
    """
    worst = 0.0
    for key, want in scalar_metrics(metrics).items():
        if key not in row.index:
            continue
        got = _plain(row[key])
        if _missing(got) and _missing(want):
            continue
        if _missing(got) or _missing(want):
            diff = math.inf
        elif isinstance(want, bool) or isinstance(got, bool):
            diff = 0.0 if bool(got) == bool(want) else math.inf
        else:
            a, b = float(got), float(want)
            diff = 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))
        if diff > CHECK_RTOL:
            raise EngineMismatch(
                f"trial {int(row['trial'])} {json.dumps(params, sort_keys=True)} (digest "
                f"{row['digest'][:12]}, engine {row.get('engine', 'backtrader')}): {key} = "
                f"{got!r} in the trials but {want!r} in the Backtrader re-run; rerun the "
                "sweep with --engine backtrader and report the configuration")
        worst = max(worst, diff)
    return worst


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def engine_note(trials: pd.DataFrame) -> str:
    """Which engine ran how many trials, and the commonest reason for a fallback."""
    counts = trials["engine"].fillna("backtrader").value_counts()
    text = "trials by engine: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    notes = trials.get("engine_note", pd.Series(dtype=str)).fillna("")
    fallbacks = notes[notes != ""].value_counts()
    if len(fallbacks):
        text += (f"; Backtrader ran {int(fallbacks.sum())} trial(s) the lean engine does not "
                 f"reproduce (e.g. {fallbacks.index[0]})")
    return text


def cross_check_note(checked: Sequence[tuple[pd.Series, float]]) -> str:
    """One line saying what the re-runs of the top trials confirmed."""
    lean = sum(1 for row, _ in checked if row.get("engine") == "lean")
    worst = max(diff for _, diff in checked)
    return (f"engine cross-check: the top {len(checked)} trial(s) ({lean} from the lean "
            f"engine) re-run on Backtrader give the same metrics (largest relative "
            f"difference {worst:.3g})")


# ------------------------------------------------------------- command-line driver

def open_market(config: RunConfig, prepared_dir: str | Path | None, results_dir: Path,
                ) -> tuple[PreparedMarket, Path]:
    """The prepared market (memory-mapped) and its folder; prepared from the config's
    inputs into ``<results>/prepared/<key>`` when no folder is given (reused next time)."""
    from gammabt.prepared import load_prepared, save_prepared
    from gammabt.run import market_key, prepare

    if prepared_dir is None:
        from gammabt.config import input_sha256

        hashes = {role: input_sha256(path) for role, path in config.inputs().items()}
        folder = results_dir / "prepared" / market_key(config, hashes)[:16]
        if not (folder / "market.json").exists():
            save_prepared(prepare(dataclasses.replace(config, start=None, end=None)), folder)
        prepared_dir = folder
    market = load_prepared(prepared_dir)
    return market, Path(prepared_dir)


def make_executor(prepared_dir: Path, market: PreparedMarket, *, workers: int = 1,
                  dask_local: int | None = None, scheduler: str | None = None) -> Executor:
    if dask_local is not None or scheduler is not None:
        return DaskExecutor(prepared_dir, local_workers=dask_local, scheduler=scheduler)
    if workers > 1:
        return LocalPool(prepared_dir, workers)
    return InProcess(prepared_dir, market)


def run_optimization(config: RunConfig, *, grid: Sequence[str], n_random: int | None = None,
                     n_optuna: int | None = None, objective: str = "sharpe",
                     constraints: Sequence[str] = (), workers: int = 1,
                     dask_local: int | None = None, scheduler: str | None = None,
                     walk: str | None = None, seed: int = 0, name: str | None = None,
                     results_dir: Path = Path("results"),
                     prepared_dir: str | Path | None = None, console: Any = None,
                     progress: bool = True, top: int = 3, engine: Engine = "auto") -> Path:
    """Everything ``gammabt optimize`` does; returns the optimization folder.

    The ``top`` best feasible trials are re-run as normal (Backtrader) run folders
    (labels ``<opt>-best``, ``<opt>-top2`` ...), checked against their trial rows
    (:func:`cross_check`: a mismatch raises :class:`EngineMismatch`) and, when there
    are two or more, compared on ``compare.html`` in the optimization folder.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from gammabt.optreport import WinnerStats, winner_stats, write_summary
    from gammabt.results import write_run

    console = console or Console()
    quiet()
    if not grid:
        raise ConfigError("nothing to search", column="grid",
                          expected="at least one --grid K=VALUES",
                          fix="e.g. --grid lookback=6,12,24")
    dims = tuple(parse_dimension(spec, config.strategy) for spec in grid)
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ConfigError("a parameter is searched twice", column="grid",
                          expected="one --grid per parameter", fix="merge the --grid options")
    search: Search = "optuna" if n_optuna else "random" if n_random else "grid"
    wf = parse_walk_forward(walk) if walk else None
    spec = OptimizeSpec(base=config, dims=dims, search=search,
                        n_trials=n_optuna or n_random, objective=objective,
                        constraints=tuple(parse_constraint(c) for c in constraints), seed=seed,
                        engine=engine)
    if search == "grid":
        grid_points(dims)  # refuses continuous ranges before anything runs
    results_dir = Path(results_dir)
    market, prepared_dir = open_market(config, prepared_dir, results_dir)
    folder = results_dir / f"opt-{name or spec.opt_id(market.key)}"
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"--name {name!r}", column="name", expected="letters, digits, _ . -",
                          fix="e.g. --name lookback-sweep")
    executor = make_executor(prepared_dir, market, workers=workers, dask_local=dask_local,
                             scheduler=scheduler)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress,
                   transient=False)
    job = bar.add_task("trials", total=None, best="n/a")

    def tick(done: int, total: int, best: float) -> None:
        bar.update(job, completed=done, total=total,
                   best=f"{best:.4f}" if math.isfinite(best) else "n/a")

    folds_table = None
    try:
        with bar:
            if wf is None:
                result = optimize(spec, market, prepared_dir, executor, folder=folder,
                                  progress=tick)
                trials = result.trials
                if result.repaired:
                    console.print("[yellow]trials.parquet was torn; repaired from its last "
                                  "good state and resumed[/yellow]")
            else:
                folds_table, stitched = walk_forward(spec, market, prepared_dir, executor,
                                                     folder=folder, wf=wf, progress=tick)
    finally:
        executor.close()
    best_folder = None
    if wf is None:
        best = best_trial(trials)
        matrix = returns_matrix(trials) if len(trials) else pd.DataFrame()
        stats = winner_stats(matrix, None if best is None else int(best["trial"]))
        if len(trials) and "engine" in trials.columns:
            stats = dataclasses.replace(stats, notes=(*stats.notes, engine_note(trials)))
        folders, checked = [], []
        for rank, (_, row) in enumerate(top_trials(trials, top).iterrows(), start=1):
            params = {c[6:]: _plain(row[c]) for c in row.index if c.startswith("param.")}
            label = f"{folder.name}-best" if rank == 1 else f"{folder.name}-top{rank}"
            ranked = dataclasses.replace(
                config, params=tuple({**dict(config.params), **params}.items()), label=label)
            # a resumed optimization with the same ranking keeps the folders it wrote
            done = sorted(results_dir.glob(f"*-{label}-{row['digest'][:8]}"))
            if done:
                rerun = json.loads((done[-1] / "metrics.json").read_text())
                folders.append(done[-1])
            else:
                result = run(ranked, market)
                rerun = result.metrics
                folders.append(write_run(result, results_dir))
            checked.append((row, cross_check(row, rerun, params)))
        if checked:
            check_note = cross_check_note(checked)
            stats = dataclasses.replace(stats, notes=(*stats.notes, check_note))
        if folders:
            best_folder = folders[0]
        if len(folders) >= 2:
            from gammabt.compare import load_run_data, write_compare

            page = write_compare([load_run_data(f) for f in folders], folder / "compare.html")
            console.print(f"Top {len(folders)} compared: {page}")
        title = f"{config.strategy}: {search} search, {len(trials)} trials"
    else:
        trials = pd.concat([pd.read_parquet(p).assign(fold=i) for i, p in enumerate(
            sorted(folder.glob("fold-*/trials.parquet"),
                   key=lambda p: int(p.parent.name[5:])))], ignore_index=True)
        from gammabt.report import compute_metrics, write_tearsheet

        notes = ["walk forward: each fold's winner is judged on the test window that "
                 "follows its training window"]
        for fold in folds_table.itertuples(index=False):
            notes.append(f"fold {fold.fold} in-sample search ({fold.train_start} to "
                         f"{fold.test_start}): deflated Sharpe ratio of the winner "
                         f"{fold.is_dsr:.4f}, probability of backtest overfitting "
                         f"{fold.is_pbo:.3f} (fold-{fold.fold}/stats.json)")
            console.print(notes[-1])
        if len(stitched):
            oos = compute_metrics(stitched, None, periods_per_year=365)
            sharpe = float(oos.get("sharpe") or math.nan)
            total = float(oos.get("total_return") or math.nan)
            notes.append(f"stitched out-of-sample returns: Sharpe {sharpe:.4f}, total return "
                         f"{total:.4f} over {len(stitched)} days (oos_tearsheet.html)")
            write_tearsheet(stitched, None, folder / "oos_tearsheet.html",
                            title=f"{config.strategy}: stitched out-of-sample returns")
            stitched.to_frame().to_parquet(folder / "oos_returns.parquet")
            console.print(notes[-1])
        stats = WinnerStats(dsr=None, pbo=None, notes=tuple(notes))
        folds_table.to_parquet(folder / "folds.parquet", index=False)
        title = f"{config.strategy}: walk forward, {len(folds_table)} folds"
    summary = write_summary(folder, trials, stats, objective=objective,
                            constraints=list(constraints), title=title,
                            best_folder=None if best_folder is None else os.path.relpath(
                                best_folder, folder), folds=folds_table)
    _print_summary(console, trials, stats, folds_table, objective)
    if best_folder is not None:
        console.print(f"Best configuration re-run: {best_folder}")
    console.print(f"Summary: {summary}")
    return folder


def _print_summary(console: Any, trials: pd.DataFrame, stats: Any,
                   folds_table: pd.DataFrame | None, objective: str) -> None:
    from rich.table import Table

    if folds_table is not None:
        table = Table(title="walk forward: in and out of sample per fold")
        for col in folds_table.columns:
            table.add_column(str(col), justify="right")
        for row in folds_table.itertuples(index=False):
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
        console.print(table)
        return
    params = [c for c in trials.columns if c.startswith("param.")]
    top = trials.sort_values(["objective", "trial"], ascending=[False, True]).head(5)
    table = Table(title=f"top 5 by {objective}")
    for col in ["trial", *params, "objective", "feasible", "n_trades"]:
        table.add_column(col, justify="right")
    for _, row in top.iterrows():
        table.add_row(*[str(row[c]) if not isinstance(row[c], float) else f"{row[c]:.4f}"
                        for c in ["trial", *params, "objective", "feasible", "n_trades"]])
    console.print(table)
    if stats.dsr is not None:
        d = stats.dsr
        console.print(f"Deflated Sharpe ratio of the winner: {d.dsr:.4f} "
                      f"({'significant' if d.significant else 'NOT significant'} at 0.95); "
                      f"daily SR {d.sharpe:.4f} vs SR0 {d.sr0:.4f} for N={d.n_trials} trials "
                      f"(var {d.var_sharpe:.3g}), T={d.n_obs} days, skew {d.skew:.3f}, "
                      f"raw kurtosis {d.kurt:.3f}")
    if stats.pbo is not None:
        p = stats.pbo
        console.print(f"Probability of backtest overfitting: {p.pbo:.3f} (CSCV S={p.n_blocks}, "
                      f"{p.n_splits} splits); median OOS Sharpe degradation "
                      f"{p.degradation:.4f}; P(OOS loss) {p.prob_loss:.3f}")
    for note in stats.notes:
        console.print(f"[dim]{note}[/dim]")
