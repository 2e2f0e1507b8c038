"""The ``gammabt`` command line: demo, run, gex, simulate, basis, liq.

Errors a user can fix print one line and exit 2; anything else prints one line and
exits 1. ``--debug`` shows the traceback instead. Commands that write check their
outputs before any work (not an input, writable) and remove what they created when
they fail (see :func:`_writes`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gammabt.inputs import DEALERS, INPUT_SPECS, INSTRUMENTS
from plumbing.atomic import write_atomic
from plumbing.errors import ConfigError, GammabtError
from plumbing.timeconv import parse_duration

# Rich wraps to 80 columns when stdout is not a terminal; tables need more room.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)

IN_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)
DEMO_SCENARIO = "gamma_squeeze_down"
DEMO_SEED = 7
DEMO_DAYS = 90


def _parse_params(pairs: tuple[str, ...], option: str = "--param",
                  ) -> tuple[tuple[str, Any], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {pair!r} is not key=value", column=option[2:],
                              expected=f"{option} name=value", fix="e.g. --param lookback=8")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _print_metrics(metrics: dict[str, Any], title: str) -> None:
    rows = [("total_return", "Total return"), ("cagr", "CAGR"), ("sharpe", "Sharpe (365)"),
            ("sortino", "Sortino (365)"), ("max_drawdown", "Max drawdown"),
            ("volatility_ann", "Volatility (ann.)"), ("n_trades", "Closed trades"),
            ("trade_win_rate", "Trade win rate"), ("n_orders", "Orders"),
            ("n_rejected", "Rejected orders"), ("fees_paid_usd", "Fees paid (USD)"),
            ("funding_paid_usd", "Funding paid (USD)"),
            ("funding_received_usd", "Funding received (USD)"),
            ("borrow_paid_usd", "Borrow paid (USD)"), ("n_liquidations", "Liquidations"),
            ("max_margin_usage", "Max margin usage"), ("final_value", "Final value (USD)"),
            ("benchmark_total_return", "Buy & hold total return")]
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in rows:
        if key in metrics:
            table.add_row(label, _fmt(metrics[key]))
    console.print(table)


def _report_run(result, folder: Path) -> None:
    for note in result.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    for warning in result.metrics.get("warnings", []):
        err_console.print(f"[bold yellow]WARNING: {escape(warning)}[/bold yellow]")
    _print_metrics(result.metrics, f"{result.config.strategy}: {result.run_id}")
    if result.n_rejected:
        why = ", ".join(f"{n} {reason.replace('_', ' ')}"
                        for reason, n in result.metrics.get("refusals", {}).items())
        err_console.print(f"[bold red]WARNING: {result.n_rejected} order(s) were refused by "
                          f"the broker ({why or 'margin/cash'}); see orders.parquet. Lower "
                          "--percent, enable --borrow for short spot, or trade the perp."
                          "[/bold red]")
    if result.metrics.get("n_liquidations"):
        err_console.print(f"[bold red]The account was liquidated "
                          f"{result.metrics['n_liquidations']} time(s); see ledger.parquet."
                          "[/bold red]")
    console.print(f"Tearsheet: {folder / 'tearsheet.html'}")
    if (folder / "report.html").is_file():
        console.print(f"Report page: {folder / 'report.html'}")
    console.print(f"Run folder: {folder}  ({result.elapsed_s:.1f} s)")


def _frame_table(frame: pd.DataFrame, title: str, max_rows: int = 40) -> None:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    shown = frame if len(frame) <= max_rows else pd.concat([frame.head(max_rows // 2),
                                                            frame.tail(max_rows // 2)])
    for _, row in shown.iterrows():
        table.add_row(*[_fmt(v) if not isinstance(v, pd.Timestamp)
                        else v.strftime("%Y-%m-%d %H:%M") for v in row])
    console.print(table)
    if len(frame) > max_rows:
        console.print(f"[dim]({len(frame)} rows; first and last {max_rows // 2} shown; "
                      "use --out to save all)[/dim]")


def _input_paths(ctx: click.Context, kwargs: dict[str, Any], extra: tuple[str, ...],
                 ) -> dict[Path, str]:
    """Every input the command was given (its ``exists=True`` path options and the
    ``extra`` parameters that name an existing path), resolved -> flag."""
    given: dict[Path, str] = {}
    for param in ctx.command.params:
        is_input = isinstance(param.type, click.Path) and param.type.exists
        if not (is_input or param.name in extra) or param.name not in kwargs:
            continue
        value = kwargs[param.name]
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None and (is_input or Path(item).exists()):
                given.setdefault(Path(item).resolve(), _flag(param))
    return given


def _flag(param: click.Parameter) -> str:
    opts = getattr(param, "opts", None) or [param.name or "?"]
    return max(opts, key=len)


def _check_output(flag: str, path: Path, *, folder: bool, inputs: dict[Path, str]) -> None:
    """Refuse, before any work, an output that is an input or cannot be written."""
    where = path.resolve()
    if where in inputs:
        raise ConfigError(f"{flag} {path} is the {inputs[where]} input", column=flag,
                          expected="an output path that is not an input",
                          fix=f"choose another {flag} {'folder' if folder else 'file'} name")
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise ConfigError(f"{flag} {path} is {kind}", column=flag,
                          expected="a folder path" if folder else "a file path",
                          fix=f"choose another {flag}")
    parent = where if folder and path.is_dir() else where.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path} lies under {parent}, which is a file",
                          column=flag,
                          expected="an output path whose parents are folders",
                          fix=f"choose another {flag}, or move that file away")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write in {parent} (permission denied)",
                          column=flag, expected="a writable location",
                          fix=f"choose another {flag}, or make the folder writable (chmod u+w)")


def _new_top(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (what a failed
    command must remove), or None when ``path`` exists."""
    path = path.resolve()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _writes(*outputs: str, folders: tuple[str, ...] = (), inputs: tuple[str, ...] = (),
            keep_partial: bool = False) -> Any:
    """Decorate a command that writes ``outputs`` (parameter names; ``folders`` are
    folder outputs, the rest files).

    Before the command runs, an output that is one of its inputs (its ``exists=True``
    path options and the ``inputs`` parameters naming an existing path), lies under a
    file or in a folder it cannot write to is refused. When the command fails, every
    output path (and parent folder) it created is removed again, so a failed command
    leaves nothing behind; writers still write into temporary siblings and rename.
    ``keep_partial`` (a resumable search) removes them only for user errors, which
    happen before anything worth resuming exists.
    """
    def decorate(func: Any) -> Any:
        import functools

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            given = _input_paths(ctx, kwargs, inputs)
            flags = {p.name: _flag(p) for p in ctx.command.params}
            fresh = []
            for name in outputs:
                value = kwargs.get(name)
                if value is None:
                    continue
                path = Path(value)
                _check_output(flags.get(name, name), path, folder=name in folders,
                              inputs=given)
                fresh.append(_new_top(path))
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                if not keep_partial or isinstance(exc, GammabtError):
                    for top in fresh:
                        _remove(top)
                raise
        command.outputs = outputs  # type: ignore[attr-defined]  # checked by a test
        return command
    return decorate


