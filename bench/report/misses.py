"""The prompts behind a verdict: for each mechanism and task family, a page listing the samples it did not get
right (prediction against gold, the needle/fact positions, the training seed), linked from the verdict tables, so
a reader can check what a number is made of. Read from the samples' sidecars; families scored by a 0/1-style
`exact_match` only (perplexity has no misses)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from bench.core import atomic
from bench.report.samples import labelled_samples
from bench.report.tables import CALIBRATION_METRIC, file_stem

MAX_ROWS = 500  # per page: enough to read the pattern, small enough to open
COLUMNS = ["context_length", "depth", "seed", "sample", CALIBRATION_METRIC, "prediction", "gold", "positions"]


def _page(mechanism: str, family: str, missed: pd.DataFrame, total: int) -> str:
    shown = missed.head(MAX_ROWS)
    cells = shown.assign(positions=[json.dumps(p) if isinstance(p, dict) else "" for p in shown["positions"]])
    table = cells[COLUMNS].to_html(index=False, border=0, na_rep="")
    more = f" (the first {MAX_ROWS} shown)" if len(missed) > MAX_ROWS else ""
    title = html.escape(f"{mechanism} on {family}")
    return (f"<!doctype html><meta charset='utf-8'><title>{title}: misses</title>"
            "<style>body{font-family:sans-serif;margin:1.5rem}table{border-collapse:collapse;font-size:.85rem}"
            "td,th{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:left}</style>"
            f"<h1>{title}</h1><p>{len(missed)} of {total} samples not fully right{more}, in cell order. "
            f"<a href='../index.html'>back to the dashboard</a></p>{table}")


def write_miss_pages(df: pd.DataFrame, samples: pd.DataFrame | None, out: Path) -> dict[tuple[str, str], str]:
    """Write report/samples/<mechanism>_<family>.html; returns {(mechanism label, family): path relative to
    `out`} for the verdict tables to link."""
    if samples is None or samples.empty or CALIBRATION_METRIC not in samples:
        return {}
    scored = labelled_samples(samples, df)
    scored = scored[scored[CALIBRATION_METRIC].notna()]
    links = {}
    for (mechanism, family), group in scored.groupby(["mechanism", "family"]):
        missed = group[group[CALIBRATION_METRIC] < 1].sort_values(["context_length", "depth", "seed", "sample"])
        relative = f"samples/{file_stem(mechanism)}_{file_stem(family)}.html"
        atomic.write_text(out / relative, _page(mechanism, family, missed, len(group)))
        links[(mechanism, family)] = relative
    current = {out / r for r in links.values()}
    for stale in (out / "samples").glob("*.html"):  # pages of labels this report no longer has
        if stale not in current:
            stale.unlink()
    return links
