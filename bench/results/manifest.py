"""The cell manifest: results/<sweep>/manifest.json maps each cell's config hash to `running`, `done` or `failed`.

Records stay the source of truth for "done" (a run's records land in one atomic append), so a job killed between
appending and marking is still seen as done; the manifest adds what records cannot hold — which cells are running
where, which failed and why — for resuming a sweep and for the report. Every update is a read-modify-write under a
file lock, written to a temp file and renamed, so concurrent jobs never lose each other's entries and a kill never
leaves a torn file.

A damaged manifest (a hand edit, a disk error) rebuilds itself from the records: every recorded cell is `done`;
what only the manifest knew (failures, attempts) is lost, and the damaged file is kept beside it. A `running`
entry is trusted only while its process — same host, same pid *and* same process start time — still runs, so a
reused pid (after a container restart) does not block the cell forever.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from bench.core import atomic
from bench.results.records import now, read_records

log = logging.getLogger(__name__)

STATUSES = ("running", "done", "failed")


@dataclass
class Entry:
    status: str
    mechanism: str
    task: str
    options: dict[str, Any]
    updated_at: str
    overrides: str = ""  # the job's command-line overrides: what reruns exactly this cell
    attempts: int = 0  # how many times a job started this cell
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    started: float | None = None  # the running process's start time (seconds since the epoch): pid + start = it
    records: int | None = None  # how many records the cell appends, set just before it appends them
    seconds: dict[str, float] | None = None  # wall time of the cell's last run by phase (runner.evaluate_cell)


def process_start(pid: int) -> float | None:
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def manifest_path(records_file: str | Path) -> Path:
    return Path(records_file).with_name("manifest.json")


class Manifest:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def records_file(self) -> Path:
        return self.path.with_name("records.jsonl")

    def read(self) -> dict[str, Entry]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {h: Entry(**e) for h, e in raw.items()}
        except (ValueError, TypeError, AttributeError, OSError) as e:
            entries = self.from_records()
            log.warning("manifest %s is damaged (%s: %s); rebuilt from %s: %d cells done (failures and attempts "
                        "it held are lost)", self.path, type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                        self.records_file.name, len(entries))
            return entries

    def from_records(self) -> dict[str, Entry]:
        """Every recorded cell as `done` (records are the source of truth for that)."""
        entries = {}
        for r in read_records(self.records_file):
            if r["config_hash"] not in entries:
                entries[r["config_hash"]] = Entry("done", r["mechanism"], r["task"], r["options"] or {},
                                                  r["created_at"] or now())
        return entries

    def _is_damaged(self) -> bool:
        try:
            raw = json.loads(self.path.read_text())
            [Entry(**e) for e in raw.values()]
        except FileNotFoundError:
            return False
        except (ValueError, TypeError, AttributeError, OSError):
            return True
        return False

    def get(self, config_hash: str) -> Entry | None:
        return self.read().get(config_hash)

    def mark(self, config_hash: str, status: str, mechanism: str, task: str, options: dict[str, Any],
             overrides: str = "", error: str | None = None, seconds: dict[str, float] | None = None) -> Entry:
        """Set a cell's status; `running` counts an attempt and records this host and pid; `seconds` (given with
        `done`) is how long the run took, kept until the cell runs again."""
        if status not in STATUSES:
            raise ValueError(f"unknown cell status {status!r} (known: {', '.join(STATUSES)})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            if self._is_damaged():  # keep it for inspection; the rebuilt one replaces it below
                os.replace(self.path, self.path.with_name(self.path.name + ".damaged"))
                log.warning("the damaged manifest is kept as %s", self.path.name + ".damaged")
                entries = self.from_records()
            else:
                entries = self.read()
            old = entries.get(config_hash)
            attempts = (old.attempts if old else 0) + (status == "running")
            entry = Entry(status, mechanism, task, options, now(), overrides or (old.overrides if old else ""),
                          attempts,
                          host=socket.gethostname() if status == "running" else None,
                          pid=os.getpid() if status == "running" else None, error=error,
                          started=process_start(os.getpid()) if status == "running" else None,
                          records=old.records if old else None,
                          seconds=seconds or (old.seconds if old and status == "done" else None))
            entries[config_hash] = entry
            self._write(entries)
        return entry


    def _write(self, entries: dict[str, Entry]) -> None:
        """The whole manifest, atomically (the caller holds the lock)."""
        atomic.write_text(self.path, json.dumps({h: asdict(e) for h, e in sorted(entries.items())}, indent=1) + "\n")

    def expect(self, config_hash: str, n_records: int) -> None:
        """Say how many records the cell is about to append: a resume that finds fewer knows the append was cut."""
        with FileLock(str(self.path) + ".lock"):
            entries = self.read()
            entries[config_hash].records = n_records
            self._write(entries)

def is_alive_elsewhere(entry: Entry) -> bool:
    """A `running` entry whose process still runs on this host (another job of the sweep is on this cell now): the
    same pid with the same start time. A pid now held by another process, and entries from other hosts (which
    cannot be checked), count as stale: resuming reruns them."""
    if entry.status != "running" or entry.host != socket.gethostname() or entry.pid in (None, os.getpid()):
        return False
    started = process_start(entry.pid)
    if started is None:
        return False
    return entry.started is None or abs(started - entry.started) < 0.05  # None: an entry from before start times