def _remove(path: Path | None) -> None:
    """Remove what a failed command created; a results folder that holds a finished run
    (this command's, written before it failed, or a concurrent one's) is kept."""
    import shutil

    if path is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        finished = any((m.parent / "config.json").is_file() and not m.parent.name.startswith(".")
                       for m in path.rglob("metrics.json"))
        if not finished:
            shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _bars_span(bars: Any) -> dict[str, pd.Timestamp]:
    """The first bar's open and the last bar's close (for feeds.schema.check_overlap)."""
    from feeds.loaders import bar_freq

    ts = pd.to_datetime(bars.column("ts").to_numpy(), utc=True)
    return {"first": ts.min(), "last": ts.max() + bar_freq(bars)}


TABLE_SUFFIXES = (".csv", ".parquet")


def _table_out_option(ctx: click.Context, param: click.Parameter, value: Path | None,
                      ) -> Path | None:
    """Refuse a table output of an unsupported kind before any work is done."""
    if value is not None and value.suffix not in TABLE_SUFFIXES:
        flag = _flag(param)
        raise ConfigError(f"{flag} {value}: unsupported output suffix "
                          f"{value.suffix or '(none)'!r}", column=flag,
                          expected=".parquet or .csv", fix=f"name the {flag} file *.parquet "
                          "or *.csv")
    return value


def _write_table(frame: pd.DataFrame, out: Path) -> None:
    if out.suffix == ".csv":
        write_atomic(out, lambda tmp: frame.to_csv(tmp, index=False))
    elif out.suffix == ".parquet":
        write_atomic(out, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        raise ConfigError(f"unsupported output suffix {out.suffix!r}", source=str(out),
                          expected=".parquet or .csv", fix="name the output file *.parquet")
    console.print(f"Wrote {len(frame)} rows to {out}")


def _opt_name(name: str | None) -> str | None:
    """Refuse a bad optimize --name before the market is prepared (it names a folder)."""
    import re

    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"--name {name!r} is not a folder name", column="--name",
                          expected="letters, digits, _ . -", fix="e.g. --name lookback-sweep")
    return name


def _label_option(ctx: click.Context, param: click.Parameter, value: str | None,
                  ) -> str | None:
    """Refuse a bad --label before any input is read."""
    from gammabt.index import check_label

    return check_label(value, source="--label")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="gammabt")
def cli(debug: bool) -> None:
    """gammabt: backtest gamma-, liquidation- and basis-aware crypto strategies."""


@cli.command()
@click.option("--scenario", default=DEMO_SCENARIO, show_default=True,
              help="Simulator scenario preset.")
@click.option("--seed", default=DEMO_SEED, show_default=True, type=int)
@click.option("--days", default=DEMO_DAYS, show_default=True, type=int)
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@_writes("results_dir", folders=("results_dir",))
def demo(scenario: str, seed: int, days: int, results_dir: Path) -> None:
    """Simulate a market, run the gamma-flip strategy on its perpetual, write a tearsheet."""
    from feeds.synthetic import simulate
    from gammabt.config import RunConfig
    from gammabt.results import write_run
    from gammabt.run import run as run_backtest

    console.print(f"Simulated market: scenario [bold]{scenario}[/bold], seed {seed}, "
                  f"{days} days of 1h bars with hourly option chains")
    market_dir = results_dir / "markets" / f"{scenario}-seed{seed}-{days}d"
    if not (market_dir / "market.json").exists():
        market = simulate(scenario, days=days, freq="1h", seed=seed)
        market.write(market_dir, overwrite=True)
    config = RunConfig(strategy="gamma_flip", market=str(market_dir), label="demo",
                       instrument="perp")
    result = run_backtest(config)
    folder = write_run(result, results_dir)
    _report_run(result, folder)


def _run_options(func: Any) -> Any:
    """The options shared by ``run``, ``prepare`` and ``optimize``: the strategy, one
    option per registered input kind (:func:`input_options`), costs and window."""
    for option in reversed([*_RUN_OPTIONS[:1], *input_options(), *_RUN_OPTIONS[1:]]):
        func = option(func)
    return func


def input_options() -> list[Any]:
    """``--KIND`` for every kind of :data:`gammabt.inputs.INPUT_SPECS` (repeatable for
    the kinds that take several files), then ``--delay`` and its ``--chain-delay`` alias."""
    out = []
    for name, spec in INPUT_SPECS.items():
        kind = click.Path(exists=True, file_okay=False, path_type=Path) if spec.folder \
            else IN_FILE
        out.append(click.option(f"--{name.replace('_', '-')}", name, multiple=spec.repeats,
                                type=kind, help=spec.help))
    defaults = "; ".join(f"{name}: {spec.delay_doc}" for name, spec in INPUT_SPECS.items()
                         if spec.delay is not None)
    out.append(click.option("--delay", "delays", multiple=True, metavar="KIND=DURATION",
                            help="Publication delay of an input kind, repeatable: its "
                            "records are used from their stamp + this (e.g. --delay "
                            f"funding=30min). [default: {defaults}]"))
    out.append(click.option("--chain-delay", help="Alias of --delay chain=DURATION."))
    return out


