"""Run configuration: frozen, validated on creation, loadable from TOML, hashable.

The hash of the configuration plus the content hashes of its input files names the
run folder, so two runs of the same config on the same data share a hash.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from feeds.cache import file_sha256
from gammabt.broker import Terms, resolve_terms
from gammabt.index import check_label
from gammabt.inputs import DEALERS, INPUT_SPECS, INSTRUMENTS, Dealer, Instrument, parse_delay
from plumbing.errors import ConfigError
from plumbing.timeconv import parse_duration
from strategies.registry import check_params, get_strategy


def input_names() -> tuple[str, ...]:
    """Every registered input kind (config field, TOML key and CLI flag), in order."""
    return tuple(INPUT_SPECS)


@dataclass(frozen=True, kw_only=True, init=False)
class RunConfig:
    """Everything that determines a backtest's result.

    Inputs are file paths (or a simulated-market folder in ``market``), one field per
    kind of :data:`gammabt.inputs.INPUT_SPECS`, read as attributes (``config.chain`` is
    a tuple of paths, ``config.market`` a path or None) and stored in ``files``.
    ``delays`` overrides publication delays by kind (``chain_delay`` is an alias of
    ``delays = {"chain": ...}``). Costs are in basis points of traded notional.
    ``percent`` is the position size as a percent of portfolio value (fractional BTC).
    ``max_staleness`` is how old a chain snapshot (or basis/funding value) may be
    before its lines turn NaN.
    """

    strategy: str = "gamma_flip"
    params: tuple[tuple[str, Any], ...] = ()
    files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # input kind -> paths
    delays: tuple[tuple[str, str], ...] = ()  # input kind -> publication delay override
    barrier_flip: bool = True  # the barrier book counts in gex, regime and the gamma flip
    start: str | None = None
    end: str | None = None
    freq: str | None = None
    cash: float = 100_000.0
    commission_bps: float = 5.0
    slippage_bps: float = 2.0
    percent: float = 95.0
    max_staleness: str = "26h"
    zscore_window: int = 30
    dealer: Dealer = "auto"  # explicit positions when the chain has them, else the default
    instrument: Instrument = "spot"  # what single-leg strategies trade (the first feed)
    borrow: bool = False  # allow short spot sales (charged the spot borrow APR)
    terms: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()  # per-kind overrides
    front_min_dte: float = 7.0  # days: the front series rolls to the next expiry below it
    runonce: bool = True
    preload: bool = True
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __init__(self, **values: Any) -> None:
        """Keyword arguments: the fields above, plus one per input kind (``bars=``,
        ``chain=`` ...: a path or several) and ``chain_delay`` (alias of
        ``delays={"chain": ...}``)."""
        files = dict(values.pop("files", ()))
        for name in input_names():
            if name in values:
                files[name] = values.pop(name)
        delays = values.pop("delays", ())
        delays = dict(delays.items() if isinstance(delays, Mapping) else delays)
        alias = values.pop("chain_delay", None)
        if alias is not None:
            parse_delay("chain", alias, key="chain_delay")  # named as the user wrote it
            delays["chain"] = alias
        for f in dataclasses.fields(self):
            if f.name in ("files", "delays"):
                continue
            if f.name in values:
                value = values.pop(f.name)
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            object.__setattr__(self, f.name, value)
        if values:
            name = next(iter(values))
            hint = difflib.get_close_matches(name, _known_keys(), n=1)
            raise ConfigError(f"unknown setting {name!r}", column=name,
                              expected=f"keys among {_known_keys()}",
                              fix=f"did you mean {hint[0]!r}?" if hint else "remove it")
        object.__setattr__(self, "files", _freeze_files(files))
        object.__setattr__(self, "delays", _freeze_delays(delays))
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        """An input kind's paths: a tuple (``()`` when not given), or for a kind that
        takes one folder (``market``) the path or None."""
        spec = INPUT_SPECS.get(name)
        if spec is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        paths = dict(self.__dict__.get("files", ())).get(name, ())
        if spec.repeats:
            return paths
        return paths[0] if paths else None

    @property
    def chain_delay(self) -> str | None:
        """The chain's publication delay override (``delays['chain']``), if any."""
        return dict(self.delays).get("chain")

    def __post_init__(self) -> None:
        _check_types(self)
        check_label(self.label, source=None)  # from_mapping names the file
        cls = get_strategy(self.strategy)
        checked = check_params(cls, dict(self.params))
        object.__setattr__(self, "params", tuple(sorted(checked.items())))
        if self.spot and not self.chain:
            raise ConfigError("spot bars given without an option chain", column="spot",
                              expected="--spot only with --chain (it completes a chain "
                                       "that has no underlying price)",
                              fix="drop --spot, or add the --chain it belongs to")
        if not self.bars and self.market is None:
            raise ConfigError("no price bars given", column="bars",
                              expected="--bars FILE or a simulated market folder",
                              fix="pass --bars path/to/bars.csv (or gammabt simulate first)")
        for name, low, high, example in _RANGES:
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                upper = "" if math.isinf(high) else f", at most {high:g}"
                raise ConfigError(f"{name}={value} out of range", column=name,
                                  expected=f"a finite number {'>' if low else '>='} 0{upper}",
                                  fix=f"set {name} to e.g. {example:g} "
                                      f"(--{name.replace('_', '-')} or {name} = in TOML)")
        object.__setattr__(self, "terms", _freeze_terms(self.terms))
        if self.instrument not in INSTRUMENTS:
            raise ConfigError(f"unknown instrument {self.instrument!r}", column="instrument",
                              expected=f"one of {list(INSTRUMENTS)}",
                              fix="trade spot (default) or perp")
        if not (math.isfinite(self.front_min_dte) and 0 <= self.front_min_dte < 3650):
            raise ConfigError(f"front_min_dte={self.front_min_dte} out of range",
                              column="front_min_dte", expected="days in [0, 3650)",
                              fix="set it to e.g. 7 (--front-min-dte 7 or front_min_dte = 7 "
                                  "in TOML)")
        if not (2 <= self.zscore_window <= 100_000):
            raise ConfigError(f"zscore_window={self.zscore_window} out of range",
                              column="zscore_window",
                              expected="a whole number of observations in [2, 100000]",
                              fix="set zscore_window = 30 (the default) in the TOML config")
        # spot longs are paid from cash: only a derivative can be levered
        limit = 100.0 if self.instrument == "spot" else \
            100.0 * self.resolved_terms()[self.instrument].leverage
        if self.percent > limit:
            raise ConfigError(
                f"percent={self.percent:g} needs {self.percent / 100:g}x leverage on "
                f"{self.instrument}", column="percent",
                expected=f"percent <= {limit:g} for {self.instrument}",
                fix="lower --percent, or trade the perp (--instrument perp) with "
                    "--term perp.leverage=N" if self.instrument == "spot"
                else f"lower --percent or raise --term {self.instrument}.leverage")
        if self.dealer not in DEALERS:
            raise ConfigError(f"unknown dealer convention {self.dealer!r}", column="dealer",
                              expected=f"one of {list(DEALERS)}",
                              fix="use auto (the default)")
        for name in ("max_staleness", "freq"):
            value = getattr(self, name)
            if value is not None:
                parse_duration(value, name=name, example="26h" if name == "max_staleness" else "1h",
                               minimum="positive" if name == "freq" else "nonnegative")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    stamp = pd.Timestamp(value)
                except ValueError:
                    stamp = pd.NaT
                if pd.isna(stamp):
                    raise ConfigError(f"{name}={value!r} is not a date", column=name,
                                      expected="an ISO date such as 2022-01-01",
                                      fix=f"pass --{'from' if name == 'start' else 'to'} "
                                          f"YYYY-MM-DD or {name} = YYYY-MM-DD in TOML")
                if stamp.tzinfo is None:
                    stamp = stamp.tz_localize("UTC")
                object.__setattr__(self, name, stamp.tz_convert("UTC").isoformat())

    def resolved_terms(self) -> dict[str, Terms]:
        """Trading terms per instrument kind (defaults, the run's taker fee, overrides)."""
        return resolve_terms({kind: dict(items) for kind, items in self.terms},
                             taker_bps=self.commission_bps)

    # -- identity -------------------------------------------------------------------
    @property
    def strategy_params(self) -> dict[str, Any]:
        return dict(self.params)

    def inputs(self) -> dict[str, str]:
        """The input paths that are set, by role (``chain``, ``chain.1`` ... for several)."""
        out: dict[str, str] = {}
        for key, paths in self.files:
            out.update({key if i == 0 else f"{key}.{i}": v for i, v in enumerate(paths)})
        return out

    def delay_overrides(self) -> dict[str, str]:
        """The publication delays set by the user, by input kind."""
        return dict(self.delays)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/TOML-like): every input kind as its own key (a list of paths,
        or the folder for ``market``) and ``delays`` as a table."""
        data: dict[str, Any] = {"strategy": self.strategy}
        data["params"] = dict(self.params)
        for name in input_names():
            value = getattr(self, name)
            data[name] = list(value) if isinstance(value, tuple) else value
        for f in dataclasses.fields(self):
            if f.name not in ("strategy", "params", "files", "extra"):
                data[f.name] = getattr(self, f.name)
        data["delays"] = dict(self.delays)
        data["terms"] = {kind: dict(items) for kind, items in self.terms}
        return data

    def digest(self, input_hashes: dict[str, str] | None = None) -> str:
        """sha256 over the config (paths excluded) and the inputs' content hashes."""
        data = self.to_dict()
        for key in input_names():
            data.pop(key)
        data.pop("label")
        payload = json.dumps({"config": data, "inputs": input_hashes or {}},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    # -- loading --------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "<config>") -> RunConfig:
        names = set(_known_keys())
        unknown = sorted(set(data) - names)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], names, n=1)
            raise ConfigError(f"unknown key {unknown[0]!r}", source=source,
                              expected=f"keys among {sorted(names)}",
                              fix=f"did you mean {hint[0]!r}?" if hint else "remove it")
        data = dict(data)
        for key in ("start", "end"):  # TOML date literals are dates, not strings
            if isinstance(data.get(key), datetime.date | datetime.time):
                data[key] = data[key].isoformat()
        if "params" in data:
            params = data["params"]
            if not isinstance(params, dict):
                raise ConfigError("params must be a table", source=source, column="params",
                                  expected="[params] with key = value lines",
                                  fix="write strategy parameters under a [params] table")
            data["params"] = tuple(sorted(params.items()))
        if "terms" in data and not isinstance(data["terms"], dict):
            raise ConfigError("terms must be a table of tables", source=source,
                              column="terms", expected="[terms.perp] with key = value lines",
                              fix="write e.g. [terms.perp] taker_bps = 4")
        for key in input_names():
            if isinstance(data.get(key), list | tuple):
                data[key] = tuple(data[key])
        if "delays" in data and not isinstance(data["delays"], dict):
            raise ConfigError("delays must be a table", source=source, column="delays",
                              expected="[delays] with kind = \"duration\" lines",
                              fix='write e.g. [delays] chain = "1h"')
        try:
            return cls(**data)
        except ConfigError as exc:  # say where the value came from (the TOML file)
            if exc.source is not None:
                raise
            raise ConfigError(exc.problem, source=source, row=exc.row, column=exc.column,
                              expected=exc.expected, fix=exc.fix) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config file not found", source=str(path),
                              expected="an existing TOML file", fix="check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML ({exc})", source=str(path),
                              expected="valid TOML", fix="repair the file") from None
        base = path.parent
        for key in input_names():
            if key not in data:
                continue
            _check_path_value(key, data[key], str(path))
            if isinstance(data[key], list):
                data[key] = [str((base / p).resolve()) for p in data[key]]
            elif not Path(data[key]).is_absolute():
                data[key] = str((base / data[key]).resolve())
        return cls.from_mapping(data, source=str(path))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


