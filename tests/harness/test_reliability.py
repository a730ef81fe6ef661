"""Sweeps survive kills, concurrent writers, NaN losses and forced reruns without losing or duplicating a record."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps import ROOT, cell_values, command, run

from bench.manifest import Manifest
from bench.records import FIELDS, append_records, read_records

SWEEP = ["-m", "sweep=smoke", "task=passkey", "mechanism=full,sliding_window,infini", "eval.seed=0,1"]  # 6 cells


def assert_every_line_is_a_record(records_file: Path) -> None:
    if records_file.exists():
        text = records_file.read_text()
        assert text == "" or text.endswith("\n"), "torn last line"
        for line in text.splitlines():
            assert tuple(json.loads(line)) == FIELDS


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
    assert cell_values(records_file) == expected
    manifest = Manifest(records_file.with_name("manifest.json")).read()
    assert {h for h, _, _, _, _ in expected} == set(manifest)
    assert {e.status for e in manifest.values()} == {"done"}


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


def test_a_nan_loss_fails_its_cell_and_the_sweep_goes_on(tmp_path):
    done = run(tmp_path, "-m", "sweep=smoke", "task=passkey", "mechanism=sliding_window", "inject_nan_at_step=1,null")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "1 cell(s) failed" in last and "sliding_window (from base): loss is nan at step 1 of 2" in last
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


WRITER = """
import random, sys
from bench.records import FIELDS, append_records
name, path, cells = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(name)
for i in range(cells):
    rows = [dict.fromkeys(FIELDS) | {"config_hash": f"{name}-{i}", "metric": f"m{j}", "value": rng.random(),
                                     "options": {"pad": "x" * rng.randint(0, 2000)}}
            for j in range(rng.randint(1, 4))]
    assert append_records(path, rows)
"""


def test_two_processes_appending_concurrently_lose_nothing(tmp_path):
    path = tmp_path / "records.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(path), "600"], cwd=ROOT)
               for name in ("a", "b")]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    assert_every_line_is_a_record(path)
    rows = read_records(path)
    for name in ("a", "b"):
        rng = random.Random(name)
        expected = []
        for i in range(600):
            n = rng.randint(1, 4)
            expected += [(f"{name}-{i}", f"m{j}") for j in range(n)]
            for _ in range(n):
                rng.random(), rng.randint(0, 2000)
        assert [(r["config_hash"], r["metric"]) for r in rows if r["config_hash"].startswith(f"{name}-")] == expected
    assert len(rows) > 2000


def _record(cell: str, metric: str = "m", value: float = 1.0) -> dict:
    return dict.fromkeys(FIELDS) | {"config_hash": cell, "metric": metric, "value": value}


def test_a_torn_last_line_is_ignored_by_readers_and_cut_by_the_next_writer(tmp_path):
    path = tmp_path / "records.jsonl"
    append_records(path, [_record("a")])
    with path.open("a") as f:
        f.write('{"run_id": "half a rec')  # what a write cut short leaves
    assert [r["config_hash"] for r in read_records(path)] == ["a"]
    append_records(path, [_record("b")])
    assert_every_line_is_a_record(path)
    assert [r["config_hash"] for r in read_records(path)] == ["a", "b"]


def test_a_cell_is_never_appended_twice_and_replace_swaps_it_whole(tmp_path):
    path = tmp_path / "records.jsonl"
    assert append_records(path, [_record("a", "x"), _record("a", "y")])
    assert append_records(path, [_record("b")])
    assert not append_records(path, [_record("a", "x", 2.0)])
    assert append_records(path, [_record("a", "z", 3.0)], replace=True)
    assert [(r["config_hash"], r["metric"]) for r in read_records(path)] == [("b", "m"), ("a", "z")]


def test_manifest_counts_attempts_and_keeps_every_cell(tmp_path):
    m = Manifest(tmp_path / "manifest.json")
    m.mark("h1", "running", "full", "passkey", {}, overrides="mechanism=full")
    m.mark("h2", "running", "fam", "passkey", {"block": 32})
    m.mark("h1", "failed", "full", "passkey", {}, error="loss is nan")
    m.mark("h1", "running", "full", "passkey", {})
    m.mark("h1", "done", "full", "passkey", {})
    entries = m.read()
    assert entries["h1"].status == "done" and entries["h1"].attempts == 2 and entries["h1"].error is None
    assert entries["h1"].overrides == "mechanism=full"
    assert entries["h2"].status == "running" and entries["h2"].pid == os.getpid()
