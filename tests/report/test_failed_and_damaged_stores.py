"""Summaries and reports of stores a user can end up with: a sweep in which every cell failed (no records, a manifest
that says why), a damaged or empty records file, a records path that is a directory, and records with NaN values
written before records refused them."""

import json
import math
import re
import subprocess
import sys

import pytest

import bench.report.__main__ as report_cli
import bench.summary as summary_cli
from bench.report import build_report
from bench.results.manifest import Manifest
from bench.results.records import RunInfo
from bench.results.summary import to_markdown, unfinished_table, write_summary
from tests.helpers import ROOT

SWEEP = "swp"
REASONS = {"h-full": "full (from base): loss is nan at step 1 of 2",
           "h-window": "sliding_window: CUDA out of memory (tried to allocate 2.00 GiB)"}


def run_info(mechanism, options=None, config_hash=None, task="passkey"):
    return RunInfo(sweep=SWEEP, mechanism=mechanism, options=options or {}, task=task, model="tiny", seed=1,
                   train_length=256, config_hash=config_hash or f"h-{mechanism}", run_id=mechanism, git_sha="abc",
                   created_at="2026-11-22T00:00:00+00:00")


def passkey_records(nan_at=()):
    """full and sliding_window on passkey at 128/256 tokens, depths 0 and 1; (mechanism, length, depth) in `nan_at`
    get a NaN value, as records written before records refused non-finite values could hold."""
    rows = []
    for mech, options, score in (("full", {}, 1.0), ("sliding_window", {"window": 64}, 0.5)):
        info = run_info(mech, options)
        for length in (128, 256):
            for depth in (0.0, 1.0):
                r = info.record(context_length=length, metric="exact_match", value=score, n=20, depth=depth,
                                state_bytes=1000, tokens_per_s=1e4, data_hash=f"{length}-{depth}")
                if (mech, length, depth) in nan_at:
                    r["value"] = float("nan")
                rows.append(r)
    return rows


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def fail_every_cell(results):
    manifest = Manifest(results / SWEEP / "manifest.json")
    for config_hash, reason in REASONS.items():
        mechanism = config_hash.removeprefix("h-").replace("window", "sliding_window")
        cell = dict(mechanism=mechanism, task="passkey", options={}, overrides=f"mechanism={mechanism}")
        manifest.mark(config_hash, "running", **cell)
        manifest.mark(config_hash, "failed", **cell, error=reason)


def run_cli(module, monkeypatch, *args):
    """Run a command-line module's main() in-process; returns its exit code (0 when it returns)."""
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    try:
        module.main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


# 1. every cell failed: no records, but the manifest says why


@pytest.mark.parametrize("records", ["absent", "empty"])
def test_a_sweep_whose_every_cell_failed_still_gets_a_summary_and_a_report(tmp_path, monkeypatch, capsys, records):
    fail_every_cell(tmp_path)
    if records == "empty":
        (tmp_path / SWEEP / "records.jsonl").write_text("")
    assert run_cli(summary_cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) == 0
    summary = (tmp_path / SWEEP / "summary.md").read_text()
    assert "## Cells that did not finish (2)" in summary
    assert all(reason in summary for reason in REASONS.values())
    assert run_cli(report_cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) == 0
    page = (tmp_path / SWEEP / "report" / "index.html").read_text()
    assert "Cells that did not finish" in page and all(reason in page for reason in REASONS.values())
    assert "error" not in capsys.readouterr().err


def test_the_summary_writer_takes_an_empty_record_list(tmp_path):
    fail_every_cell(tmp_path)
    records_file = tmp_path / SWEEP / "records.jsonl"
    text = to_markdown([], unfinished_table([records_file]))
    assert "## Cells that did not finish (2)" in text and REASONS["h-full"] in text
    assert to_markdown([]).startswith("# Summary")
    out = write_summary(records_file)  # what the runner calls after a failed cell, records or not
    assert REASONS["h-window"] in out.read_text()


