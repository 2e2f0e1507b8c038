"""Strategy parameter ranges: declared as class data, enforced on every value."""

from __future__ import annotations

import math

import pytest

from gammabt.config import RunConfig
from indicators.errors import ConfigError
from strategies.buy_and_hold import BuyAndHold
from strategies.gamma_flip import GammaFlip
from strategies.params import declared_ranges, range_problems
from strategies.registry import (
    STRATEGIES,
    check_params,
    strategy_params,
)

# -- declared ranges ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_strategy_declares_sound_ranges(name):
    assert range_problems(STRATEGIES[name]) == []


def test_registry_walk_catches_a_numeric_param_without_range():
    class Forgetful(GammaFlip):
        params = (("new_window", 5),)

    assert any("'new_window'" in p and "declares no range" in p
               for p in range_problems(Forgetful))
    assert range_problems(Forgetful, require_all=False) == []


@pytest.mark.parametrize("ranges,fragment", [
    ({"lookbak": (1, 10)}, "'lookbak', which is not a parameter"),
    ({"lookback": (10, 1)}, "low <= high"),
    ({"lookback": (1, float("nan"))}, "low <= high"),
    ({"lookback": (20, 30)}, "default 12 lies outside"),
    ({"allow_short": (0, 1)}, "bool parameter takes no range"),
])
def test_malformed_ranges_are_reported(ranges, fragment):
    class Broken(GammaFlip):
        param_ranges = ranges

    assert any(fragment in p for p in range_problems(Broken))


def test_ranges_are_inherited_and_overridable():
    class Narrow(GammaFlip):
        param_ranges = {"lookback": (2, 50)}

    ranges = declared_ranges(Narrow)
    assert ranges["lookback"] == (2, 50)
    assert ranges["max_hold"] == GammaFlip.param_ranges["max_hold"]


@pytest.mark.parametrize("key,value,fragment", [
    ("lookback", -5, "lookback=-5 is out of range; expected an integer in [1, 10000]"),
    ("lookback", 0, "lookback=0 is out of range"),
    ("lookback", 2.5, "lookback=2.5 is not an integer"),
    ("lookback", "2.5", "lookback='2.5' is not an integer"),
    ("lookback", True, "lookback=True is not an integer"),
    ("max_hold", 0, "max_hold=0 is out of range"),
    ("momentum_min", float("nan"), "momentum_min=nan is not a finite number"),
    ("momentum_min", "nan", "momentum_min='nan' is not a finite number"),
    ("momentum_min", 1.5, "momentum_min=1.5 is out of range; expected a finite number in [0, 1]"),
    ("stop_loss", -0.01, "stop_loss=-0.01 is out of range"),
    ("stop_loss", "inf", "is not a finite number"),
    ("flip_buffer", "wide", "flip_buffer='wide' is not a number"),
    ("allow_short", 1, "allow_short=1 is not a boolean; expected true or false"),
    ("allow_short", "maybe", "allow_short='maybe' is not a boolean"),
])
def test_check_params_refuses_bad_values(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        check_params(GammaFlip, {key: value})
    message = str(info.value)
    assert fragment in message
    assert "strategy gamma_flip parameter" in message
    assert f"--param {key}=" in message and "under [params]" in message  # the fix


def test_check_params_casts_cli_strings_and_whole_floats():
    checked = check_params(GammaFlip, {"lookback": "24", "max_hold": 6.0,
                                       "momentum_min": "0.5", "allow_short": "off",
                                       "stop_loss": 1})
    assert checked == {"lookback": 24, "max_hold": 6, "momentum_min": 0.5,
                       "allow_short": False, "stop_loss": 1.0}
    assert type(checked["max_hold"]) is int and type(checked["stop_loss"]) is float


def test_bounds_are_inclusive():
    assert check_params(GammaFlip, {"lookback": 1, "momentum_min": 0.0,
                                    "wall_band": 1.0}) == {
        "lookback": 1, "momentum_min": 0.0, "wall_band": 1.0}


@pytest.mark.parametrize("value", [-5, 2.5, math.nan])
def test_run_config_refuses_out_of_range_params(value):
    with pytest.raises(ConfigError, match=r"strategy gamma_flip parameter lookback="):
        RunConfig(bars="x.csv", params=(("lookback", value),))


def test_toml_config_refuses_out_of_range_and_fractional_params(tmp_path):
    base = 'strategy = "gamma_flip"\nbars = "bars.csv"\n[params]\n'
    (tmp_path / "neg.toml").write_text(base + "lookback = -5\n")
    with pytest.raises(ConfigError, match=r"lookback=-5 is out of range.*\[1, 10000\]"):
        RunConfig.from_toml(tmp_path / "neg.toml")
    (tmp_path / "frac.toml").write_text(base + "lookback = 2.5\n")
    with pytest.raises(ConfigError, match="lookback=2.5 is not an integer"):
        RunConfig.from_toml(tmp_path / "frac.toml")
    (tmp_path / "nan.toml").write_text(base + "momentum_min = nan\n")
    with pytest.raises(ConfigError, match="momentum_min=nan is not a finite number"):
        RunConfig.from_toml(tmp_path / "nan.toml")
    with pytest.raises(ConfigError, match="max_hold=0 is out of range"):
        RunConfig.from_mapping({"bars": "b.csv", "params": {"max_hold": 0}})


def test_buy_and_hold_has_no_params_and_no_ranges():
    assert strategy_params(BuyAndHold) == {}
    assert declared_ranges(BuyAndHold) == {}
