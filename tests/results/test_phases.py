"""The whole run's wall time: `make bench`'s setup, sweep and report recorded in timing.json (bad input refused before
anything is written), and the summary's "Wall time" table summing cells by phase next to them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.core.errors import ConfigError
from bench.results.manifest import Manifest
from bench.results.phases import read_phases, record_phases, timing_path
from bench.results.summary import timing_markdown
from tests.helpers import ROOT


def cells(tmp_path):
    m = Manifest(tmp_path / "manifest.json")
    m.mark("a", "done", "full", "passkey", {}, overrides="mechanism=full task=passkey train.seed=1",
           seconds={"prepare": 2.0, "model": 740.0, "base": 700.0, "train": 39.0, "evaluate": 7.0})
    m.mark("b", "done", "full", "perplexity", {}, overrides="mechanism=full task=perplexity train.seed=1",
           seconds={"prepare": 1.0, "model": 0.5, "base": 0.0, "train": 0.0, "evaluate": 1.0})
    m.mark("c", "done", "fam", "passkey", {}, overrides="mechanism=fam task=passkey train.seed=1",
           seconds={"prepare": 1.0, "model": 49.0, "base": 0.0, "train": 48.0, "evaluate": 7.0})
    return tmp_path / "records.jsonl"


def rows(text: str) -> dict[str, str]:
    """phase -> seconds as the Wall time table prints them."""
    section = text.split("## Wall time\n", 1)[1].split("##", 1)[0]
    return {cols[0].strip(): cols[1].strip() for line in section.splitlines() if line.startswith("|")
            for cols in [line.strip("|").split("|")] if not set(cols[0]) <= set(":- ")}


def test_the_wall_time_table_sums_cells_by_phase_beside_the_recorded_setup_sweep_and_report(tmp_path):
    records_file = cells(tmp_path)
    table = rows(timing_markdown(records_file))  # cells only: no make bench has recorded its phases
    assert table["cells: training the shared base model"] == "700"
    assert table["cells: training their own models"] == "87"
    assert table["cells: evaluation, passkey"] == "14" and table["cells: evaluation, perplexity"] == "1"
    assert table["cells: loading cached models"] == "2" and not any(k.startswith("total") for k in table)
    record_phases(records_file, {"setup": 69, "sweep": 810.4})
    record_phases(records_file, {"report": 20})  # a later phase keeps the earlier ones
    table = rows(timing_markdown(records_file))
    assert table[next(k for k in table if k.startswith("setup"))] == "69"
    assert table[next(k for k in table if k.startswith("sweep"))] == "810"
    assert table["total (setup + sweep + report)"] == "899"
    assert list(json.loads(timing_path(records_file).read_text())) == ["setup", "sweep", "report"]


def test_cells_timed_by_older_code_keep_the_per_cell_table_only(tmp_path):
    Manifest(tmp_path / "manifest.json").mark("a", "done", "full", "passkey", {}, seconds={"model": 9.0,
                                                                                           "evaluate": 3.0})
    text = timing_markdown(tmp_path / "records.jsonl")
    assert "## Wall time\n" not in text and "## Wall time per cell" in text and "base s" not in text


@pytest.mark.parametrize("bad", [{"install": 3.0}, {"setup": -1.0}, {"setup": float("nan")}])
def test_an_unknown_phase_or_a_bad_time_is_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ConfigError, match="phase"):
        record_phases(tmp_path / "records.jsonl", {"report": 5.0, **bad})
    assert not timing_path(tmp_path / "records.jsonl").exists()


def test_a_damaged_timing_file_is_ignored_and_rewritten(tmp_path):
    records_file = tmp_path / "records.jsonl"
    timing_path(records_file).write_text("{not json")
    assert read_phases(records_file) == {}
    record_phases(records_file, {"setup": 1.0})
    assert read_phases(records_file)["setup"]["seconds"] == 1.0


def test_the_command_records_phases_and_refuses_bad_input_in_one_line(tmp_path):
    def timing(*args):
        return subprocess.run([sys.executable, "-m", "bench.timing", "smoke", *args, "--results-dir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    bad = timing("setup=3", "report=soon")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: 'report=soon': expected PHASE=SECONDS, PHASE one of setup, sweep, report"]
    assert not (tmp_path / "smoke").exists()
    good = timing("setup=3", "report=4.5")
    assert good.returncode == 0, good.stderr
    assert {k: v["seconds"] for k, v in read_phases(tmp_path / "smoke" / "records.jsonl").items()} == {
        "setup": 3.0, "report": 4.5}


def test_the_per_cell_table_lists_cells_by_mechanism_then_task_then_seed(tmp_path):
    m = Manifest(tmp_path / "manifest.json")
    for mechanism, task, seed in [("fam", "passkey", 2), ("full", "perplexity", 1), ("fam", "passkey", 1),
                                  ("full", "passkey", 1)]:
        m.mark(f"{mechanism}{task}{seed}", "done", mechanism, task, {}, overrides=f"train.seed={seed}",
               seconds={"model": 1.0, "evaluate": 1.0})
    lines = timing_markdown(tmp_path / "records.jsonl").split("|:", 1)[1].splitlines()[1:]
    assert [tuple(c.strip() for c in line.strip("|").split("|")[:3]) for line in lines] == [
        ("full", "passkey", "train.seed=1"), ("full", "perplexity", "train.seed=1"),
        ("fam", "passkey", "train.seed=1"), ("fam", "passkey", "train.seed=2")]
