"""The report (`make report`): tables with confidence intervals, figures and an HTML dashboard, all derived from
one or more sweeps' records.jsonl and written to results/<sweep>/report/."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.report import dashboard, plots, sanity, tables
from bench.results.records import read_records
from bench.results.summary import cells, introspection_table, unfinished_table

log = logging.getLogger(__name__)


def build_report(records_files: list[Path], out: Path, threshold: float = 0.5) -> Path:
    """Write tables/, plots/ and index.html under `out`; returns the dashboard's path."""
    records = [r for f in records_files for r in read_records(f)]
    if not records:
        raise FileNotFoundError(f"no records in {', '.join(map(str, records_files))}")
    df = cells(records)
    out.mkdir(parents=True, exist_ok=True)
    est = tables.estimates(df)
    written = tables.write_tables(df, est, out, threshold)
    figures = plots.write_plots(df, est, out)
    extra = {
        "Paired difference against full (same samples; 95% CI)": tables.paired(df),
        f"Effective length (longest length with mean >= {threshold} at every shorter length)":
            tables.effective_length(est, threshold),
        "Mechanism statistics after evaluation (per layer)": introspection_table(records),
    }
    title = " + ".join(sorted(df["sweep"].unique()))
    sources = [str(f) for f in records_files]
    page = dashboard.render(df, est, extra, sanity.evaluate_gates(df), figures, out, title, sources,
                            unfinished_table(records_files))
    log.info("report: %d tables, %d figures -> %s", len(written), len(figures), page)
    return page

