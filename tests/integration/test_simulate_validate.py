"""``gammabt simulate --validate``: simulated stylized facts beside the real ranges."""

from __future__ import annotations

import numpy as np
import pytest

from gammabt import sim_validate as sv
from gammabt.cli import main


def test_real_facts_per_year_on_bitstamp(real):
    facts = sv.real_facts([real("ohlcv/Bitstamp_BTCUSD_1h.csv.gz")])
    # 2018 starts in May and 2022 stops in August: only the full years 2019-2021 qualify
    assert [s.split()[-1] for s in facts["series"]] == ["2019", "2020", "2021"]
    # heavy tails and volatility clustering, the textbook facts of hourly BTC returns
    assert (facts["kurtosis_excess"] > 3).all()
    assert (facts["acf_abs_1"] > facts["acf_abs_168"]).all()
    assert ((facts["vol_ann"] > 0.3) & (facts["vol_ann"] < 1.5)).all()


@pytest.mark.slow
def test_cli_validate_prints_the_side_by_side_table(real, capsys):
    bars = real("ohlcv/binance_BTCUSDT_1h_2023-2026.csv.gz")
    assert main(["simulate", "--validate", "--seeds", "2", "--real-bars", str(bars)]) == 0
    out = capsys.readouterr().out
    for fact in sv.FACTS:
        assert fact in out
    sim = sv.simulated_facts("calm", 2)
    assert len(sim) == 2 and np.isfinite(sim["vol_ann"]).all()


def test_simulate_without_out_or_validate_is_one_line_error(capsys):
    assert main(["simulate"]) == 2
    assert "--out" in capsys.readouterr().err