#: The run options besides the inputs (those come from the input registry).
_RUN_OPTIONS = [
    click.option("--strategy", default="gamma_flip", show_default=True,
                 help="Registered name (see `gammabt strategies`), path/to/file.py:Class "
                 "or package.module:Class."),
    click.option("--barrier-flip/--no-barrier-flip", default=None,
                 help="Count the barrier book in gex, regime and the gamma flip. "
                 "[default: yes]"),
    click.option("--config", "config_file", type=IN_FILE,
                 help="A TOML run config; command-line options override it."),
    click.option("--param", "params", multiple=True, metavar="K=V",
                 help="Strategy parameter, repeatable."),
    click.option("--from", "start", help="First bar (UTC date/time, inclusive)."),
    click.option("--to", "end", help="End (UTC date/time, exclusive)."),
    click.option("--freq", help="Resample bars to this timeframe, e.g. 4h."),
    click.option("--cash", type=float, help="Starting cash, USD.  [default: 100000]"),
    click.option("--commission-bps", type=float, help="Commission, bps of notional. [default: 5]"),
    click.option("--slippage-bps", type=float, help="Slippage, bps of price. [default: 2]"),
    click.option("--percent", type=float, help="Position size, % of equity. [default: 95]"),
    click.option("--max-staleness", help="Oldest usable chain snapshot. [default: 26h]"),
    click.option("--dealer", type=click.Choice(DEALERS),
                 help="Dealer positioning for GEX. [default: auto = explicit positions when "
                 "the chain has them, else long calls / short puts]"),
    click.option("--instrument", type=click.Choice(INSTRUMENTS),
                 help="What single-leg strategies trade. [default: spot]"),
    click.option("--borrow/--no-borrow", default=None,
                 help="Allow short spot sales, charged the spot borrow APR. [default: no]"),
    click.option("--term", "terms", multiple=True, metavar="KIND.FIELD=V",
                 help="Trading terms per instrument kind (spot, perp, future), repeatable: "
                 "taker_bps, maker_bps, leverage, mmr, liquidation_fee_bps, borrow_apr; "
                 "e.g. --term perp.leverage=5."),
    click.option("--front-min-dte", type=float,
                 help="Days to expiry below which the front series rolls. [default: 7]"),
    click.option("--label", callback=_label_option,
                 help="Name for the run (letters, digits, - _ .): in its id, `gammabt ls` "
                 "and every page."),
    click.option("--prepared", "prepared_dir",
                 type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="A folder written by `gammabt prepare` (replaces the input options)."),
]


def _build_config(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
                  options: dict[str, Any], prepared_dir: Path | None = None) -> Any:
    """A RunConfig from the command line (and the prepared market's inputs, if any)."""
    from gammabt.config import RunConfig

    options = dict(options)
    delays = options.pop("delays", ())
    data: dict[str, Any] = {}
    if config_file is not None:
        data = RunConfig.from_toml(config_file).to_dict()
    if prepared_dir is not None:
        from gammabt.prepared import read_manifest

        given = [k for k in INPUT_SPECS if options.get(k) not in (None, ())]
        if given:
            raise ConfigError(f"--{given[0]} given with --prepared", column=given[0],
                              expected="inputs from the prepared folder only",
                              fix=f"drop --{given[0]}, or drop --prepared")
        market = read_manifest(prepared_dir)["market"]
        data.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in market.items()
                     if v is not None})
    for key, value in options.items():
        if isinstance(value, tuple):
            if value:
                data[key] = tuple(str(v) for v in value)
        elif value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    merged = dict(data.get("params", {}))
    merged.update(dict(_parse_params(params)))
    data["params"] = merged
    merged_delays = dict(data.get("delays", {}))
    merged_delays.update(dict(_parse_params(delays, option="--delay")))
    data["delays"] = merged_delays
    merged_terms = {kind: dict(values) for kind, values in data.get("terms", {}).items()}
    for key, value in _parse_params(terms, option="--term"):
        kind, dot, field = key.partition(".")
        if not dot:
            raise ConfigError(f"--term {key}={value} has no instrument kind", column="terms",
                              expected="--term KIND.FIELD=VALUE", fix="e.g. --term perp.mmr=0.01")
        try:
            merged_terms.setdefault(kind, {})[field] = float(value)
        except ValueError:
            raise ConfigError(f"--term {key}={value!r} is not a number", column="terms",
                              expected="a number", fix="e.g. --term perp.taker_bps=4") from None
    data["terms"] = merged_terms
    return RunConfig.from_mapping(data, source="command line")


@cli.command("run")
@_run_options
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@_writes("results_dir", folders=("results_dir",))
def run_cmd(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
            results_dir: Path, prepared_dir: Path | None, **options: Any) -> None:
    """Run one backtest and write results/<run_id>/ (metrics, trades, tearsheet)."""
    from gammabt.results import write_run
    from gammabt.run import run as run_backtest

    config = _build_config(config_file, params, terms, options, prepared_dir)
    market = None
    if prepared_dir is not None:
        from gammabt.prepared import load_prepared

        market = load_prepared(prepared_dir)
    result = run_backtest(config, market)
    folder = write_run(result, results_dir)
    _report_run(result, folder)


@cli.command()
@_run_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the prepared market into.")
@_writes("out", folders=("out",))
def prepare(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
            out: Path, prepared_dir: Path | None, **options: Any) -> None:
    """Load the inputs, compute every analytic over the full history, write --out.

    Runs and optimizations given `--prepared OUT` then slice any window of it without
    reloading or recomputing anything.
    """
    from gammabt.prepared import save_prepared
    from gammabt.run import prepare as prepare_market

    if prepared_dir is not None:
        raise ConfigError("--prepared given to prepare", column="prepared",
                          expected="input files", fix="pass --bars/--market etc.")
    config = _build_config(config_file, params, terms, options)
    market = prepare_market(dataclasses.replace(config, start=None, end=None))
    folder = save_prepared(market, out)
    spot = market.legs[0][1]
    console.print(f"Prepared {len(spot)} bars, {len(market.legs)} instrument(s), key "
                  f"{market.key[:12]} -> {folder}")


@cli.command()
@_run_options
@click.option("--grid", "grid", multiple=True, metavar="K=A,B,C|K=LO:HI:STEP|K=LO:HI",
              help="A searched parameter, repeatable: values, an inclusive stepped range, "
                   "or (random/Optuna only) a continuous range.")
@click.option("--random", "n_random", type=click.IntRange(min=1),
              help="Draw N configurations from the --grid space (seeded).")
@click.option("--optuna", "n_optuna", type=click.IntRange(min=1),
              help="N Optuna TPE trials (seeded; the study resumes from study.db).")
@click.option("--objective", default="sharpe", show_default=True,
              help="Metric to maximize (any scalar in metrics.json).")
@click.option("--constraint", "constraints", multiple=True, metavar="METRIC<OP>VALUE",
              help='Feasibility limit, repeatable, e.g. "max_drawdown>-0.3".')
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (1 = in this process).")
@click.option("--dask-local", "dask_local", type=click.IntRange(min=1),
              help="Run on a Dask LocalCluster with N worker processes (loopback).")
