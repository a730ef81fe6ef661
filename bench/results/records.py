"""Result records (docs/design.md, "Records"): one JSON object per (run, cell, metric) in results/<sweep>/records.jsonl.

A run's records are appended in a single write under a file lock, so a run is either wholly recorded or not at all
and concurrent jobs never interleave lines; the run's config hash then marks the cell as finished. A write cut short
(power loss, a full disk) can leave only an unterminated last line: readers ignore it and the next writer removes it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import os
import subprocess
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from bench.core import atomic

log = logging.getLogger(__name__)

FIELDS = (
    "run_id", "sweep", "mechanism", "options", "task", "subtask", "model", "seed", "train_length",
    "context_length", "depth", "metric", "value", "n", "state_bytes", "tokens_per_s", "config_hash", "data_hash",
    "git_sha", "created_at",
)


class NonFiniteResult(ValueError):
    """An evaluation produced NaN/inf: the cell fails instead of recording it."""


@dataclass(frozen=True)
class RunInfo:
    """What every record of one run shares: its identity (mechanism, options, task, model, training) and its
    provenance. `record(...)` adds one cell's fields — the one place a record is built."""

    sweep: str
    mechanism: str
    options: dict[str, Any]
    task: str
    model: str
    seed: int
    train_length: int | None
    config_hash: str
    run_id: str = ""
    git_sha: str = ""
    created_at: str = ""

    @classmethod
    def new(cls, **identity: Any) -> RunInfo:
        """A run starting now: a fresh run id, this checkout's commit, the current time."""
        return cls(**identity, run_id=uuid.uuid4().hex[:12], git_sha=git_sha(), created_at=now())

    def record(self, *, context_length: int | None, metric: str, value: float, n: int, subtask: str | None = None,
               depth: float | None = None, state_bytes: int | None = None, tokens_per_s: float | None = None,
               data_hash: str | None = None) -> dict[str, Any]:
        if not math.isfinite(value):  # a NaN would be averaged as 0 by a summary or crash the report downstream
            raise NonFiniteResult(f"{self.mechanism} / {self.task}: {metric}"
                                  f"{f' ({subtask})' if subtask else ''} at {context_length} tokens is {value}; "
                                  "nothing of this cell is recorded")
        cell = dict(context_length=context_length, metric=metric, value=value, n=n, subtask=subtask, depth=depth,
                    state_bytes=state_bytes, tokens_per_s=tokens_per_s, data_hash=data_hash)
        values = asdict(self) | cell
        return {f: values[f] for f in FIELDS}


def records_path(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / "records.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record. A line is a record when it parses, whether or not a newline ends it (a hand edit or
    a merge can drop the last one); an unterminated last line that does not parse is a write in progress or cut
    short, not a record yet."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                if i == len(lines):  # the unterminated tail
                    break
                raise ValueError(f"{path}:{i} is not a JSON record; the file was edited or damaged") from None
    return rows


def record_counts(path: str | Path) -> Counter[str]:
    """Records per cell (config hash)."""
    return Counter(r["config_hash"] for r in read_records(path))


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
            atomic.write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode() + payload)
            return True
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        before = os.fstat(fd).st_size
        try:
            view = memoryview(payload)
            while view:  # a regular file takes it in one write; loop in case it does not
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:  # disk full, file-size limit, a signal: no partial cell may stay behind
            os.ftruncate(fd, before)
            os.fsync(fd)
            raise
        finally:
            os.close(fd)
        if created:
            atomic.fsync_dir(path.parent)
    return True


def _drop_torn_tail(path: Path) -> None:
    """Mend an unterminated last line (the caller holds the lock): a complete record that only lacks its newline
    gets one; anything else there is a write cut short and is cut off."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        try:
            json.loads(data[keep:])
        except ValueError:
            log.warning("%s: dropping an unterminated last line (%d bytes) left by an interrupted write",
                        path, len(data) - keep)
            f.truncate(keep)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


@functools.cache
def git_sha() -> str:
    """The commit of the code this process runs: read once, when the process first asks (the runner asks before
    its first cell), not at each record. Read per record, a sweep that ran for an hour while commits landed labelled
    its later cells with code it never loaded (results/default, recorded by 0248ef8, carries three later SHAs)."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        # uncommitted changes to code count; changes under results/ (a sweep rewriting its own records) do not
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True, check=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
