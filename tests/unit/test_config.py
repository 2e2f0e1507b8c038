"""RunConfig: validation on creation, TOML loading, stable hashing."""

from __future__ import annotations

import hashlib

import pytest

from gammabt.config import RunConfig, input_sha256
from plumbing.errors import ConfigError


def test_params_are_cast_and_sorted():
    config = RunConfig(bars="x.csv", params=(("max_hold", "12"), ("allow_short", "no")))
    assert config.strategy_params == {"allow_short": False, "max_hold": 12}


def test_unknown_strategy_suggests_the_close_name():
    with pytest.raises(ConfigError, match="did you mean 'gamma_flip'"):
        RunConfig(bars="x.csv", strategy="gama_flip")


def test_unknown_param_suggests_the_close_name():
    with pytest.raises(ConfigError, match="did you mean 'lookback'"):
        RunConfig(bars="x.csv", params=(("lookbak", 3),))


def test_bad_param_type_names_the_parameter():
    with pytest.raises(ConfigError, match="lookback='six' is not an integer"):
        RunConfig(bars="x.csv", params=(("lookback", "six"),))


@pytest.mark.parametrize("field,value", [("cash", -1.0), ("commission_bps", -0.1),
                                         ("percent", 0.0), ("max_staleness", "soon"),
                                         ("start", "yesterday-ish"), ("dealer", "both")])
def test_invalid_values_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=field):
        RunConfig(bars="x.csv", **{field: value})


def test_bars_or_market_required():
    with pytest.raises(ConfigError, match="no price bars"):
        RunConfig()


def test_dates_become_utc_iso():
    config = RunConfig(bars="x.csv", start="2022-01-01", end="2022-02-01T05:00+01:00")
    assert config.start == "2022-01-01T00:00:00+00:00"
    assert config.end == "2022-02-01T04:00:00+00:00"


def test_digest_depends_on_config_and_data_not_on_paths():
    a = RunConfig(bars="a.csv")
    b = RunConfig(bars="elsewhere/b.csv")
    assert a.digest({"bars": "h1"}) == b.digest({"bars": "h1"})
    assert a.digest({"bars": "h1"}) != a.digest({"bars": "h2"})
    assert a.digest() != RunConfig(bars="a.csv", commission_bps=6).digest()
    assert hash(a) == hash(RunConfig(bars="a.csv"))


def test_from_toml_resolves_paths_and_rejects_unknown_keys(tmp_path):
    (tmp_path / "run.toml").write_text(
        'strategy = "gamma_flip"\nbars = "data/bars.csv"\ncash = 5000.0\n'
        '[params]\nlookback = 4\n')
    config = RunConfig.from_toml(tmp_path / "run.toml")
    assert config.bars == (str((tmp_path / "data" / "bars.csv").resolve()),)
    assert config.cash == 5000.0 and config.strategy_params == {"lookback": 4}
    (tmp_path / "bad.toml").write_text('bars = "b.csv"\ncomission_bps = 3\n')
    with pytest.raises(ConfigError, match="did you mean 'commission_bps'"):
        RunConfig.from_toml(tmp_path / "bad.toml")


def test_input_sha256_of_file_and_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one")
    first = input_sha256(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("two")
    assert input_sha256(tmp_path / "d") != first
    assert input_sha256(tmp_path / "d" / "a.txt") == hashlib.sha256(b"two").hexdigest()


def test_every_input_kind_is_a_field_a_toml_key_and_takes_several_files(tmp_path):
    from gammabt.inputs import INPUT_SPECS

    files = {name: ["a.x", "b.x"] for name, spec in INPUT_SPECS.items() if spec.repeats}
    (tmp_path / "run.toml").write_text("\n".join(f'{k} = ["a.x", "b.x"]' for k in files)
                                       + '\nmarket = "sim"\n')
    config = RunConfig.from_toml(tmp_path / "run.toml")
    for name in files:
        assert getattr(config, name) == (str(tmp_path / "a.x"), str(tmp_path / "b.x"))
    assert config.market == str(tmp_path / "sim")
    assert config.inputs()["chain.1"] == str(tmp_path / "b.x")
    again = RunConfig.from_mapping(config.to_dict())
    assert again == config and hash(again) == hash(config)


def test_one_path_or_none_normalise_to_tuples():
    config = RunConfig(bars="b.csv", funding="f.csv", futures=["x", "y"], oi=None)
    assert (config.bars, config.funding, config.futures, config.oi, config.market) == \
        (("b.csv",), ("f.csv",), ("x", "y"), (), None)
    assert config.to_dict()["bars"] == ["b.csv"] and config.to_dict()["market"] is None


def test_replace_and_pickle_keep_the_inputs():
    import dataclasses
    import pickle

    config = RunConfig(bars="b.csv", chain=("c1", "c2"), delays={"chain": "1h"})
    moved = dataclasses.replace(config, start="2024-01-01", chain="c3")
    assert moved.chain == ("c3",) and moved.bars == ("b.csv",) and moved.delays == config.delays
    assert pickle.loads(pickle.dumps(config)) == config
    assert config.replace(chain_delay="0s").chain_delay == "0s"


def test_digest_ignores_every_input_path_but_not_the_delays():
    a = RunConfig(bars="a.csv", funding="f.csv")
    b = RunConfig(bars="b.csv", funding="g.csv")
    assert a.digest({"bars": "h"}) == b.digest({"bars": "h"})
    assert a.digest() != a.replace(delays={"funding": "1h"}).digest()


def test_unknown_keys_and_kinds_are_refused():
    with pytest.raises(ConfigError, match="did you mean 'funding'"):
        RunConfig.from_mapping({"bars": "b.csv", "fundng": "f.csv"})
    with pytest.raises(ConfigError, match="unknown setting 'fundng'"):
        RunConfig(bars="b.csv", fundng="f.csv")
    with pytest.raises(ConfigError, match="unknown input kind 'dvol'"):
        RunConfig(bars="b.csv", files=(("dvol", ("d.csv",)),))
    with pytest.raises(ConfigError, match="delays must be a table"):
        RunConfig.from_mapping({"bars": "b.csv", "delays": "1h"})
