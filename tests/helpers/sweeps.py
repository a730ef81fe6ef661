"""Running the real CLI in a subprocess against a private results/cache folder, and reading back what a sweep
recorded in a form that ignores run ids and timings."""

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bench.results.records import FIELDS, read_records
from bench.results.samples import read_samples
from tests.helpers import ROOT, corpus_cache

__all__ = ["ROOT", "assert_every_line_is_a_record", "cell_values", "check_sidecars", "command", "run"]


def command(root: Path, *overrides: str) -> list[str]:
    corpus_cache.seed(root / "cache")
    return [sys.executable, "-m", "bench", *overrides, f"results_dir={root / 'results'}",
            f"cache_dir={root / 'cache'}", f"hydra.sweep.dir={root / 'multirun'}", f"hydra.run.dir={root / 'run'}"]


def run(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(root, *overrides), cwd=ROOT, capture_output=True, text=True, timeout=600)


def cell_values(records_file: Path) -> dict[tuple, tuple]:
    """What a cell's records say, keyed by what identifies a record (run ids and timings aside); no duplicates."""
    rows = read_records(records_file)
    keyed = {(r["config_hash"], r["subtask"], r["context_length"], r["depth"], r["metric"]):
             (r["value"], r["n"], r["state_bytes"], r["data_hash"], r["model"]) for r in rows}
    assert len(keyed) == len(rows), "duplicate records"
    return keyed


def assert_every_line_is_a_record(records_file: Path) -> None:
    """No torn last line, and every line a whole record with the schema's fields in order."""
    if records_file.exists():
        text = records_file.read_text()
        assert text == "" or text.endswith("\n"), "torn last line"
        for line in text.splitlines():
            assert tuple(json.loads(line)) == FIELDS


def check_sidecars(records_file) -> int:
    """Every recorded cell's sidecar agrees with its records; returns how many cells were checked."""
    rows = read_records(records_file)
    cells = {r["config_hash"] for r in rows}
    for cell in cells:
        samples = read_samples(records_file, cell)
        assert samples is not None, f"no sidecar for recorded cell {cell}"
        groups = defaultdict(list)
        for s in samples:
            groups[(s["subtask"], s["context_length"], s["depth"])].append(s)
        for r in rows:
            if r["config_hash"] != cell or r["context_length"] is None or r["task"] == "perplexity":
                continue
            group = groups[(r["subtask"], r["context_length"], r["depth"])]
            assert len(group) == r["n"], r
            assert sum(s["metrics"][r["metric"]] for s in group) / len(group) == pytest.approx(r["value"], abs=1e-12)
            assert all(s["data_hash"] == r["data_hash"] for s in group)
    return len(cells)