def test_neither_records_nor_a_manifest_is_still_an_error(tmp_path, monkeypatch, capsys):
    for cli in (summary_cli, report_cli):
        assert run_cli(cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) != 0
    expected = f"error: no records at {tmp_path / SWEEP / 'records.jsonl'}; run the sweep first"
    assert not (tmp_path / SWEEP).exists()
    # SystemExit with a message: Python prints it to stderr when the process exits
    monkeypatch.setattr(sys, "argv", ["bench.summary", SWEEP, "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="^" + re.escape(expected) + "$"):
        summary_cli.main()


# 2. damaged, empty or misplaced records: one line naming the file and how to recover, exit 2


def damage(tmp_path, kind):
    path = tmp_path / SWEEP / "records.jsonl"
    rows = passkey_records()
    if kind == "bad line":
        write_lines(path, rows[:2] + ['{"run_id": "full", "sweep": "sw'] + rows[2:])
    elif kind == "not a record":
        write_lines(path, rows[:2] + ["[1, 2, 3]"] + rows[2:])
    elif kind == "directory":
        path.mkdir(parents=True)
    elif kind == "empty":
        write_lines(path, [])
    elif kind == "not text":
        path.parent.mkdir(parents=True)
        path.write_bytes(json.dumps(rows[0]).encode() + b"\n\xff\xfe\x00garbage\n")
    return path


@pytest.mark.parametrize("cli", [summary_cli, report_cli], ids=["summary", "report"])
@pytest.mark.parametrize("kind", ["bad line", "not a record", "directory", "empty", "not text"])
def test_a_damaged_or_empty_store_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys, cli, kind):
    path = damage(tmp_path, kind)
    assert run_cli(cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], err
    if kind in ("bad line", "not a record"):
        assert f"{path}:3 " in err[0]
        assert "fix or delete that line" in err[0] and "rerunning the sweep recomputes" in err[0]
    elif kind == "directory":
        assert "directory" in err[0] and "rerunning the sweep recomputes" in err[0]
    elif kind == "empty":
        assert "run the sweep first" in err[0]
    assert not (tmp_path / SWEEP / "summary.md").exists() and not (tmp_path / SWEEP / "report").exists()


def test_the_report_command_exits_0_for_failed_cells_and_2_for_a_damaged_store(tmp_path):
    """What `make bench` relies on: the report of a sweep whose every cell failed succeeds (so make exits with the
    sweep's 3), and a damaged store is one line, no traceback."""
    fail_every_cell(tmp_path)
    command = [sys.executable, "-m", "bench.report", SWEEP, "--results-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert REASONS["h-full"] in (tmp_path / SWEEP / "report" / "index.html").read_text()
    path = write_lines(tmp_path / SWEEP / "records.jsonl", passkey_records()[:1] + ["NOT JSON"] + passkey_records())
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {path}:2 is not a JSON record; the file was edited or damaged; fix or delete that line "
        "(rerunning the sweep recomputes cells whose records are missing)"]


# 3. NaN values in older records: never averaged as 0, never a crash


def test_nan_values_are_left_out_of_summary_means_and_counted(tmp_path, monkeypatch):
    path = write_lines(tmp_path / SWEEP / "records.jsonl", passkey_records(nan_at={("full", 128, 0.0)}))
    assert "NaN" in path.read_text()  # what json writes for float('nan'); it reads back as nan
    assert run_cli(summary_cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) == 0
    text = (tmp_path / SWEEP / "summary.md").read_text()
    lines = text.splitlines()
    (full,) = [line for line in lines if line.startswith("| full ") and "1.000" in line]
    assert full.split("|")[2].strip() == "1.000"  # 128 tokens: the remaining depth's 1.0, not (NaN as 0 + 1) / 2
    assert "0.500" not in full
    notes = [line for line in lines if "non-finite" in line]
    assert len(notes) == 1 and notes[0].startswith("1 record excluded")
    assert "nan" not in text.replace(notes[0], "").lower()  # the NaN cell of the depth table shows as missing


def test_an_all_nan_cell_is_missing_from_the_summary_not_zero(tmp_path):
    rows = passkey_records(nan_at={("sliding_window", 256, 0.0), ("sliding_window", 256, 1.0)})
    text = to_markdown(rows)
    (window,) = [line for line in text.splitlines() if line.startswith("| sliding_window ") and "0.500" in line]
    assert window.split("|")[3].strip() == "–"
    assert "2 records excluded from every mean as non-finite" in text


def test_the_report_of_records_with_nan_values_builds_and_says_what_it_left_out(tmp_path, monkeypatch, capsys):
    nan_at = {("full", 128, 0.0), ("sliding_window", 256, 0.0), ("sliding_window", 256, 1.0)}
    write_lines(tmp_path / SWEEP / "records.jsonl", passkey_records(nan_at=nan_at))
    assert run_cli(report_cli, monkeypatch, SWEEP, "--results-dir", str(tmp_path)) == 0
    page = (tmp_path / SWEEP / "report" / "index.html").read_text()
    assert "3 records excluded from every mean as non-finite" in page
    table = (tmp_path / SWEEP / "report" / "tables" / "passkey_exact_match.md").read_text()
    (full,) = [line for line in table.splitlines() if line.startswith("| full ")]
    (window,) = [line for line in table.splitlines() if line.startswith("| sliding_window ")]
    assert full.split("|")[2].strip().startswith("**1.000")  # the finite depth only
    assert window.split("|")[3].strip() == "–"  # every value of the cell was NaN: missing, not 0
    assert "nan" not in table.lower()


def test_an_infinite_perplexity_still_fails_its_gate(tmp_path):
    info = run_info("sliding_window", {"window": 64}, "h-ppl", task="perplexity")
    rows = [info.record(context_length=length, metric="ppl", value=30.0, n=100, data_hash=str(length))
            for length in (128, 512)]
    rows[1]["value"] = math.inf
    path = write_lines(tmp_path / "records.jsonl", rows)
    page = build_report([path], tmp_path / "report").read_text()
    assert "sliding_window @ 512" in page and "1 record excluded from every mean as non-finite" in page


def test_a_store_without_depth_records_gets_a_summary():
    """Records of tasks without needle depths only (copy, mqar: the first cells of a sweep) leave the depth table
    empty; an empty row filter once selected zero *columns* and the summary raised KeyError 'value'."""
    info = run_info("full", task="mqar")
    rows = [info.record(context_length=128, metric="exact_match", value=0.5, n=20, subtask="kv4",
                        state_bytes=1000, tokens_per_s=1e4, data_hash="d")]
    text = to_markdown(rows)
    assert "## mqar/kv4 — exact_match" in text and "by needle depth" not in text
