"""Wall time of the steps around a sweep's cells (installing the environment, the sweep process, the report) as
`make bench` measures them, kept in results/<sweep>/timing.json beside the manifest, so that the sweep's summary
says where a whole run's time went from the run itself rather than from a stopwatch in someone's notes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.core import atomic
from bench.core.errors import ConfigError
from bench.results.records import now

log = logging.getLogger(__name__)

# name -> what it covers, in the order a run goes through them
PHASES = {
    "setup": "setup (`make setup`: the environment; 0 when already installed)",
    "sweep": "sweep process (Hydra's start and every cell)",
    "report": "report (`python -m bench.report`)",
}


def timing_path(records_file: str | Path) -> Path:
    return Path(records_file).with_name("timing.json")


def read_phases(records_file: str | Path) -> dict[str, dict]:
    """phase -> {"seconds", "at"} of the last run that measured it; {} when none did. A damaged file is ignored
    with a warning (it only holds timings, which the next run rewrites)."""
    path = timing_path(records_file)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s (%s): the next `make bench` rewrites it", path, type(e).__name__)
        return {}
    return {k: v for k, v in data.items() if k in PHASES and isinstance(v, dict) and "seconds" in v}


def record_phases(records_file: str | Path, seconds: dict[str, float]) -> Path:
    """Replace the given phases' wall seconds, keeping the others; refuses an unknown phase or a negative time
    before writing anything."""
    for name, value in seconds.items():
        if name not in PHASES:
            raise ConfigError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
        if not value >= 0:
            raise ConfigError(f"phase {name} needs seconds >= 0, got {value}")
    data = read_phases(records_file)
    stamp = now()
    data.update({name: {"seconds": round(float(value), 1), "at": stamp} for name, value in seconds.items()})
    path = timing_path(records_file)
    atomic.write_text(path, json.dumps({k: data[k] for k in PHASES if k in data}, indent=1) + "\n")
    return path
