"""Result records (DESIGN.md §5): one JSON object per (run, cell, metric) in results/<sweep>/records.jsonl.

A run's records are appended in a single write under a file lock, so a run is either wholly recorded or not at all
and concurrent jobs never interleave lines; the run's config hash then marks the cell as finished.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

FIELDS = (
    "run_id", "sweep", "mechanism", "options", "task", "subtask", "model", "seed", "train_length",
    "context_length", "depth", "metric", "value", "n", "state_bytes", "tokens_per_s", "config_hash", "data_hash",
    "git_sha", "created_at",
)


def records_path(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / "records.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def finished_config_hashes(path: str | Path) -> set[str]:
    return {r["config_hash"] for r in read_records(path)}


def append_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Append all of a run's records at once (one write of complete lines, under a lock, fsynced)."""
    for r in records:
        if tuple(r) != FIELDS:
            raise ValueError(f"record fields {tuple(r)} differ from the schema {FIELDS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r) + "\n" for r in records).encode()
    with FileLock(str(path) + ".lock"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)


def git_sha() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        # uncommitted changes to code count; changes under results/ (a sweep rewriting its own records) do not
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, check=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
