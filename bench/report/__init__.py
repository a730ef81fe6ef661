"""The report (`make report`): tables with confidence intervals, figures and an HTML dashboard, all derived from
one or more sweeps' records.jsonl and written to results/<sweep>/report/."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from bench.report import capacity, dashboard, misses, plots, sanity, tables
from bench.report.samples import load_samples
from bench.results.summary import cells, introspection_table, load_sweeps, non_finite_note, split_finite

log = logging.getLogger(__name__)

NON_FINITE_GATE = "every record holds a finite value (records with NaN/inf are left out of every table and figure)"


def gates(df: pd.DataFrame, finite: pd.DataFrame, excluded: list[dict]) -> list[sanity.Gate]:
    """The sanity gates on the finite cells, except the perplexity gate, which judges every cell (an infinite
    perplexity is what it is there to catch), plus one gate that fails when records were left out as non-finite."""
    judged = []
    if not finite.empty:
        ppl = sanity.perplexity_finite_beyond_training(df)
        judged = [ppl if g.name == ppl.name else g for g in sanity.evaluate_gates(finite)]
    if excluded:
        judged.append(sanity.Gate(NON_FINITE_GATE, "fail", non_finite_note(excluded)))
    return judged


def build_report(records_files: list[Path], out: Path, threshold: float = 0.5) -> Path:
    """Write tables/, plots/ and index.html under `out`; returns the dashboard's path. A sweep with no records
    but cells that did not finish (every cell failed) still gets a dashboard listing them and their reasons.
    Raises MissingRecords / RecordsError (bench.results.summary) when there is nothing to show or a store is
    damaged."""
    records_files = [Path(f) for f in records_files]
    every, unfinished = load_sweeps(records_files)
    records, excluded = split_finite(every)
    out.mkdir(parents=True, exist_ok=True)
    sources = [str(f) for f in records_files]
    if not records:  # nothing finished (or nothing finite): the dashboard shows why
        df = pd.DataFrame(columns=["sweep", "mechanism", "task", "metric", "created_at", "git_sha", "config_hash"])
        est = pd.DataFrame(columns=["task", "metric", "mechanism", "context_length", "mean", "low", "high", "n"])
        title = " + ".join(sorted({f.parent.name for f in records_files}))
        judged = [sanity.Gate("the sweep has records", "fail",
                              "no cell finished: see the cells that did not finish" if not unfinished.empty else
                              "no record holds a finite value")] + gates(df, df, excluded)
        page = dashboard.render(df, est, {}, judged, [], out, title, sources, unfinished)
        log.info("report: no records, %d unfinished cells -> %s", len(unfinished), page)
        return page
    df = cells(records)
    every_cell = cells(every) if excluded else df
    samples = load_samples(records_files)  # per-sample outcomes of the cells that have them
    est = tables.estimates(df, samples)
    written = tables.write_tables(df, est, out, threshold, samples)
    figures = plots.write_plots(df, est, out, samples)
    frontier, distances = capacity.frontier_table(df, est), plots.distance_table(df, samples)
    figures += capacity.plot_frontier(frontier, out / "plots")
    spans, rates = capacity.span_split(df, samples), capacity.learning_rates(df, frontier)
    for name, frame in {"frontier": frontier, "frontier_decisive": capacity.decisive_pairs(frontier),
                        "learning_rates": rates, "recall_by_distance": distances, "recall_by_span": spans}.items():
        if not frame.empty:
            frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    extra = {
        "Paired difference against full (same samples; 95% CI)": tables.paired(df, samples),
        "Capacity frontier (each state setting at its best learning rate; 95% CI over seeds and samples)": frontier,
        f"Decisive frontier differences (carried state equal within {capacity.EQUAL_STATE:g}x, >= "
        f"{capacity.MIN_SEEDS} seeds each, intervals apart)":
            capacity.decisive_pairs(frontier),
        "Learning rates per frontier point (mean on the seeds every rate shares; shown: the rate the frontier "
        f"keeps, the best with >= {capacity.MIN_SEEDS} seeds)": rates,
        "Recall by key -> query distance against the local span s (beyond 2s: through memory only)": spans,
        f"Effective length (longest length with mean >= {threshold} at every shorter length)":
            tables.effective_length(est, threshold),
        "Mechanism statistics after evaluation (per layer)": introspection_table(records),
    }
    title = " + ".join(sorted(df["sweep"].unique()))
    overview, baseline = tables.verdict_overview(df, samples), tables.baseline_overview(df, samples)
    if not overview.empty:
        overview.reset_index(names="mechanism").to_csv(out / "tables" / "verdict_overview.csv", index=False)
    if not baseline.empty:
        baseline.reset_index(names="pair").to_csv(out / "tables" / "verdict_own_span_baseline.csv", index=False)
    links = misses.write_miss_pages(df, samples, out)
    page = dashboard.render(df, est, extra, gates(every_cell, df, excluded), figures, out, title, sources,
                            unfinished, overview, tables.uncalibrated_tasks(df), baseline, links)
    log.info("report: %d tables, %d figures -> %s", len(written), len(figures), page)
    return page