@click.option("--scheduler", help="Run on an existing Dask scheduler, e.g. tcp://HOST:8786.")
@click.option("--walk-forward", "walk", metavar="train=180d,test=30d[,anchored]",
              help="Optimize per training window, run the winner on the next test window.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", callback=lambda ctx, param, value: _opt_name(value),
              help="Folder name: results/opt-NAME (default: a hash of the search).")
@click.option("--top", type=click.IntRange(min=1, max=50), default=3, show_default=True,
              help="Best trials re-run as run folders and compared (compare.html).")
@click.option("--engine", type=click.Choice(["auto", "backtrader", "lean"]), default="auto",
              show_default=True,
              help="Trials on the lean sweep engine when it reproduces the run (auto), "
                   "always Backtrader, or lean (refused for a sweep it cannot run). The "
                   "--top re-runs always use Backtrader and are checked against the trials.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@_writes("results_dir", folders=("results_dir",), keep_partial=True)
def optimize(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
             prepared_dir: Path | None, grid: tuple[str, ...], n_random: int | None,
             n_optuna: int | None, objective: str, constraints: tuple[str, ...],
             workers: int, dask_local: int | None, scheduler: str | None, walk: str | None,
             seed: int, name: str | None, top: int, engine: str, no_progress: bool,
             results_dir: Path, **options: Any) -> None:
    """Search strategy parameters on a prepared market; say whether the winner is real.

    Writes results/opt-<id>/: trials.parquet (incremental, resumable), summary.html,
    stats.json; re-runs the --top best configurations as normal run folders and compares
    them (compare.html).
    """
    from gammabt.optimize import run_optimization

    config = _build_config(config_file, params, terms, options, prepared_dir)
    if n_random and n_optuna:
        raise ConfigError("--random and --optuna together", column="search",
                          expected="one search kind", fix="drop one of them")
    if sum(x is not None for x in (dask_local, scheduler)) + (workers > 1) > 1:
        raise ConfigError("more than one executor", column="workers",
                          expected="--workers N, --dask-local N or --scheduler ADDR",
                          fix="pick one")
    run_optimization(config, grid=grid, n_random=n_random, n_optuna=n_optuna,
                     objective=objective, constraints=constraints, workers=workers,
                     dask_local=dask_local, scheduler=scheduler, walk=walk, seed=seed,
                     name=name, results_dir=results_dir, prepared_dir=prepared_dir,
                     console=console, progress=not no_progress, top=top, engine=engine)


@cli.command()
@click.option("--chain", required=True, type=IN_FILE)
@click.option("--spot", type=IN_FILE,
              help="Bars to complete a chain without an underlying column.")
@click.option("--dealer", default="auto", show_default=True,
              type=click.Choice(DEALERS))
@click.option("--out", type=OUT_FILE, callback=_table_out_option,
              help="Save the full summary (.parquet or .csv).")
@_writes("out")
def gex(chain: Path, spot: Path | None, dealer: str, out: Path | None) -> None:
    """Dealer gamma summary per snapshot: spot, GEX, flip, walls, regime."""
    from feeds.loaders import load_chain
    from gammabt.run import resolve_dealer
    from indicators.gamma import summarize

    table = load_chain(chain, spot=spot)
    dealer = resolve_dealer(dealer, table)
    summary = summarize(table, dealer=dealer)
    cols = [c for c in ("ts", "spot", "spot_source", "gex", "gamma_flip", "call_wall",
                        "put_wall", "regime", "n_contracts") if c in summary.columns]
    _frame_table(summary[cols], f"Dealer gamma ({dealer}), GEX in USD per 1% move")
    if out is not None:
        _write_table(summary, out)


@cli.command()
@click.option("--scenario", default="calm", show_default=True,
              help="Preset name or a path to a TOML preset.")
@click.option("--days", default=30, show_default=True, type=int)
@click.option("--freq", default="1h", show_default=True, help="Bar frequency (>= 1min).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (required unless --validate).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--validate", is_flag=True,
              help="Compare the scenario's stylized facts over --seeds seeds with real "
                   "hourly data instead of writing a market.")
@click.option("--seeds", default=20, show_default=True, type=int,
              help="Seeds 0..N-1 for --validate (30 days each, daily chains).")
@click.option("--real-bars", "real_bars", multiple=True, type=IN_FILE,
              help="Real hourly bars for --validate. [default: Bitstamp 2018-2022 and "
                   "Binance 2023-2026 from the real-data folder]")
@_writes("out", folders=("out",), inputs=("scenario",))
def simulate(scenario: str, days: int, freq: str, seed: int, out: Path | None,
             overwrite: bool, validate: bool, seeds: int, real_bars: tuple[Path, ...]
             ) -> None:
    """Simulate a market with dealer-hedging feedback and write it as Parquet."""
    from feeds.synthetic import simulate as run_simulation

    if validate:
        _validate_simulator(scenario, seeds, real_bars)
        return
    if out is None:
        raise ConfigError("--out is missing", column="out", expected="an output folder",
                          fix="pass --out sim/ (or --validate)")

    market = run_simulation(scenario, days=days, freq=freq, seed=seed)
    market.write(out, overwrite=overwrite)
    console.print(f"Scenario {market.scenario!r}, seed {market.seed}: "
                  f"{market.bars.num_rows} bars, {market.chain.num_rows} option rows, "
                  f"{market.liquidations.num_rows} liquidations -> {out}")


def _validate_simulator(scenario: str, seeds: int, real_bars: tuple[Path, ...]) -> None:
    from feeds.realdata import real_file
    from gammabt import sim_validate as sv

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}", column="seeds", expected="at least 1",
                          fix="e.g. --seeds 20")
    files = list(real_bars) or [p for p in map(real_file, sv.DEFAULT_REAL_BARS) if p]
    if not files:
        raise ConfigError("no real hourly bars to compare with", column="real-bars",
                          expected="--real-bars FILE or the real-data folder",
                          fix="pass --real-bars with an hourly OHLCV file")
    real = pd.concat([sv.real_facts(files), sv.real_regime_facts()], ignore_index=True)
    sim = sv.simulated_facts(scenario, seeds)
    _frame_table(real, "Real hourly data (per file and year)", max_rows=80)
    _frame_table(sv.compare(real, sim),
                 f"{scenario}: simulated ({seeds} seeds, 30 days) vs real range "
                 "(kurtosis is excess; ratio = forward 24 h vol short/long gamma)")


