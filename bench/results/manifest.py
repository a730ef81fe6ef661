"""The cell manifest: results/<sweep>/manifest.json maps each cell's config hash to `running`, `done` or `failed`.

Records stay the source of truth for "done" (a run's records land in one atomic append), so a job killed between
appending and marking is still seen as done; the manifest adds what records cannot hold — which cells are running
where, which failed and why — for resuming a sweep and for the report. Every update is a read-modify-write under a
file lock, written to a temp file and renamed, so concurrent jobs never lose each other's entries and a kill never
leaves a torn file.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from bench.core import atomic
from bench.results.records import now

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


def manifest_path(records_file: str | Path) -> Path:
    return Path(records_file).with_name("manifest.json")


class Manifest:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Entry]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {h: Entry(**e) for h, e in raw.items()}
        except (ValueError, TypeError) as e:
            raise ValueError(f"manifest {self.path} is not a valid cell manifest ({e}); delete it: the records "
                             "alone tell which cells are done") from None

    def get(self, config_hash: str) -> Entry | None:
        return self.read().get(config_hash)

    def mark(self, config_hash: str, status: str, mechanism: str, task: str, options: dict[str, Any],
             overrides: str = "", error: str | None = None) -> Entry:
        """Set a cell's status; `running` counts an attempt and records this host and pid."""
        if status not in STATUSES:
            raise ValueError(f"unknown cell status {status!r} (known: {', '.join(STATUSES)})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            entries = self.read()
            old = entries.get(config_hash)
            attempts = (old.attempts if old else 0) + (status == "running")
            entry = Entry(status, mechanism, task, options, now(), overrides or (old.overrides if old else ""),
                          attempts,
                          host=socket.gethostname() if status == "running" else None,
                          pid=os.getpid() if status == "running" else None, error=error)
            entries[config_hash] = entry
            atomic.write_text(self.path, json.dumps({h: asdict(e) for h, e in sorted(entries.items())}, indent=1)
                              + "\n")
        return entry


def is_alive_elsewhere(entry: Entry) -> bool:
    """A `running` entry whose process still runs on this host (another job of the sweep is on this cell now).
    Entries from other hosts cannot be checked and count as stale: resuming reruns them."""
    if entry.status != "running" or entry.host != socket.gethostname() or entry.pid in (None, os.getpid()):
        return False
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
