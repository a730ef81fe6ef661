"""Per-sample outcomes of each cell, beside its records: results/<sweep>/samples/<config_hash>.jsonl, one JSON
object per sample (docs/design.md, "Records"). Records keep the aggregate schema; the samples are what paired
differences and bootstrap intervals are computed from, and what a reader opens to see a mechanism's misses.

A cell's sidecar is written atomically *before* its records are appended, so every recorded cell has its samples;
a kill in between leaves a sidecar for an unrecorded cell, which the rerun replaces (as `force=true` does)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.core import atomic

SAMPLE_FIELDS = ("config_hash", "task", "subtask", "context_length", "depth", "data_hash", "sample", "metrics",
                 "prediction", "gold", "positions")


def samples_path(records_file: str | Path, config_hash: str) -> Path:
    return Path(records_file).parent / "samples" / f"{config_hash}.jsonl"


def sample_rows(config_hash: str, task: str, results: list[Any]) -> list[dict[str, Any]]:
    """One row per sample outcome the task attached to its cell results (`tasks.base.CellResult.samples`)."""
    rows = []
    for r in results:
        for s in r.samples:
            fields = {"config_hash": config_hash, "task": task, "subtask": r.subtask,
                      "context_length": r.context_length, "depth": r.depth, "data_hash": r.data_hash,
                      **dataclasses.asdict(s)}
            rows.append({f: fields[f] for f in SAMPLE_FIELDS})
    return rows


def write_samples(records_file: str | Path, config_hash: str, rows: list[dict[str, Any]]) -> Path:
    path = samples_path(records_file, config_hash)
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_samples(records_file: str | Path, config_hash: str) -> list[dict[str, Any]] | None:
    """The cell's samples, or None when it has no sidecar (recorded before samples were kept)."""
    path = samples_path(records_file, config_hash)
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