@cli.command()
@click.option("--futures", required=True, multiple=True,
              type=IN_FILE,
              help="Futures prices (ts, expiry, price) or OptionsDX chain files; repeatable.")
@click.option("--spot", required=True, type=IN_FILE,
              help="Spot bars; spot at t = close of the last bar closed at or before t.")
@click.option("--tenors", default="30,60,90,120", show_default=True,
              help="Constant-maturity tenors in days.")
@click.option("--out", type=OUT_FILE, callback=_table_out_option,
              help="Save the table (.parquet or .csv).")
@_writes("out")
def basis(futures: tuple[Path, ...], spot: Path, tenors: str, out: Path | None) -> None:
    """Annualized futures basis per snapshot and expiry, plus constant maturities."""
    from feeds.derivs import load_futures
    from feeds.loaders import load_bars
    from feeds.schema import check_overlap
    from indicators.basis import basis_table, constant_maturity

    try:
        days = tuple(float(t) for t in tenors.split(","))
    except ValueError:
        raise ConfigError(f"--tenors {tenors!r} is not a list of numbers", column="tenors",
                          expected="comma-separated days like 30,60,90",
                          fix="e.g. --tenors 30,90") from None
    paths = list(futures)
    quotes, spot_bars = load_futures(paths if len(paths) > 1 else paths[0]), load_bars(spot)
    check_overlap(quotes, "futures", str(paths[0]), **_bars_span(spot_bars))
    table = basis_table(quotes, spot_bars)
    curve = constant_maturity(table, tenors=days)
    merged = table.merge(curve, on="ts", how="left")
    cols = ["ts", "expiry", "dte_days", "future", "spot", "basis_ann"]
    _frame_table(merged[cols], "Annualized basis per listed expiry")
    _frame_table(curve, "Constant-maturity basis (linear interpolation, no extrapolation)")
    if out is not None:
        _write_table(merged, out)


@cli.command()
@click.option("--bars", required=True, type=IN_FILE)
@click.option("--oi", type=IN_FILE,
              help="Open-interest history (else volume is used).")
@click.option("--liquidations", type=IN_FILE,
              help="Observed liquidation events: they replace the estimate where present.")
@click.option("--out", type=OUT_FILE, callback=_table_out_option,
              help="Save the per-bar lines (.parquet or .csv).")
@click.option("--map-out", type=OUT_FILE, callback=_table_out_option,
              help="Save the full per-bar map (ts, price, long_usd, short_usd).")
@_writes("out", "map_out")
def liq(bars: Path, oi: Path | None, liquidations: Path | None, out: Path | None,
        map_out: Path | None) -> None:
    """Estimated liquidation levels per bar: nearest clusters below/above and the map."""
    from feeds.derivs import load_liquidations, load_open_interest
    from feeds.loaders import load_bars
    from feeds.schema import check_overlap
    from indicators.liquidation import estimate_liq_map

    bars_table = load_bars(bars)
    span = _bars_span(bars_table)
    oi_table = None if oi is None else load_open_interest(oi)
    liq_table = None if liquidations is None else load_liquidations(liquidations)
    for role, table, path in (("oi", oi_table, oi), ("liquidations", liq_table, liquidations)):
        if table is not None:  # an estimate from volume alone would hide the mismatch
            check_overlap(table, role, str(path), **span)
    liq_map = estimate_liq_map(bars_table, oi=oi_table, liquidations=liq_table)
    cols = ["ts", "liq_below", "liq_below_usd", "liq_above", "liq_above_usd", "liq_usd_within"]
    _frame_table(liq_map.lines[cols], "Liquidation clusters (USD at risk)")
    if out is not None:
        _write_table(liq_map.lines, out)
    if map_out is not None:
        _write_table(liq_map.to_frame(), map_out)


@cli.group()
def study() -> None:
    """Event studies on real or simulated data (regime, events, basis, liquidations)."""


def _print_frame(frame: pd.DataFrame, title: str) -> None:
    if frame is not None and not frame.empty:
        _frame_table(frame, title, max_rows=80)


@study.command("regime")
@click.option("--chain", "chains", required=True, multiple=True, type=IN_FILE,
              help="Option-chain file; repeatable.")
@click.option("--bars", "bars", required=True, multiple=True, type=IN_FILE,
              help="Price bars for the forward measures; repeatable (concatenated).")
@click.option("--spot", type=IN_FILE,
              help="Bars giving each snapshot's reference spot. [default: --bars]")
@click.option("--horizons", default="1h,4h,24h", show_default=True,
              help="Forward horizons, multiples of the bar length.")
@click.option("--by", type=click.Choice(["year", "month"]), help="Also split by period.")
@click.option("--delay", help="Publication delay of the chain. [default: per format]")
@click.option("--dealer", default="auto", show_default=True,
              type=click.Choice(DEALERS))
@click.option("--boot", "n_boot", default=2000, show_default=True, type=int,
              help="Bootstrap resamples (and permutations).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/studies/regime"), show_default=True)
@_writes("out", folders=("out",))
def study_regime(chains: tuple[Path, ...], bars: tuple[Path, ...], spot: Path | None,
                 horizons: str, by: str | None, delay: str | None, dealer: str,
                 n_boot: int, seed: int, out: Path) -> None:
    """Forward vol, returns and adverse moves after each snapshot, by gamma regime."""
    from gammabt.study import parse_horizons, regime_study, write_regime_study

    lag = None if delay is None else _delay(delay)
    if n_boot < 100:
        raise ConfigError(f"--boot {n_boot}", column="boot", expected="at least 100",
                          fix="e.g. --boot 2000")
    res = regime_study(chains, bars, spot=spot, horizons=parse_horizons(horizons), by=by,
                       dealer=dealer, delay=lag, n_boot=n_boot, seed=seed)
    for note in res.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    _print_frame(res.ratios, "Short / long gamma ratio of means (95% block bootstrap, "
                 "circular-shift permutation p)")
    _print_frame(res.by_regime[res.by_regime["measure"] == "vol_ann"],
                 "Forward realized vol (annualized) by regime")
    _print_frame(res.by_flip, "Forward realized vol by distance of spot to the flip")
    _print_frame(res.by_period, "Short / long vol ratio by period")
    page = write_regime_study(res, out)
    console.print(f"Wrote {out / 'study.parquet'} and {page}")


