"""Strategy parameter ranges, user strategies named by spec, and strategy source hashes."""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import backtrader as bt
import pytest

from gammabt.config import RunConfig
from gammabt.run import MarketInputs, run
from plumbing.errors import ConfigError
from strategies import buy_and_hold, gamma_flip
from strategies.buy_and_hold import BuyAndHold
from strategies.gamma_flip import GammaFlip
from strategies.params import declared_ranges, range_problems
from strategies.registry import (
    STRATEGIES,
    check_params,
    get_strategy,
    strategy_params,
    strategy_source_sha256,
)
from tests.data.hand_made import make_bars

USER_STRATEGY = '''
from strategies.base import GammaStrategy


class MyStrat(GammaStrategy):
    """Long from the first bar while the close is above ``floor_usd``."""

    params = (("floor_usd", 0.0), ("hold_bars", 5), ("side", "long"), ("verbose", False))
    param_ranges = {"floor_usd": (0.0, 1e7), "hold_bars": (1, 100), "side": ("long", "flat")}

    def next(self):
        if self.p.side == "long" and self.datas[0].close[0] > self.p.floor_usd:
            self.go(+1)


class Helper:
    pass


def helper():
    return 1
'''


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_strategies.py"
    path.write_text(USER_STRATEGY)
    return path


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


# -- user strategies ------------------------------------------------------------------

def test_user_strategy_by_file_path(user_file):
    cls = get_strategy(f"{user_file}:MyStrat")
    assert issubclass(cls, bt.Strategy) and cls.__name__ == "MyStrat"
    assert get_strategy(f"{user_file}:MyStrat") is cls  # same class on a repeated load
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_user_strategy_params_are_checked(user_file):
    spec = f"{user_file}:MyStrat"
    config = RunConfig(bars="x.csv", strategy=spec,
                       params=(("hold_bars", "7"), ("side", "flat"), ("verbose", "yes")))
    assert config.strategy_params == {"hold_bars": 7, "side": "flat", "verbose": True}
    with pytest.raises(ConfigError, match=r"my_strategies.py:MyStrat parameter hold_bars=0 "
                                          r"is out of range"):
        RunConfig(bars="x.csv", strategy=spec, params=(("hold_bars", 0),))
    with pytest.raises(ConfigError, match=r"side='lng' is not one of \['long', 'flat'\] "
                                          r"\(did you mean 'long'\?\)"):
        RunConfig(bars="x.csv", strategy=spec, params=(("side", "lng"),))


def test_user_strategy_without_ranges_is_type_checked_only(tmp_path):
    path = tmp_path / "loose.py"
    path.write_text("import backtrader as bt\n\n\nclass Loose(bt.Strategy):\n"
                    "    params = (('window', 3),)\n")
    cls = get_strategy(f"{path}:Loose")
    assert check_params(cls, {"window": -100}) == {"window": -100}
    with pytest.raises(ConfigError, match="window=2.5 is not an integer; expected an integer"):
        check_params(cls, {"window": 2.5})


def test_user_strategy_with_bad_ranges_is_refused(tmp_path):
    path = tmp_path / "bad_ranges.py"
    path.write_text("import backtrader as bt\n\n\nclass Bad(bt.Strategy):\n"
                    "    params = (('window', 3),)\n"
                    "    param_ranges = {'windw': (1, 5)}\n")
    with pytest.raises(ConfigError, match="declares unusable parameter ranges.*'windw'"):
        get_strategy(f"{path}:Bad")


def test_edited_user_file_is_loaded_again(tmp_path):
    path = tmp_path / "edited.py"
    source = "import backtrader as bt\n\n\nclass S(bt.Strategy):\n    params = (('n', {n}),)\n"
    path.write_text(source.format(n=1))
    first = get_strategy(f"{path}:S")
    assert get_strategy(f"{path}:S") is first
    path.write_text(source.format(n=2))
    second = get_strategy(f"{path}:S")
    assert second is not first and strategy_params(second) == {"n": 2}


def test_user_strategy_by_module_spec():
    assert get_strategy("strategies.buy_and_hold:BuyAndHold") is BuyAndHold
    assert get_strategy("strategies.gamma_flip:GammaFlip") is STRATEGIES["gamma_flip"]