# name, low, high, example: the money and size settings, all finite
_RANGES = (("cash", 1e-9, math.inf, 100_000.0), ("commission_bps", 0.0, 1000.0, 5.0),
           ("slippage_bps", 0.0, 1000.0, 2.0), ("percent", 1e-9, 1000.0, 95.0))

_NUMBER = (int, float)
_SIMPLE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "float": (_NUMBER, "a number"),
    "int": ((int,), "a whole number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "str | None": ((str, type(None)), "a string"),
}


def _known_keys() -> list[str]:
    """Keys a config mapping (TOML, command line) may hold."""
    fields = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("files", "extra")]
    return sorted({*fields, *input_names(), "chain_delay"})


def _freeze_files(files: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Kind -> one path or several, as hashable tuples in registry order (unset dropped).

    Raises
    ------
    ConfigError
        A kind that takes one folder (``market``) given several.
    """
    unknown = sorted(set(files) - set(INPUT_SPECS))
    if unknown:
        raise ConfigError(f"unknown input kind {unknown[0]!r}", column="files",
                          expected=f"kinds among {list(INPUT_SPECS)}",
                          fix="register the kind (gammabt.inputs.register) or drop it")
    out = []
    for name, spec in INPUT_SPECS.items():
        value = files.get(name)
        if isinstance(value, str | PathLike):
            value = (value,)
        elif value is None:
            value = ()
        elif not isinstance(value, list | tuple):
            raise ConfigError(f"{name} = {value!r} is not a path", column=name,
                              expected="a path or a list of paths",
                              fix=f'write e.g. {name} = "path/to/file"')
        paths = tuple(str(v) for v in value)
        if len(paths) > 1 and not spec.repeats:
            raise ConfigError(f"{name} given {len(paths)} times", column=name,
                              expected=f"one {name} {'folder' if spec.folder else 'file'}",
                              fix=f"pass --{name} once")
        if paths:
            out.append((name, paths))
    return tuple(out)


def _freeze_delays(delays: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Kind -> duration text, validated (ConfigError naming the kind), sorted."""
    out = []
    for kind, value in delays.items():
        parse_delay(str(kind), value)
        out.append((str(kind), str(value)))
    return tuple(sorted(out))


def _check_types(config: RunConfig) -> None:
    """Refuse values of the wrong type (e.g. ``cash = "lots"`` in TOML) by the user's key,
    before any comparison could fail with a bare TypeError."""
    for f in dataclasses.fields(config):
        allowed = _SIMPLE_TYPES.get(str(f.type))
        if allowed is None:
            continue
        value = getattr(config, f.name)
        types, what = allowed
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise ConfigError(f"{f.name} = {value!r} is not {what}", column=f.name,
                              expected=what, fix=f"set {f.name} to {what}, e.g. "
                              f"{f.default!r}" if f.default is not None else
                              f"set {f.name} to {what}")


def _check_path_value(key: str, value: Any, source: str) -> None:
    """An input in TOML is a path string (a list of them for kinds that repeat)."""
    several = INPUT_SPECS[key].repeats
    items = value if several and isinstance(value, list) else [value]
    if isinstance(value, list) and not several or not all(isinstance(v, str) for v in items):
        what = "a path string or a list of them" if several else "a path string"
        raise ConfigError(f"{key} = {value!r} is not {what}", source=source, column=key,
                          expected=what, fix=f'write {key} = "path/to/file" (relative to '
                                             "the TOML file)")


def _freeze_terms(terms: Any) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """``{"perp": {"taker_bps": 4}}`` (TOML ``[terms.perp]``) -> sorted, hashable tuples."""
    if isinstance(terms, dict):
        items = terms.items()
    else:
        items = terms
    out = []
    for kind, values in items:
        if not isinstance(values, dict | list | tuple):
            raise ConfigError(f"terms.{kind} = {values!r} is not a table", column=f"terms.{kind}",
                              expected=f"[terms.{kind}] with key = number lines",
                              fix=f"write e.g. [terms.{kind}] taker_bps = 4, or --term "
                                  f"{kind}.taker_bps=4")
        values = dict(values) if not isinstance(values, dict) else values
        for field_name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{kind}.{field_name} = {value!r} is not a number",
                                  column=f"{kind}.{field_name}", expected="a number",
                                  fix=f"write e.g. [terms.{kind}] {field_name} = 4")
        out.append((str(kind), tuple(sorted(values.items()))))
    frozen = tuple(sorted(out))
    for kind, values in frozen:  # validates, naming the user's key (perp.leverage)
        try:
            resolve_terms({kind: dict(values)})
        except ConfigError as exc:
            column = exc.column if exc.column in (None, "terms") else f"{kind}.{exc.column}"
            fix = exc.fix if column in (None, "terms") else \
                f"{exc.fix} (--term {column}=VALUE or [terms.{kind}] {exc.column} = VALUE)"
            raise ConfigError(exc.problem, source=exc.source, row=exc.row, column=column,
                              expected=exc.expected, fix=fix) from None
    return frozen


def input_sha256(path: str | Path) -> str:
    """Content hash of an input: a file's bytes, or for a folder (a simulated market)
    the relative name and content hash of every file in it, in name order."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path)}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()