@study.command("events")
@click.option("--at", "at", required=True, multiple=True, help="Event date (UTC); repeatable.")
@click.option("--bars", required=True, multiple=True, type=IN_FILE,
              help="Price bars (spot or perp); repeatable, concatenated.")
@click.option("--perp", multiple=True, type=IN_FILE, help="Perpetual bars; repeatable.")
@click.option("--spot", multiple=True, type=IN_FILE,
              help="Spot bars for the premium when --bars is the perp; repeatable.")
@click.option("--funding", type=IN_FILE)
@click.option("--oi", type=IN_FILE)
@click.option("--chain", "chains", multiple=True, type=IN_FILE)
@click.option("--window", default="7D", show_default=True,
              help="Half-width of the event window.")
@click.option("--calm", default="21D", show_default=True,
              help="Length of the calm baseline before the window.")
@click.option("--out", type=OUT_FILE, callback=_table_out_option, help="Save the table (.parquet or .csv).")
@_writes("out")
def study_events(at: tuple[str, ...], bars: tuple[Path, ...], perp: tuple[Path, ...],
                 spot: tuple[Path, ...], funding: Path | None, oi: Path | None,
                 chains: tuple[Path, ...], window: str, calm: str, out: Path | None) -> None:
    """Each event window against the calm weeks before it."""
    from gammabt.study_events import events_study, parse_dates

    spans = [parse_duration(text, name=flag, example="7D")
             for flag, text in (("--window", window), ("--calm", calm))]
    table = events_study(parse_dates(at), bars, perp=perp, spot=spot, funding=funding, oi=oi,
                         chains=chains, window=spans[0], calm=spans[1])
    cols = [c for c in ("event", "segment", "n_bars", "ret", "vol_ann", "max_drawdown",
                        "worst_move", "bars_to_trough", "premium_mean_bps",
                        "premium_min_bps", "funding_apr_mean", "oi_change_pct",
                        "liq_below", "reached_liq_below", "regime", "gamma_flip")
            if c in table.columns]
    _frame_table(table[cols], "Event windows vs the calm weeks before them")
    for _, row in table.iterrows():
        if row["notes"]:
            console.print(f"[dim]{escape(row['event'])} {row['segment']}: "
                          f"{escape(row['notes'])}[/dim]")
    if out is not None:
        _write_table(table, out)


def _delay(text: str) -> pd.Timedelta:
    return parse_duration(text, name="--delay", minimum="nonnegative")


@study.command("basis")
@click.option("--futures", required=True, multiple=True, type=IN_FILE,
              help="Futures prices (ts, expiry, price; or OptionsDX chain files); repeatable.")
@click.option("--spot", required=True, multiple=True, type=IN_FILE,
              help="Spot bars; repeatable (concatenated).")
@click.option("--funding", type=IN_FILE, help="Funding rates: forward mean funding APR.")
@click.option("--oi", type=IN_FILE, help="Open interest: forward OI change and OI drops.")
@click.option("--horizons", default="4h,24h", show_default=True,
              help="Forward horizons, multiples of the bar length.")
@click.option("--z", default=3.0, show_default=True, type=float,
              help="Dislocation: one-step change of this many sigma.")
@click.option("--jump", default=0.03, show_default=True, type=float,
              help="Dislocation: annualized basis move (fraction) within --window.")
@click.option("--window", default=30, show_default=True, type=int,
              help="Observations in the look-back window.")
@click.option("--delay", default="0s", show_default=True,
              help="Publication delay of the futures quotes.")
