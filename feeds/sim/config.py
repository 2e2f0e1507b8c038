"""Scenario presets: TOML files in ``feeds/scenarios/`` merged over ``_defaults.toml``.

Resolution order (later wins): ``_defaults.toml`` -> the preset named in ``base`` (if
any, recursively) -> the scenario file -> ``overrides`` passed to ``simulate``.
Every key must exist in ``_defaults.toml`` (item tables such as ``[[shocks]]`` are
checked against :data:`ITEM_DEFAULTS`); a wrong key or a value of the wrong type raises
:class:`~plumbing.errors.ConfigError` naming the file and key, with a "did you mean"
hint.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from pathlib import Path
from typing import Any

from indicators.barrier import BARRIER_TYPES
from plumbing.errors import ConfigError

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
DEFAULTS_FILE = SCENARIO_DIR / "_defaults.toml"

#: Keys (with defaults) of each array-of-tables item; ``None`` marks a required key.
ITEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "shocks": {
        "day": None, "hours": 4.0, "basis_unwind_frac": 0.0, "perp_deleverage_frac": 0.0,
        "other_oi_frac": 0.0, "depth_hit": 0.0, "spot_sell_btc": 0.0, "iv_jump": 0.0,
        "put_buy_btc": 0.0, "put_moneyness": 0.9,
    },
    "options.clusters": {
        "moneyness": None, "right": "P", "oi_btc": 10000.0, "dealer_sign": -1,
        "min_days": 1.0, "max_days": 40.0, "strikes": 1, "day": 0.0,
    },
    "perps.stacks": {
        "side": "long", "entry_lo": 1.0, "entry_hi": 1.06, "size_btc": 10000.0,
        "leverage": [], "leverage_weights": [], "day": 0.0,
    },
    "etf.shocks": {"day": None, "days": 1.0, "usd_day": 0.0},
    "options.barriers": {
        "type": "down_in_put", "moneyness": None, "barrier_moneyness": None,
        "notional_btc": 1000.0, "dealer_side": 1, "days": 30.0, "day": 0.0,
    },
}

#: Value constraints checked after merging: key -> (predicate, description).
_CHOICES: dict[str, tuple[str, ...]] = {"right": ("C", "P"), "side": ("long", "short"),
                                        "type": BARRIER_TYPES}


def list_scenarios() -> list[str]:
    """Names of the presets shipped in ``feeds/scenarios/`` (sorted).

    Returns
    -------
    list of str
        File stems of ``feeds/scenarios/*.toml``, excluding names starting with ``_``.
    """
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml") if not p.stem.startswith("_"))


def scenario_path(scenario: str | Path) -> Path:
    """Resolve a preset name or a path to a TOML file.

    Raises
    ------
    ConfigError
        When neither a preset of that name nor a file at that path exists.
    """
    text = str(scenario)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise ConfigError(f"scenario file {text!r} not found", source=text,
                          expected="a path to an existing TOML preset",
                          fix="check the path, or pass a preset name: "
                              + ", ".join(list_scenarios()))
    path = SCENARIO_DIR / f"{text}.toml"
    if path.is_file() and not text.startswith("_"):
        return path
    names = list_scenarios()
    hint = difflib.get_close_matches(text, names, n=1)
    raise ConfigError(f"unknown scenario {text!r}", source="scenario",
                      expected="one of " + ", ".join(names) + " or a path to a TOML file",
                      fix=f"did you mean {hint[0]!r}?" if hint else
                      "pick a listed preset or pass a path to your own TOML file")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=str(path),
                          expected="a TOML file like feeds/scenarios/calm.toml",
                          fix="repair the syntax at the position given") from exc


def defaults() -> dict[str, Any]:
    """A fresh copy of the default parameters (``_defaults.toml``)."""
    return _read_toml(DEFAULTS_FILE)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _check_value(key: str, default: Any, value: Any, source: str) -> Any:
    """Return ``value`` coerced to the type of ``default`` or raise ConfigError."""
    def bad() -> ConfigError:
        return ConfigError(f"key '{key}' has value {value!r}", source=source, column=key,
                           expected=_type_name(default),
                           fix=f"write e.g. {key.rsplit('.', 1)[-1]} = {default!r}"
                           .replace("True", "true").replace("False", "false"))

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise bad()
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad()
        if all(isinstance(d, int | float) for d in default):  # numeric lists (leverage)
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
                raise bad()
            return [float(v) for v in value]
        return value
    return value


def _unknown(key: str, valid: list[str], source: str, where: str) -> ConfigError:
    short = key.rsplit(".", 1)[-1]
    hint = difflib.get_close_matches(short, valid, n=1, cutoff=0.6)
    return ConfigError(f"unknown key '{key}'", source=source, column=key,
                       expected=f"one of the keys of {where}: " + ", ".join(sorted(valid)),
                       fix=f"did you mean '{hint[0]}'?" if hint else
                       "see feeds/scenarios/_defaults.toml for every key")


def _check_item(path: str, item: Any, index: int, source: str) -> dict[str, Any]:
    spec = ITEM_DEFAULTS[path]
    where = f"[[{path}]] item {index}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is {item!r}", source=source, column=path,
                          expected="a table of keys", fix=f"write it as a [[{path}]] table")
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key not in spec:
            raise _unknown(f"{path}[{index}].{key}", list(spec), source, f"[[{path}]]")
        default = spec[key]
        if default is None:
            default = 0.0
        out[key] = _check_value(f"{path}[{index}].{key}", default, value, source)
        if key in _CHOICES and out[key] not in _CHOICES[key]:
            raise ConfigError(f"{where}: {key} = {value!r}", source=source, column=key,
                              expected=" or ".join(repr(c) for c in _CHOICES[key]),
                              fix=f"use one of {_CHOICES[key]}")
    for key, default in spec.items():
        if key not in out:
            if default is None:
                raise ConfigError(f"{where} lacks required key '{key}'", source=source,
                                  column=key, expected=f"'{key}' in every [[{path}]] table",
                                  fix=f"add {key} = ... to the table")
            out[key] = copy.deepcopy(default)
    return out


def _merge(base: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any], source: str,
           prefix: str = "") -> None:
    """Merge ``patch`` into ``base`` in place, validating every key against ``schema``."""
    for key, value in patch.items():
        full = f"{prefix}{key}"
        if key not in schema:
            where = f"[{prefix[:-1]}]" if prefix else "the top level"
            raise _unknown(full, list(schema), source, where)
        default = schema[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"'{full}' must be a table", source=source, column=full,
                                  expected=f"[{full}] with keys " + ", ".join(default),
                                  fix=f"write [{full}] followed by its keys")
            _merge(base[key], value, default, source, prefix=f"{full}.")
        elif full in ITEM_DEFAULTS:
            if not isinstance(value, list):
                raise ConfigError(f"'{full}' must be a list of tables", source=source,
                                  column=full, expected=f"[[{full}]] tables",
                                  fix=f"write each item as a [[{full}]] table")
            base[key] = [_check_item(full, item, i, source) for i, item in enumerate(value)]
        else:
            base[key] = _check_value(full, default, value, source)


def _dotted_to_nested(overrides: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}' conflicts with another override",
                                  source="overrides", column=str(key),
                                  expected="each key given once",
                                  fix="use either dotted keys or nested tables, not both")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return nested


def resolve(scenario: str | Path, overrides: dict[str, Any] | None = None,
            _seen: tuple[Path, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Load a scenario (name or path) with its bases and overrides.

    Parameters
    ----------
    scenario
        Preset name (see :func:`list_scenarios`) or a path to a TOML file.
    overrides
        Optional patch, as nested tables (``{"market": {"depth_btc": 1e5}}``) or dotted
        keys (``{"market.depth_btc": 1e5}``).

    Returns
    -------
    (name, params)
        The scenario name (file stem) and the fully resolved parameter dict.
    """
    path = scenario_path(scenario)
    if path in _seen:
        raise ConfigError("scenario 'base' chain loops back", source=str(path), column="base",
                          expected="a chain of bases without cycles",
                          fix="remove the circular 'base' reference")
    schema = defaults()
    raw = _read_toml(path)
    base_name = raw.get("base", "")
    if base_name:
        if not isinstance(base_name, str):
            raise ConfigError(f"base = {base_name!r}", source=str(path), column="base",
                              expected="a preset name or a path", fix='write base = "calm"')
        base_ref: str | Path = base_name
        if base_name.endswith(".toml") and not Path(base_name).is_absolute():
            base_ref = path.parent / base_name
        _, params = resolve(base_ref, None, (*_seen, path))
    else:
        params = copy.deepcopy(schema)
    _merge(params, raw, schema, str(path))
    params["base"] = base_name
    if overrides:
        _merge(params, _dotted_to_nested(dict(overrides)), schema, "overrides")
    _validate(params, str(path))
    return path.stem, params


def _validate(p: dict[str, Any], source: str) -> None:
    """Cross-key checks that a type check cannot express."""
    def need(ok: bool, key: str, expected: str, fix: str) -> None:
        if not ok:
            raise ConfigError(f"invalid value for '{key}'", source=source, column=key,
                              expected=expected, fix=fix)

    for section, table in p.items():
        if isinstance(table, dict):
            for key, value in table.items():
                if "halflife" in key or key.endswith("_days") and key != "min_days":
                    need(value > 0, f"{section}.{key}", "> 0", "use a positive duration")
    need(-1 < p["etf"]["ar1"] < 1, "etf.ar1", "in (-1, 1)", "e.g. 0.4")
    need(p["sim"]["spot0"] > 0, "sim.spot0", "> 0", "use a positive price")
    need(p["sim"]["step_minutes"] > 0, "sim.step_minutes", "> 0", "e.g. 10")
    need(p["sim"]["book_interval_minutes"] > 0, "sim.book_interval_minutes", "> 0", "e.g. 60")
    need(p["market"]["depth_btc"] > 0, "market.depth_btc", "> 0", "e.g. 150000")
    need(0 < p["market"]["mm_min_depth"] <= 1, "market.mm_min_depth", "in (0, 1]", "e.g. 0.05")
    td = p["market"]["tail_df"]
    need(td == 0 or td > 2, "market.tail_df", "0 (Gaussian) or > 2", "e.g. 4")
    need(p["dealers"]["max_amplification"] >= 1, "dealers.max_amplification", ">= 1", "e.g. 4")
    for key in ("call_sign", "put_sign"):
        need(p["dealers"][key] in (-1, 1), f"dealers.{key}", "+1 or -1", "use 1 or -1")
    o = p["options"]
    need(o["n_options"] >= 20, "options.n_options", ">= 20", "e.g. 800")
    need(0 <= o["call_share"] <= 1, "options.call_share", "in [0, 1]", "e.g. 0.5")
    need(o["daily"] + o["weekly"] + o["monthly"] + o["quarterly"] >= 1, "options.daily",
         "at least one listed expiry", "set daily/weekly/monthly/quarterly")
    pp = p["perps"]
    need(len(pp["leverage"]) == len(pp["leverage_weights"]) > 0, "perps.leverage",
         "leverage and leverage_weights of the same, non-zero length", "align the two lists")
    need(all(x >= 1 for x in pp["leverage"]), "perps.leverage", "leverages >= 1", "e.g. 10")
    need(0 <= pp["mmr"] < 0.5, "perps.mmr", "in [0, 0.5)", "e.g. 0.005")
    need(p["basis"]["book_btc"] >= 0, "basis.book_btc", ">= 0", "e.g. 40000")
    need(p["basis"]["monthly"] + p["basis"]["quarterly"] >= 1, "basis.monthly",
         "at least one listed future", "set basis.monthly or basis.quarterly")
    for i, st in enumerate(pp["stacks"]):
        need(len(st["leverage"]) == len(st["leverage_weights"]), f"perps.stacks[{i}].leverage",
             "leverage and leverage_weights of the same length", "align the two lists")
        need(0 < st["entry_lo"] <= st["entry_hi"], f"perps.stacks[{i}].entry_lo",
             "0 < entry_lo <= entry_hi", "swap or fix the bounds")
        need(st["day"] >= 0, f"perps.stacks[{i}].day", ">= 0",
             "use 0 (open at the start) or the day the positions open")
    for i, it in enumerate(o["barriers"]):
        where = f"options.barriers[{i}]"
        need(it["dealer_side"] in (-1, 1), f"{where}.dealer_side", "+1 or -1",
             "+1: dealers long the option, -1: short")
        need(it["moneyness"] > 0 and it["barrier_moneyness"] > 0, f"{where}.moneyness",
             "strike and barrier as positive fractions of spot", "e.g. 0.95 and 0.85")
        need(it["days"] > 0 and it["notional_btc"] > 0 and it["day"] >= 0, f"{where}.days",
             "days > 0, notional_btc > 0, day >= 0", "fix the item")
    for i, cl in enumerate(o["clusters"]):
        need(cl["dealer_sign"] in (-1, 1), f"options.clusters[{i}].dealer_sign", "+1 or -1",
             "use 1 (dealers long) or -1 (dealers short)")
        need(cl["moneyness"] > 0, f"options.clusters[{i}].moneyness", "> 0", "e.g. 0.95")
    for i, sh in enumerate(p["shocks"]):
        need(sh["hours"] > 0, f"shocks[{i}].hours", "> 0", "e.g. 4")
        for key in ("basis_unwind_frac", "perp_deleverage_frac", "other_oi_frac", "depth_hit"):
            need(0 <= sh[key] <= 1, f"shocks[{i}].{key}", "in [0, 1]", "a fraction")
