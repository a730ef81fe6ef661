"""The sweep manifest: attempts counted per cell, every cell kept, the running process recorded."""

import os

from bench.results.manifest import Manifest


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


def test_a_finished_cell_keeps_its_wall_time_until_it_runs_again(tmp_path):
    from bench.results.summary import timing_markdown

    m = Manifest(tmp_path / "manifest.json")
    m.mark("h1", "running", "full", "passkey", {}, overrides="mechanism=full train.seed=1")
    assert timing_markdown(tmp_path / "records.jsonl") == ""  # nothing finished yet
    m.mark("h1", "done", "full", "passkey", {}, seconds={"model": 90.0, "evaluate": 30.0})
    m.mark("h2", "done", "fam", "passkey", {})  # recorded by code that did not time it: left out
    m.mark("h1", "done", "full", "passkey", {})  # a resumed sweep skipping the cell keeps its time
    assert m.read()["h1"].seconds == {"model": 90.0, "evaluate": 30.0}
    text = timing_markdown(tmp_path / "records.jsonl")
    assert "Model (train or load) 1.5 min and evaluation 0.5 min over 1 cells" in text
    assert "mechanism=full train.seed=1" in text and "fam" not in text
    m.mark("h1", "running", "full", "passkey", {})  # running again: the old time no longer describes it
    assert m.read()["h1"].seconds is None
