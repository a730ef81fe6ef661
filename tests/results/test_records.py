"""The records store: two processes appending concurrently lose nothing, a torn last line is ignored by readers and
cut by the next writer, and a cell is never appended twice (replace swaps it whole)."""

import errno
import json
import os
import random
import subprocess
import sys

import pytest

from bench.results import records as records_module
from bench.results.records import FIELDS, NonFiniteResult, RunInfo, append_records, read_records
from tests.helpers import ROOT
from tests.helpers.sweeps import assert_every_line_is_a_record

WRITER = """
import random, sys
from bench.results.records import FIELDS, append_records
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


def rows(cell: str, n: int = 3) -> list[dict]:
    return [dict.fromkeys(FIELDS) | {"config_hash": cell * 4, "metric": f"m{j}", "value": float(j)} for j in range(n)]


def test_a_complete_last_record_without_its_newline_is_kept_not_cut(tmp_path):
    """A hand edit or a merge can drop the final newline; the record is whole and must survive the next append."""
    path = tmp_path / "records.jsonl"
    first, second = rows("a")[0], rows("b")
    path.write_text(json.dumps(first))  # no newline
    assert read_records(path) == [first]
    assert append_records(path, second)
    assert read_records(path) == [first, *second]


def test_a_failed_append_leaves_no_part_of_the_cell(tmp_path, monkeypatch):
    """A write cut short (disk full, a file-size limit) must not leave the cell's first lines behind: they would
    make the rerun skip a cell that is only partly recorded."""
    path = tmp_path / "records.jsonl"
    assert append_records(path, rows("a"))
    before = path.read_bytes()
    real_write = os.write
    calls = []

    def short_then_fail(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])  # a short write, as a full disk gives
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError):
        append_records(path, rows("b", n=20))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert "b" * 4 not in {r["config_hash"] for r in read_records(path)}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_result_is_never_recorded(value):
    run = RunInfo(sweep="s", mechanism="full", options={}, task="passkey", model="m", seed=0, train_length=256,
                  config_hash="c")
    assert run.record(context_length=128, metric="exact_match", value=0.5, n=4)["value"] == 0.5
    with pytest.raises(NonFiniteResult, match="exact_match at 128 tokens is"):
        run.record(context_length=128, metric="exact_match", value=value, n=4)


def test_the_commit_is_read_once_per_process(monkeypatch):
    """A sweep that runs for an hour while commits land must label every record with the code it loaded: git is
    asked once, not per record."""
    calls = []
    real = records_module.subprocess.run
    monkeypatch.setattr(records_module.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    records_module.git_sha.cache_clear()
    try:
        first = records_module.RunInfo.new(sweep="s", mechanism="full", options={}, task="passkey", model="m",
                                           seed=1, train_length=256, config_hash="h").git_sha
        again = records_module.RunInfo.new(sweep="s", mechanism="full", options={}, task="passkey", model="m",
                                           seed=2, train_length=256, config_hash="h2").git_sha
    finally:
        records_module.git_sha.cache_clear()
    assert first == again and len(calls) == 2  # rev-parse and status, once
