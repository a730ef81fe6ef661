"""Sweeps survive kills, NaN losses and forced reruns without losing or duplicating a record (the records
store itself: tests/results/)."""

import os
import random
import signal
import subprocess
import time

import pytest

from bench.results.manifest import Manifest
from bench.results.records import read_records
from tests.helpers.sweeps import ROOT, assert_every_line_is_a_record, cell_values, check_sidecars, command, run

SWEEP = ["-m", "sweep=smoke", "task=passkey", "mechanism=full,sliding_window,infini", "eval.seed=0,1"]  # 6 cells


@pytest.mark.slow  # 92 s
def test_a_sweep_killed_at_random_points_resumes_to_the_uninterrupted_records(tmp_path):
    started = time.perf_counter()
    whole = run(tmp_path / "whole", *SWEEP)
    duration = time.perf_counter() - started
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = cell_values(tmp_path / "whole" / "results" / "smoke" / "records.jsonl")

    resumed = tmp_path / "resumed"  # its own cache: the killed runs train and write checkpoints themselves
    records_file = resumed / "results" / "smoke" / "records.jsonl"
    rng = random.Random(9)
    for _ in range(4):
        job = subprocess.Popen(command(resumed, *SWEEP), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.35, 0.95) * duration)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        assert_every_line_is_a_record(records_file)
        if records_file.exists():
            cell_values(records_file)  # asserts no duplicates
    final = run(resumed, *SWEEP)
    assert final.returncode == 0, final.stderr[-3000:]
    assert check_sidecars(records_file) == 6  # every recorded cell kept its per-sample outcomes through the kills
    assert cell_values(records_file) == expected
    manifest = Manifest(records_file.with_name("manifest.json")).read()
    assert {h for h, _, _, _, _ in expected} == set(manifest)
    assert {e.status for e in manifest.values()} == {"done"}


@pytest.mark.slow  # 29 s
def test_a_resumed_sweep_runs_only_missing_cells_and_force_replaces_them(tmp_path):
    first = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window", "eval.seed=0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    records_file = tmp_path / "results" / "smoke" / "records.jsonl"
    before = read_records(records_file)
    cells = {r["config_hash"] for r in before}
    assert len(cells) == 2

    more = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window", "eval.seed=0,1,2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert (more.stdout + more.stderr).count("skipping") == 2
    after = read_records(records_file)
    assert after[:len(before)] == before and len({r["config_hash"] for r in after}) == 3

    forced = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window", "eval.seed=0", "force=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    redone = read_records(records_file)
    assert len(redone) == len(after)  # replaced, not appended
    (seed0,) = {r["config_hash"] for r in before if r["run_id"] == before[0]["run_id"]}
    assert {r["run_id"] for r in redone if r["config_hash"] == seed0}.isdisjoint({r["run_id"] for r in after})
    cell_values(records_file)  # asserts one record per key


@pytest.mark.slow  # 22 s
def test_a_nan_loss_fails_its_cell_and_the_sweep_goes_on(tmp_path):
    done = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window", "inject_nan_at_step=1,null")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "1 cell(s) did not finish" in last and "sliding_window (from base): loss is nan at step 1 of 2" in last
    results = tmp_path / "results" / "smoke"
    rows = read_records(results / "records.jsonl")
    assert len({r["config_hash"] for r in rows}) == 1  # the healthy cell ran after the failed one
    entries = Manifest(results / "manifest.json").read().values()
    assert sorted(e.status for e in entries) == ["done", "failed"]
    (failed,) = [e for e in entries if e.status == "failed"]
    assert failed.error == "sliding_window (from base): loss is nan at step 1 of 2"
    assert "inject_nan_at_step=1" in failed.overrides
    assert "## Cells that did not finish (1)" in (results / "summary.md").read_text()

    from bench.report import build_report

    page = build_report([results / "records.jsonl"], tmp_path / "report").read_text()
    assert "Cells that did not finish" in page and "loss is nan at step 1 of 2" in page

    single = run(tmp_path, "sweep=smoke", "task=passkey", "hydra.mode=RUN", "mechanism=full", "inject_nan_at_step=2")
    assert single.returncode == 3 and "Traceback" not in single.stderr
    assert single.stderr.strip().splitlines()[-1] == ("error: training diverged: full (from base): loss is nan at "
                                                      "step 2 of 2")
