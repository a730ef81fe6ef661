"""Per-sample sidecars: every recorded cell has one, with one row per sample whose mean is the record's value; a
forced rerun replaces it; a sweep killed and resumed ends with a sidecar for every recorded cell."""

from __future__ import annotations

import pytest

from bench.results.records import read_records
from bench.results.samples import read_samples, samples_path
from tests.helpers.sweeps import check_sidecars, run


@pytest.mark.slow
def test_every_recorded_cell_has_samples_that_match_its_records_and_force_replaces_them(tmp_path):
    args = ["-m", "sweep=smoke", "mechanism=sliding_window,rag", "task=passkey,longqa,perplexity"]
    done = run(tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    records_file = tmp_path / "results" / "smoke" / "records.jsonl"
    assert check_sidecars(records_file) == 6
    assert "## Wall time per cell" in (records_file.parent / "summary.md").read_text()  # timed by the run itself
    passkey = next(r for r in read_records(records_file) if r["task"] == "passkey" and r["mechanism"] == "rag")
    some = read_samples(records_file, passkey["config_hash"])[0]
    assert some["gold"] and some["positions"]["needle"] and "retrieval_recall" in some["metrics"]
    sidecar = samples_path(records_file, passkey["config_hash"])
    before = sidecar.stat().st_mtime_ns
    forced = run(tmp_path, *args[:2], "mechanism=rag", "task=passkey", "force=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert sidecar.stat().st_mtime_ns > before
    assert check_sidecars(records_file) == 6
