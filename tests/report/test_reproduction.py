"""`python -m bench.reproduce`: a rerun drawn from the same truth reproduces a study's conclusions; one in which a
mechanism's advantage reverses is caught as a flipped verdict and fails with exit 1."""

import sys

import numpy as np
import pytest

import bench.reproduce as reproduce_cli
from bench.report.reproduction import compare, load
from bench.results.records import RunInfo, append_records, records_path
from bench.results.samples import sample_rows, write_samples
from tasks.base import CellResult, SampleOutcome

LENGTHS = (128, 512)


def write_study(results, sweep, truth, rng, n=100, seeds=(1, 2, 3)):
    """passkey exact_match for every (mechanism, seed): 0/1 outcomes with success rate truth[mechanism][length],
    the same prompts (data_hash) for every mechanism, as a real sweep has them."""
    path = records_path(results, sweep)
    for mech, rates in truth.items():
        for seed in seeds:
            info = RunInfo(sweep=sweep, mechanism=mech, options={}, task="passkey", model="tiny", seed=seed,
                           train_length=256, config_hash=f"{mech}-{seed}", run_id=f"{mech}{seed}", git_sha="abc",
                           created_at="2026-11-29T00:00:00+00:00")
            cells = []
            for length in LENGTHS:
                hits = (rng.random(n) < rates[length]).astype(float)
                outcomes = [SampleOutcome(i, {"exact_match": float(h)}) for i, h in enumerate(hits)]
                cells.append(CellResult(context_length=length, metric="exact_match", value=float(hits.mean()), n=n,
                                        depth=0.5, data_hash=f"prompts-{length}", samples=outcomes))
            write_samples(path, info.config_hash, sample_rows(info.config_hash, "passkey", cells))
            append_records(path, [info.record(context_length=c.context_length, metric=c.metric, value=c.value,
                                              n=c.n, depth=c.depth, data_hash=c.data_hash) for c in cells])
    return path


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
