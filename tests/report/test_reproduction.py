"""`python -m bench.reproduce`: a rerun drawn from the same truth reproduces a study's conclusions; one in which a
mechanism's advantage reverses is caught as a flipped verdict and fails with exit 1."""

import sys

import numpy as np
import pytest

import bench.reproduce as reproduce_cli
from bench.report.reproduction import compare, load
from tests.helpers.stores import write_study

TRUTH = {"full": {128: 0.95, 512: 0.2}, "sliding_window": {128: 0.4, 512: 0.2}, "rag": {128: 0.95, 512: 0.9}}


def test_a_rerun_of_the_same_truth_reproduces(tmp_path):
    committed = load(write_study(tmp_path, "committed", TRUTH, np.random.default_rng(0)))
    rerun = load(write_study(tmp_path, "rerun", TRUTH, np.random.default_rng(1)))
    result = compare(committed, rerun)
    assert len(result.cells) == 6 and result.coverage >= 0.95
    assert set(result.decisive["mechanism"]) == {"sliding_window", "rag"}  # worse in length, better beyond
    assert result.flipped.empty and result.holds
    assert "conclusions reproduce: yes" in result.markdown("committed", "rerun")


def test_a_reversed_advantage_is_a_flipped_verdict(tmp_path):
    committed = load(write_study(tmp_path, "committed", TRUTH, np.random.default_rng(0)))
    reversed_truth = TRUTH | {"rag": {128: 0.95, 512: 0.0}}
    rerun = load(write_study(tmp_path, "rerun", reversed_truth, np.random.default_rng(1)))
    result = compare(committed, rerun)
    assert list(result.flipped["mechanism"]) == ["rag"] and not result.holds
    assert result.coverage < 1.0  # rag's mean at 512 left its interval


def test_the_command_writes_its_verdict_and_exits_by_it(tmp_path, monkeypatch, capsys):
    write_study(tmp_path, "committed", TRUTH, np.random.default_rng(0))
    write_study(tmp_path, "same", TRUTH, np.random.default_rng(1))
    write_study(tmp_path, "reversed", TRUTH | {"rag": {128: 0.95, 512: 0.0}}, np.random.default_rng(1))
    for rerun, code in (("same", 0), ("reversed", 1)):
        monkeypatch.setattr(sys, "argv", ["reproduce", "committed", rerun, "--results-dir", str(tmp_path)])
        with pytest.raises(SystemExit) as exit_:
            reproduce_cli.main()
        assert exit_.value.code == code
        assert (tmp_path / rerun / "reproduction.md").read_text().startswith("# Reproduction of committed")
    monkeypatch.setattr(sys, "argv", ["reproduce", "committed", "absent", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        reproduce_cli.main()
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def test_interval_widths_show_a_rerun_whose_seeds_spread_more(tmp_path):
    """decisive_bases against default: independent base models per seed spread the seeds' means apart, and the
    reproduction's width table says by how much."""
    committed = load(write_study(tmp_path, "committed", TRUTH, np.random.default_rng(0)))
    for seed, rate in ((1, 0.1), (2, 0.4), (3, 0.7)):  # the window's in-length rate moves with the seed
        truth = TRUTH | {"sliding_window": {128: rate, 512: 0.2}}
        rerun_file = write_study(tmp_path, "spread", truth, np.random.default_rng(seed), seeds=(seed,))
    widths = compare(committed, load(rerun_file)).widths().set_index("mechanism")
    assert widths.loc["sliding_window", "ratio"] > 1.5 and widths.loc["sliding_window", "width_rerun_max"] > 0.3
    assert 0.5 < widths.loc["full", "ratio"] < 2  # a mechanism whose seeds agree keeps its width
