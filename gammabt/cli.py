"""The ``gammabt`` command line: demo, run, gex, simulate, basis, liq.

Errors a user can fix print one line and exit 2; anything else prints one line and
exits 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from indicators.errors import ConfigError, GammabtError

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
        console.print(f"[dim]{note}[/dim]")
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


def _write_table(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    elif out.suffix == ".parquet":
        frame.to_parquet(tmp, index=False)
    else:
        raise ConfigError(f"unsupported output suffix {out.suffix!r}", source=str(out),
                          expected=".parquet or .csv", fix="name the output file *.parquet")
    tmp.replace(out)
    console.print(f"Wrote {len(frame)} rows to {out}")


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
    """The options shared by ``run``, ``prepare`` and ``optimize`` (inputs, costs, window)."""
    for option in reversed(_RUN_OPTIONS):
        func = option(func)
    return func


_RUN_OPTIONS = [
    click.option("--strategy", default="gamma_flip", show_default=True,
                 help="Registered name (see `gammabt strategies`), path/to/file.py:Class "
                 "or package.module:Class."),
    click.option("--bars", type=IN_FILE,
                 help="OHLCV bars file (CSV, gz, Parquet; format auto-detected)."),
    click.option("--chain", multiple=True, type=IN_FILE,
                 help="Option chain file (OptionsDX, Deribit, Tardis; auto-detected); "
                 "repeat for several files."),
    click.option("--spot", type=IN_FILE,
                 help="Bars used to complete a chain without an underlying column."),
    click.option("--market", type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="A folder written by `gammabt simulate` (bars, chain and the rest)."),
    click.option("--funding", type=IN_FILE,
                 help="Perp funding rates (8-hourly or daily) -> funding_ann line."),
    click.option("--futures", type=IN_FILE,
                 help="Dated futures prices (ts, expiry, price; or an OptionsDX chain file)."),
    click.option("--perp", type=IN_FILE,
                 help="Perp bars: their volume drives the liquidation map when no OI is given."),
    click.option("--oi", type=IN_FILE, help="Perp open-interest history -> liquidation map."),
    click.option("--liquidations", type=IN_FILE,
                 help="Observed liquidation events (Binance forceOrder layout)."),
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
    click.option("--dealer", type=click.Choice(["auto", "long_calls_short_puts", "short_calls_long_puts", "explicit"]),
                 help="Dealer positioning for GEX. [default: auto = explicit positions when "
                 "the chain has them, else long calls / short puts]"),
    click.option("--instrument", type=click.Choice(["spot", "perp"]),
                 help="What single-leg strategies trade. [default: spot]"),
    click.option("--borrow/--no-borrow", default=None,
                 help="Allow short spot sales, charged the spot borrow APR. [default: no]"),
    click.option("--term", "terms", multiple=True, metavar="KIND.FIELD=V",
                 help="Trading terms per instrument kind (spot, perp, future), repeatable: "
                 "taker_bps, maker_bps, leverage, mmr, liquidation_fee_bps, borrow_apr; "
                 "e.g. --term perp.leverage=5."),
    click.option("--front-min-dte", type=float,
                 help="Days to expiry below which the front series rolls. [default: 7]"),
    click.option("--prepared", "prepared_dir",
                 type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="A folder written by `gammabt prepare` (replaces the input options)."),
]


def _build_config(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
                  options: dict[str, Any], prepared_dir: Path | None = None) -> Any:
    """A RunConfig from the command line (and the prepared market's inputs, if any)."""
    from gammabt.config import INPUTS, RunConfig

    data: dict[str, Any] = {}
    if config_file is not None:
        data = RunConfig.from_toml(config_file).to_dict()
    if prepared_dir is not None:
        from gammabt.prepared import read_manifest

        given = [k for k in INPUTS if options.get(k) not in (None, ())]
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
@click.option("--name", help="Folder name: results/opt-NAME (default: a hash of the search).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
def optimize(config_file: Path | None, params: tuple[str, ...], terms: tuple[str, ...],
             prepared_dir: Path | None, grid: tuple[str, ...], n_random: int | None,
             n_optuna: int | None, objective: str, constraints: tuple[str, ...],
             workers: int, dask_local: int | None, scheduler: str | None, walk: str | None,
             seed: int, name: str | None, no_progress: bool, results_dir: Path,
             **options: Any) -> None:
    """Search strategy parameters on a prepared market; say whether the winner is real.

    Writes results/opt-<id>/: trials.parquet (incremental, resumable), summary.html,
    stats.json, and re-runs the best configuration as a normal run folder.
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
                     console=console, progress=not no_progress)


@cli.command()
@click.option("--chain", required=True, type=IN_FILE)
@click.option("--spot", type=IN_FILE,
              help="Bars to complete a chain without an underlying column.")
@click.option("--dealer", default="auto", show_default=True,
              type=click.Choice(["auto", "long_calls_short_puts", "short_calls_long_puts",
                                 "explicit"]))
@click.option("--out", type=OUT_FILE,
              help="Save the full summary (.parquet or .csv).")
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
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def simulate(scenario: str, days: int, freq: str, seed: int, out: Path,
             overwrite: bool) -> None:
    """Simulate a market with dealer-hedging feedback and write it as Parquet."""
    from feeds.synthetic import simulate as run_simulation

    market = run_simulation(scenario, days=days, freq=freq, seed=seed)
    market.write(out, overwrite=overwrite)
    console.print(f"Scenario {market.scenario!r}, seed {market.seed}: "
                  f"{market.bars.num_rows} bars, {market.chain.num_rows} option rows, "
                  f"{market.liquidations.num_rows} liquidations -> {out}")


@cli.command()
@click.option("--futures", required=True, multiple=True,
              type=IN_FILE,
              help="Futures prices (ts, expiry, price) or OptionsDX chain files; repeatable.")
@click.option("--spot", required=True, type=IN_FILE,
              help="Spot bars; spot at t = close of the last bar closed at or before t.")
@click.option("--tenors", default="30,60,90,120", show_default=True,
              help="Constant-maturity tenors in days.")
@click.option("--out", type=OUT_FILE,
              help="Save the table (.parquet or .csv).")
def basis(futures: tuple[Path, ...], spot: Path, tenors: str, out: Path | None) -> None:
    """Annualized futures basis per snapshot and expiry, plus constant maturities."""
    from feeds.derivs import load_futures
    from feeds.loaders import load_bars
    from indicators.basis import basis_table, constant_maturity

    try:
        days = tuple(float(t) for t in tenors.split(","))
    except ValueError:
        raise ConfigError(f"--tenors {tenors!r} is not a list of numbers", column="tenors",
                          expected="comma-separated days like 30,60,90",
                          fix="e.g. --tenors 30,90") from None
    paths = list(futures)
    table = basis_table(load_futures(paths if len(paths) > 1 else paths[0]), load_bars(spot))
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
@click.option("--out", type=OUT_FILE,
              help="Save the per-bar lines (.parquet or .csv).")
@click.option("--map-out", type=OUT_FILE,
              help="Save the full per-bar map (ts, price, long_usd, short_usd).")
def liq(bars: Path, oi: Path | None, liquidations: Path | None, out: Path | None,
        map_out: Path | None) -> None:
    """Estimated liquidation levels per bar: nearest clusters below/above and the map."""
    from feeds.derivs import load_liquidations, load_open_interest
    from feeds.loaders import load_bars
    from indicators.liquidation import estimate_liq_map

    liq_map = estimate_liq_map(load_bars(bars),
                               oi=None if oi is None else load_open_interest(oi),
                               liquidations=None if liquidations is None
                               else load_liquidations(liquidations))
    cols = ["ts", "liq_below", "liq_below_usd", "liq_above", "liq_above_usd", "liq_usd_within"]
    _frame_table(liq_map.lines[cols], "Liquidation clusters (USD at risk)")
    if out is not None:
        _write_table(liq_map.lines, out)
    if map_out is not None:
        _write_table(liq_map.to_frame(), map_out)


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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one readable line on error, traceback only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="gammabt", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
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
        err_console.print(f"gammabt: error: {exc}", markup=False, soft_wrap=True)
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