@click.option("--boot", "n_boot", default=2000, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/studies/basis"), show_default=True)
@_writes("out", folders=("out",))
def study_basis(futures: tuple[Path, ...], spot: tuple[Path, ...], funding: Path | None,
                oi: Path | None, horizons: str, z: float, jump: float, window: int,
                delay: str, n_boot: int, seed: int, out: Path) -> None:
    """What followed basis dislocations, against matched non-event times."""
    from gammabt.study import parse_horizons
    from gammabt.study_flows import basis_study, write_basis_study

    res = basis_study(futures, spot, funding=funding, oi=oi,
                      horizons=parse_horizons(horizons), z=z, jump=jump, window=window,
                      delay=_delay(delay), n_boot=n_boot, seed=seed)
    for note in res.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    console.print(f"{res.meta['n_events']} dislocations, {res.meta['n_control']} control stamps")
    _print_frame(res.tables["ratios"], "After a dislocation / control, ratio of means (95% "
                 "bootstrap, permutation p)")
    by = res.tables["by_group"]
    _print_frame(by[by["measure"].isin(["ret", "vol_ann", "funding_apr", "oi_change"])],
                 "Forward measures by group")
    page = write_basis_study(res, out)
    console.print(f"Wrote {out / 'study.parquet'} and {page}")


@study.command("liquidations")
@click.option("--market", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A simulated market folder (perp bars, OI and true liquidations).")
@click.option("--bars", multiple=True, type=IN_FILE,
              help="Bars to estimate the map from (perp bars preferably); repeatable.")
@click.option("--liquidations", type=IN_FILE, help="Observed liquidations (the truth).")
@click.option("--oi", type=IN_FILE, help="Open interest (else the map uses volume).")
@click.option("--tolerances", default="0.0025,0.005,0.01,0.02", show_default=True,
              help="Price tolerances (fractions) for a predicted liquidation.")
@click.option("--horizons", default="1h,6h", show_default=True)
@click.option("--min-cluster-usd", default=0.0, show_default=True, type=float)
@click.option("--burn-in", default=24, show_default=True, type=int,
              help="Bars skipped while the map fills.")
@click.option("--boot", "n_boot", default=2000, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results/studies/liquidations"), show_default=True)
@_writes("out", folders=("out",))
def study_liquidations(market: Path | None, bars: tuple[Path, ...],
                       liquidations: Path | None, oi: Path | None, tolerances: str,
                       horizons: str, min_cluster_usd: float, burn_in: int, n_boot: int,
                       seed: int, out: Path) -> None:
    """How well estimated clusters predict liquidations, and price at the clusters."""
    from gammabt.study import _concat_bars, parse_horizons
    from gammabt.study_flows import liquidation_study, write_liquidation_study

    try:
        tols = tuple(float(t) for t in tolerances.split(","))
    except ValueError:
        raise ConfigError(f"--tolerances {tolerances!r} is not a list of numbers",
                          column="tolerances", expected="fractions like 0.0025,0.01",
                          fix="e.g. --tolerances 0.0025,0.005,0.01") from None
    if market is not None:
        from feeds.synthetic import load_market

        m = load_market(market)
        frame, truth, oi_table, source = m.perp.to_pandas(), m.liquidations, m.perp_oi, \
            str(market)
    else:
        if not bars or liquidations is None:
            raise ConfigError("no market given", column="market",
                              expected="--market DIR, or --bars FILE and --liquidations FILE",
                              fix="pass a simulated market folder or both files")
        from feeds.derivs import load_liquidations, load_open_interest

        frame, truth = _concat_bars(bars), load_liquidations(liquidations)
        oi_table = None if oi is None else load_open_interest(oi)
        source = ", ".join(str(b) for b in bars)
    res = liquidation_study(frame, truth, oi=oi_table, tolerances=tols,
                            horizons=parse_horizons(horizons), min_cluster_usd=min_cluster_usd, burn_in=burn_in,
                            n_boot=n_boot, seed=seed, source=source)
    for note in res.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    _print_frame(res.tables["hit_rates"], "Share of liquidated USD near a cluster predicted "
                 "before it, vs evenly spread and random levels")
    _print_frame(res.tables["through"], "Cluster touches that closed through the level")
    by = res.tables["by_group"]
    _print_frame(by[by["measure"] == "continuation"],
                 "Move in the touch's direction after it (log units) vs control bars")
    _print_frame(res.tables["ratios"], "Touch / control ratio of means")
    page = write_liquidation_study(res, out)
    console.print(f"Wrote {out / 'study.parquet'} and {page}")

@cli.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=OUT_FILE, default=None,
              help="HTML page to write. [default: <results>/compare/<first>-vs-<n>.html]")
@click.option("--csv", "csv_out", type=OUT_FILE, help="Also export the metrics table as CSV.")
@click.option("--parquet", "parquet_out", type=OUT_FILE,
              help="Also export the metrics table as Parquet.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@_writes("out", "csv_out", "parquet_out", "results_dir", folders=("results_dir",),
         inputs=("runs",))
def compare_cmd(runs: tuple[str, ...], out: Path | None, csv_out: Path | None,
                parquet_out: Path | None, results_dir: Path) -> None:
    """Compare 2 to 50 runs (ids, label globs or folders) on one offline HTML page."""
    from gammabt.compare import load_runs, write_compare

    loaded = load_runs(list(runs), results_dir)
    if out is None:
        out = results_dir / "compare" / f"{loaded[0].run_id}-vs-{len(loaded) - 1}.html"
    page = write_compare(loaded, out, csv=csv_out, parquet=parquet_out)
    console.print(f"Compared {len(loaded)} runs: {escape(str(page))}")


def _plot_out_option(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Refuse a chart output of an unsupported kind before any work, naming the flag."""
    from gammabt.runpage import check_plot_out

    try:
        return check_plot_out(value)
    except ConfigError as exc:
        flag = _flag(param)
        raise ConfigError(f"{flag} {value}: {exc.problem}", column=flag,
                          expected=exc.expected, fix=exc.fix) from None


@cli.group()
def plot() -> None:
    """Market charts without a run: GEX by strike, liquidation map, basis (HTML or PNG)."""


@plot.command("gex")
@click.option("--chain", required=True, type=IN_FILE)
@click.option("--spot", type=IN_FILE, help="Bars to complete a chain without an underlying.")
@click.option("--at", "at", multiple=True,
              help="UTC time(s) whose snapshot in force to draw; repeatable. "
                   "[default: the first and last snapshot]")
@click.option("--dealer", default="auto", show_default=True,
              type=click.Choice(DEALERS))
@click.option("--out", required=True, type=OUT_FILE, callback=_plot_out_option,
              help="Chart to write: .html (interactive, offline) or .png.")
@_writes("out")
def plot_gex(chain: Path, spot: Path | None, at: tuple[str, ...], dealer: str,
             out: Path) -> None:
    """GEX by strike (calls, puts, net) with spot, flip and walls marked."""
    from feeds.loaders import load_chain
    from gammabt.run import resolve_dealer
    from gammabt.runpage import gex_figure, write_figure_page
    from indicators.gamma import strike_gex, summarize

    table = load_chain(chain, spot=spot)
    dealer = resolve_dealer(dealer, table)
    strikes = strike_gex(table, dealer=dealer)
    summary = summarize(table, dealer=dealer)
    if strikes.empty:
        raise ConfigError("no option row enters the GEX sums", source=str(chain),
                          expected="rows with open interest, IV and time to expiry > 0",
                          fix="check the chain file")
    snaps = strikes["ts"]
    times = []
    for text in at:
        try:
            stamp = pd.Timestamp(text)
        except ValueError:
            raise ConfigError(f"--at {text!r} is not a time", column="at",
                              expected="an ISO UTC time like 2022-01-05T08:00",
                              fix="e.g. --at 2022-01-05") from None
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        if stamp < snaps.min():
            raise ConfigError(f"--at {text} is before the first snapshot "
                              f"({snaps.min():%Y-%m-%d %H:%M} UTC)", source=str(chain),
                              column="at", expected="a time at or after the first snapshot",
                              fix="choose a later time")
        times.append((f"at {stamp:%Y-%m-%d %H:%M}", stamp))
    if not times:
        times = [("first", snaps.min()), ("last", snaps.max())]
    fig = gex_figure(strikes, summary, times)
    page = write_figure_page(fig, out, title=f"Dealer GEX by strike: {chain.name}",
                             notes=[f"dealer positioning: {dealer}"],
                             height=260 * fig.layout.meta["rows"] + 120)
    console.print(f"Wrote {escape(str(page))}")


@plot.command("liq")
@click.option("--bars", required=True, type=IN_FILE)
@click.option("--oi", type=IN_FILE, help="Open-interest history (else volume is used).")
@click.option("--out", required=True, type=OUT_FILE, callback=_plot_out_option,
              help="Chart to write: .html (interactive, offline) or .png.")
@_writes("out")
def plot_liq(bars: Path, oi: Path | None, out: Path) -> None:
    """Estimated liquidation map (USD at risk by price and time) with the price path."""
    from feeds.derivs import load_open_interest
    from feeds.loaders import load_bars
    from gammabt.runpage import liq_figure, write_figure_page
    from indicators.liquidation import estimate_liq_map

    table = load_bars(bars).to_pandas()
    liq_map = estimate_liq_map(table, oi=None if oi is None else load_open_interest(oi))
    fig = liq_figure(liq_map, table)
    if fig is None:
        raise ConfigError("no liquidation level was estimated", source=str(bars),
                          column="volume", expected="bars with volume (or an --oi file)",
                          fix="pass --oi or bars that carry volume")
    page = write_figure_page(fig, out, title=f"Liquidation map: {bars.name}")
    console.print(f"Wrote {escape(str(page))}")


@plot.command("basis")
@click.option("--futures", required=True, type=IN_FILE,
              help="Futures prices (ts, expiry, price) or an OptionsDX chain file.")
@click.option("--spot", required=True, type=IN_FILE)
@click.option("--out", required=True, type=OUT_FILE, callback=_plot_out_option,
              help="Chart to write: .html (interactive, offline) or .png.")
@_writes("out")
def plot_basis(futures: Path, spot: Path, out: Path) -> None:
    """Constant-maturity basis term structure over time (30/60/90/120 days)."""
    from feeds.derivs import load_futures
    from feeds.loaders import load_bars
    from gammabt.runpage import basis_figure, write_figure_page
    from indicators.basis import basis_table, constant_maturity

    table = basis_table(load_futures(futures), load_bars(spot))
    curve = constant_maturity(table, tenors=(30, 60, 90, 120))
    fig = basis_figure(None, curve)
    if fig is None:
        raise ConfigError("no constant-maturity basis could be interpolated",
                          source=str(futures), expected="listed expiries bracketing 30-120 days",
                          fix="check the futures file covers several expiries")
    page = write_figure_page(fig, out, title=f"Basis term structure: {futures.name}")
    console.print(f"Wrote {escape(str(page))}")


LS_SORT = ("run_id", "sharpe", "sortino", "total_return", "cagr", "max_drawdown",
           "volatility_ann", "n_trades", "final_value", "start", "end")


@cli.command("ls")
@click.option("--strategy", help="Only runs of this strategy.")
@click.option("--label", "label_glob", help="Only runs whose label matches this glob, e.g. 'flip-*'.")
@click.option("--sort", "sort_by", default="run_id", show_default=True,
              type=click.Choice(LS_SORT),
              help="Sort key; metrics sort best first (volatility lowest first), run_id "
                   "newest first.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON lines.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
def ls_cmd(strategy: str | None, label_glob: str | None, sort_by: str, limit: int | None,
           as_json: bool, results_dir: Path) -> None:
    """List finished runs from results/index.parquet (rebuilt when missing or stale)."""
    import fnmatch
    import json

    from gammabt.index import load_index

    frame = load_index(results_dir)
    if strategy is not None:
        frame = frame[frame["strategy"] == strategy]
    if label_glob is not None:
        frame = frame[frame["label"].map(lambda v: fnmatch.fnmatchcase(v, label_glob))]
    ascending = sort_by in ("volatility_ann", "start", "end")
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last",
                              kind="stable")
    if limit is not None:
        frame = frame.head(limit)
    if as_json:
        for row in frame.to_dict("records"):
            row = {k: (None if isinstance(v, float) and v != v else
                       v.isoformat() if isinstance(v, pd.Timestamp) else v)
                   for k, v in row.items()}
            click.echo(json.dumps(row, sort_keys=True, default=str))
        return
    if frame.empty:
        console.print(f"no runs under {escape(str(results_dir))}")
        return
    table = Table(title=f"Runs in {escape(str(results_dir))}")
    for col in ("run_id", "label", "strategy", "params", "period", "sharpe", "total_return",
                "max_drawdown", "n_trades"):
        table.add_column(col, justify="left" if col in ("run_id", "label", "strategy",
                                                         "params", "period") else "right")
    for row in frame.itertuples():
        period = "" if pd.isna(row.start) else \
            f"{row.start:%Y-%m-%d} .. {row.end:%Y-%m-%d}"
        params = ", ".join(f"{k}={v}" for k, v in json.loads(row.params).items())
        table.add_row(escape(row.run_id), escape(row.label), escape(row.strategy),
                      escape(params), period,
                      _fmt(row.sharpe if row.sharpe == row.sharpe else None),
                      _fmt(row.total_return if row.total_return == row.total_return
                           else None),
                      _fmt(row.max_drawdown if row.max_drawdown == row.max_drawdown
                           else None),
                      _fmt(None if row.n_trades != row.n_trades else int(row.n_trades)))
    console.print(table)


@cli.command()
def strategies() -> None:
    """List the registered strategies, their parameters, defaults and ranges."""
    from strategies.params import declared_ranges
    from strategies.registry import STRATEGIES, strategy_params

    for name, cls in STRATEGIES.items():
        ranges = declared_ranges(cls)
        parts = []
        for key, default in strategy_params(cls).items():
            allowed = ranges.get(key)
            if allowed is None:
                parts.append(f"{key}={default!r}")
            elif all(isinstance(v, str) for v in allowed):
                parts.append(f"{key}={default!r} {{{', '.join(allowed)}}}")
            else:
                parts.append(f"{key}={default!r} [{allowed[0]:g}, {allowed[1]:g}]")
        console.print(f"[bold]{name}[/bold]: "
                      f"{escape(', '.join(parts)) or '(no parameters)'}")


def _os_error(exc: OSError) -> str:
    """A file-system failure as where, what and how to fix it."""
    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or str(exc)
    return (f"{where}: {what}; expected a readable input and a writable output location. "
            "Fix: check the path, free disk space and the folder's permissions")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one readable line on error, traceback only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="gammabt", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # one line, like every other user error
        where = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            where = f"{ctx.command_path}: "
        text = " ".join(exc.format_message().split())
        fix = f" Fix: see '{ctx.command_path} --help'" if ctx is not None else ""
        err_console.print(f"gammabt: error: {where}{text}{fix}", markup=False,
                          soft_wrap=True)
        return exc.exit_code
    except click.Abort:
        err_console.print("gammabt: aborted")
        return 130
    except GammabtError as exc:
        if debug:
            raise
        err_console.print(f"gammabt: error: {exc}", markup=False, soft_wrap=True)
        return 2
    except OSError as exc:
        if debug:
            raise
        err_console.print(f"gammabt: error: {_os_error(exc)}", markup=False, soft_wrap=True)
        return 2
    except Exception as exc:
        if debug:
            raise
        err_console.print(f"gammabt: internal error: {type(exc).__name__}: {exc} "
                          "(rerun with --debug for the traceback)", markup=False,
                          soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
