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