@pytest.mark.parametrize("spec,fragment", [
    ("gama_flip", "unknown strategy 'gama_flip'"),
    ("gama_flip", "did you mean 'gamma_flip'?"),
    ("my_strategies.py", "no class name after a colon"),
    ("strategies.buy_and_hold:", "'' is not a class name"),
    (":BuyAndHold", "nothing before the colon"),
    ("not a module:X", "'not a module' is neither a .py file nor a dotted module name"),
    ("strategies.buy_and_hold:Buy-And-Hold", "'Buy-And-Hold' is not a class name"),
    ("no_such_package.mod:X", "cannot import strategy module no_such_package.mod "
                              "(ModuleNotFoundError: No module named 'no_such_package')"),
    ("strategies.buy_and_hold:BuyAndHol", "did you mean 'BuyAndHold'?"),
    ("strategies.base:finite", "finite in module strategies.base is a function, "
                               "not a backtrader.Strategy subclass"),
])
def test_spec_errors_say_what_is_wrong(spec, fragment):
    with pytest.raises(ConfigError) as info:
        get_strategy(spec)
    assert fragment in str(info.value)
    assert "column 'strategy'" in str(info.value)


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(ConfigError) as info:
        get_strategy(f"{missing}:MyStrat")
    message = str(info.value)
    assert str(missing) in message and "strategy file not found" in message


def test_file_with_syntax_error_names_file_and_error_on_one_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import backtrader as bt\n\nclass Broken(bt.Strategy)\n    pass\n")
    with pytest.raises(ConfigError) as info:
        get_strategy(f"{path}:Broken")
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "failed to load (SyntaxError:" in message


def test_file_with_import_error_names_file_and_error(tmp_path):
    path = tmp_path / "imports.py"
    path.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ConfigError) as info:
        get_strategy(f"{path}:Anything")
    message = str(info.value)
    assert str(path) in message
    assert "ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in message


def test_missing_class_suggests_the_strategy_classes_of_the_file(user_file):
    with pytest.raises(ConfigError) as info:
        get_strategy(f"{user_file}:MyStart")
    message = str(info.value)
    assert "no class 'MyStart'" in message and str(user_file.resolve()) in message
    assert "did you mean 'MyStrat'?" in message
    assert "['MyStrat']" in message  # only its Strategy classes, not Helper


@pytest.mark.parametrize("name,kind", [("Helper", "a class"), ("helper", "a function")])
def test_not_a_strategy_subclass_is_refused(user_file, name, kind):
    with pytest.raises(ConfigError, match=f"{name} in file .* is {kind}, "
                                          "not a backtrader.Strategy subclass"):
        get_strategy(f"{user_file}:{name}")


# -- source hashes --------------------------------------------------------------------

def test_strategy_source_sha256_hashes_the_defining_file(user_file):
    expected = hashlib.sha256(user_file.read_bytes()).hexdigest()
    assert strategy_source_sha256(f"{user_file}:MyStrat") == expected
    module_file = Path(gamma_flip.__file__)
    assert strategy_source_sha256("gamma_flip") == hashlib.sha256(
        module_file.read_bytes()).hexdigest()
    assert strategy_source_sha256("strategies.buy_and_hold:BuyAndHold") == hashlib.sha256(
        Path(buy_and_hold.__file__).read_bytes()).hexdigest()


# -- a user strategy runs ---------------------------------------------------------------

def test_user_strategy_runs_on_hand_made_bars(user_file):
    config = RunConfig(bars="unused.csv", strategy=f"{user_file}:MyStrat",
                       params=(("floor_usd", 1.0),))
    result = run(config, MarketInputs(bars=make_bars()))
    assert result.metrics["n_orders"] == 1


@pytest.mark.slow
def test_user_strategy_runs_on_a_simulated_market(user_file, tmp_path):
    from feeds.synthetic import simulate

    simulate("calm", days=2, seed=3, n_options=60).write(tmp_path / "market")
    config = RunConfig(strategy=f"{user_file}:MyStrat", market=str(tmp_path / "market"))
    result = run(config)
    assert result.metrics["n_orders"] == 1
    assert len(result.equity) > 0
