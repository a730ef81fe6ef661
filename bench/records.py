"""Result records (DESIGN.md §5): one JSON object per (run, cell, metric) in results/<sweep>/records.jsonl.

A run's records are appended in a single write under a file lock, so a run is either wholly recorded or not at all
and concurrent jobs never interleave lines; the run's config hash then marks the cell as finished. A write cut short
(power loss, a full disk) can leave only an unterminated last line: readers ignore it and the next writer removes it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)

FIELDS = (
    "run_id", "sweep", "mechanism", "options", "task", "subtask", "model", "seed", "train_length",
    "context_length", "depth", "metric", "value", "n", "state_bytes", "tokens_per_s", "config_hash", "data_hash",
    "git_sha", "created_at",
)


def records_path(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / "records.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record; an unterminated last line (a write in progress or cut short) is not one yet."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the piece after the last newline is never a complete record
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}:{i} is not a JSON record; the file was edited or damaged") from None
    return rows


def finished_config_hashes(path: str | Path) -> set[str]:
    return {r["config_hash"] for r in read_records(path)}


def append_records(path: str | Path, records: list[dict[str, Any]], replace: bool = False) -> bool:
    """Append one cell's records at once (one write of complete lines, under a lock, fsynced). A cell already in
    the file is not appended twice (returns False) unless `replace`, which drops its earlier records in the same
    step: the file is then rewritten to a temp file and renamed, so readers see the old cell or the new, never
    both."""
    hashes = {r.get("config_hash") for r in records}
    if len(hashes) != 1:
        raise ValueError(f"append_records takes one cell's records (one config_hash), got {len(hashes)}")
    for r in records:
        if tuple(r) != FIELDS:
            raise ValueError(f"record fields {tuple(r)} differ from the schema {FIELDS}")
    (cell,) = hashes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r) + "\n" for r in records).encode()
    marker = json.dumps({"config_hash": cell})[1:-1].encode()  # how the cell's hash appears in its lines
    with FileLock(str(path) + ".lock"):
        _drop_torn_tail(path)
        present = path.exists() and marker in path.read_bytes()
        if present and not replace:
            return False
        if present:
            kept = [r for r in read_records(path) if r["config_hash"] != cell]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept).encode() + payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return True
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:  # a regular file takes it in one write; loop in case it does not
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (only a write cut short leaves one; the caller holds the lock)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping an unterminated last line (%d bytes) left by an interrupted write",
                    path, len(data) - keep)
        f.truncate(keep)


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
