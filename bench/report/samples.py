"""Per-sample outcomes for the report: the sidecars of the recorded cells (results/<sweep>/samples/<config_hash>.jsonl,
written by bench.results.samples) as one frame, and the samples behind one table entry, checked against its records.

A cell recorded before samples were kept has no sidecar; a sidecar that cannot be read, or whose samples do not add
up to the cell's record (count, or the record's value from the samples), counts as none and is logged. A table entry
uses its samples only when every one of its cells has them (bench/report/tables.py); otherwise it keeps the
aggregate method of bench/report/stats.py.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.stats import sample_statistic
from bench.results.records import read_records
from bench.results.samples import samples_path

log = logging.getLogger(__name__)

# what identifies a cell's group of samples: one record per metric of it
CELL_KEYS = ("sweep", "config_hash", "subtask", "context_length", "depth")
# what a unit frame (`entry_units`) carries beside its metric columns; PAIR_KEYS of stats.py among them
UNIT_KEYS = ("seed", "cell", "data_hash", "subtask", "depth", "context_length", "sample")
FIELDS = ("config_hash", "task", "subtask", "context_length", "depth", "data_hash", "sample", "prediction", "gold",
          "positions")
TOLERANCE = 1e-9  # relative: a record's value recomputed from its samples


def _key(value: Any) -> str:
    """A key value as text, None and NaN alike as '' (records and sidecars spell a missing depth differently once
    in a frame), numbers by their float repr (JSON 0.5 and 0.50 are one depth; 120 and 120.0 one length)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return repr(float(value))
    return str(value)


def _read_sidecar(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("samples: cannot read %s (%s); its cell's intervals use its records only", path, e)
        return None
    if not all(isinstance(r, dict) and isinstance(r.get("metrics"), dict) for r in rows):
        log.warning("samples: %s holds a line that is not a sample; its cell's intervals use its records only", path)
        return None
    return rows


def load_samples(records_files: list[Path]) -> pd.DataFrame:
    """Every sample of the cells recorded in `records_files`: one row per sample with `sweep` (the records' sweep
    field, as the report's frame has it), the sidecar's fields and one column per per-sample metric (exact_match,
    digit_accuracy, retrieval_recall; nll, tokens, bytes for perplexity). Cells without a sidecar have no rows;
    an empty frame when no cell has one."""
    frames = []
    for f in map(Path, records_files):
        if not f.is_file():
            continue
        cells = dict.fromkeys((r.get("sweep"), r["config_hash"]) for r in read_records(f)
                              if isinstance(r, dict) and r.get("config_hash"))
        for sweep, config_hash in cells:
            rows = _read_sidecar(samples_path(f, config_hash))
            if not rows:
                continue
            # the metrics as columns; a metric named like a field would be shadowed by the field
            flat = [{**r["metrics"], **{k: r.get(k) for k in FIELDS}, "config_hash": config_hash, "sweep": sweep}
                    for r in rows]
            frames.append(pd.DataFrame(flat))
    if not frames:
        return pd.DataFrame(columns=["sweep", *FIELDS])
    return pd.concat(frames, ignore_index=True)


def labelled_samples(samples: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The samples with their cell's mechanism label and training seed (from the report's frame `df`) and `family`,
    `<task>/<subtask>` as `summary.cells` names a task's subtasks; samples of cells not in `df` are dropped."""
    labels = df.drop_duplicates(["sweep", "config_hash"]).set_index(["sweep", "config_hash"])[["mechanism", "seed"]]
    out = samples.join(labels, on=["sweep", "config_hash"], how="inner")
    named = out["subtask"].map(lambda s: isinstance(s, str) and bool(s)).astype(bool)
    return out.assign(family=out["task"].where(~named, out["task"] + "/" + out["subtask"].astype(str)))


def index_samples(samples: pd.DataFrame | None) -> dict[tuple, np.ndarray] | None:
    """{normalised CELL_KEYS: row positions in `samples`}, or None when there are no samples at all."""
    if samples is None or samples.empty:
        return None
    groups = samples.groupby(list(CELL_KEYS), dropna=False, sort=False).indices
    index: dict[tuple, np.ndarray] = {}
    for key, rows in groups.items():
        index.setdefault(tuple(_key(k) for k in key), np.asarray(rows))
    return index


def _consistent(cell: pd.Series, group: pd.DataFrame, metric: str) -> bool:
    """Whether the samples add up to the record: the count (tokens for perplexity) and the value."""
    stat = sample_statistic(metric)
    columns = [c for c in (stat.numerator, stat.denominator) if c is not None]
    if any(c not in group for c in columns):
        return False
    values = group[columns].to_numpy(float)
    if not np.isfinite(values).all():
        return False
    count = len(group) if stat.count is None else float(group[stat.count].sum())
    if count != cell["n"]:
        return False
    numerator = sum(group[stat.numerator].astype(float).tolist())
    denominator = float(count) if stat.denominator is None else sum(group[stat.denominator].astype(float).tolist())
    return math.isclose(stat.point(numerator, denominator), float(cell["value"]), rel_tol=TOLERANCE,
                        abs_tol=TOLERANCE)


def entry_units(cells: pd.DataFrame, samples: pd.DataFrame | None, index: dict[tuple, np.ndarray] | None,
                metric: str) -> pd.DataFrame | None:
    """The samples behind the records `cells` (one table entry's, or one side of a paired comparison; all of one
    metric) as units for bench.report.stats: UNIT_KEYS (keys normalised to text, `cell` numbering the records in
    order) plus the metric's columns, each cell's samples in sample order. None unless every cell has samples that
    add up to its record."""
    if index is None or samples is None or cells.empty:
        return None
    stat = sample_statistic(metric)
    columns = [c for c in (stat.numerator, stat.denominator, stat.count) if c is not None]
    columns = list(dict.fromkeys(columns))
    parts = []
    for i, (_, cell) in enumerate(cells.iterrows()):
        rows = index.get(tuple(_key(cell.get(k)) for k in CELL_KEYS))
        if rows is None:
            return None
        group = samples.iloc[rows]
        if not _consistent(cell, group, metric):
            log.warning("samples: %s/%s %s at %s (depth %s) do not add up to its %s record; the entry uses its "
                        "records only", cell.get("sweep"), cell.get("config_hash"), cell.get("subtask"),
                        cell.get("context_length"), cell.get("depth"), metric)
            return None
        group = group.sort_values("sample", kind="stable")
        parts.append(pd.DataFrame({
            "seed": cell.get("seed"), "cell": i, "data_hash": _key(cell.get("data_hash")),
            "subtask": _key(cell.get("subtask")), "depth": _key(cell.get("depth")),
            "context_length": _key(cell.get("context_length")), "sample": group["sample"].to_numpy(int),
            **{c: group[c].to_numpy(float) for c in columns}}))
    return pd.concat(parts, ignore_index=True)
