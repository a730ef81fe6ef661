"""Comparison tables: mechanism x context length per task and metric as mean with a 95% CI, the best value per
column marked, paired differences against `full`, and an effective length per mechanism — written as Markdown,
CSV and LaTeX.

Each entry (and each paired comparison, both sides) is estimated from its per-sample outcomes when every one of its
cells has samples that add up to its record (bench/report/samples.py), and otherwise from its records exactly as
before samples were kept (bench/report/stats.py says how each interval is made)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

import mechanisms
from bench.core.errors import ConfigError
from bench.report.samples import entry_units, index_samples
from bench.report.stats import Estimate, estimate, paired_difference, sample_estimate, sample_paired_difference
from bench.results.summary import base_name, ordered

LOWER_IS_BETTER = {"ppl", "bits_per_byte", "nll"}
REFERENCE = "full"
CALIBRATION = 0.9  # a task family counts in verdicts only where the reference reaches this in its training length
CALIBRATION_METRIC = "exact_match"


def file_stem(name: str) -> str:
    """A name usable as a file name: a task label such as `longqa/single_fact` must not become a folder."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def estimates(df: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (task, metric, mechanism, context_length) with mean, low, high, n: from the entry's samples
    (`bench.report.samples.load_samples`) when all its cells have them, else from its records."""
    rows = []
    index = index_samples(samples)
    for (task, metric, mech, length), group in df.groupby(["task", "metric", "mechanism", "context_length"]):
        units = entry_units(group, samples, index, metric)
        if units is not None:
            e = sample_estimate(units, metric)
        else:
            e = estimate(group)
            if not higher_is_better(metric) and len(group["seed"].unique()) < 2:  # not in [0, 1]: no Bernoulli CI
                e = Estimate(e.mean, float("nan"), float("nan"), e.n)
        rows.append({"task": task, "metric": metric, "mechanism": mech, "context_length": length,
                     "mean": e.mean, "low": e.low, "high": e.high, "n": e.n})
    return pd.DataFrame(rows)


MIN_SEEDS = 3  # a comparison claim needs an interval over at least this many training seeds


def training_seeds(cells: pd.DataFrame) -> float:
    """How many training seeds the cells pool, the fewest at any one length (a sweep with seed 1 at one length and
    seeds 2-3 at another is not three seeds); infinite for a pretrained model evaluated as it is (`hf-<name>`
    without `-lora`), which has no training seed to vary and is never a probe for lack of one."""
    model = cells["model"].astype(str) if "model" in cells else pd.Series("", index=cells.index)
    trained = cells[~(model.str.startswith("hf-") & ~model.str.contains("-lora"))]
    if trained.empty:
        return math.inf
    return trained.groupby(trained["context_length"].fillna(-1))["seed"].nunique().min()


def seeds_column(a: float, b: float) -> int | None:
    """The seeds a comparison rests on, as the tables write it: None where neither side was trained."""
    fewest = min(a, b)
    return None if math.isinf(fewest) else int(fewest)


def paired(df: pd.DataFrame, samples: pd.DataFrame | None = None, by: str = "context_length",
           reference: str = REFERENCE) -> pd.DataFrame:
    """Every mechanism minus `reference` (full attention) on the cells both scored on the same samples: a paired
    bootstrap over those samples when the cells of both sides have them, else from the records (sides redrawn
    independently). A task family full attention cannot do in its training length gets 'uncalibrated (full:
    <score>)', not a verdict. Only runs of the reference's own models (training budget, learning rate) are
    paired with it: a mechanism trained 1000 steps is not judged against full attention trained 150."""
    rows = []
    index = index_samples(samples)
    uncalibrated = uncalibrated_tasks(df)
    for (task, metric, length), group in df.groupby(["task", "metric", by]):
        ref = group[group["mechanism"] == reference]
        ref_units = entry_units(ref, samples, index, metric)
        for mech, cells in group[group["mechanism"] != reference].groupby("mechanism"):
            if "model" in group and not set(cells["model"].astype(str)) <= set(ref["model"].astype(str)):
                continue
            units = entry_units(cells, samples, index, metric) if ref_units is not None else None
            if units is not None:
                d = sample_paired_difference(units, ref_units, metric)
            else:
                d = paired_difference(cells, ref) if not ref.empty else None
            if d is not None:
                judged = verdict(d, metric)
                if task in uncalibrated:
                    judged = f"uncalibrated ({REFERENCE}: {uncalibrated[task]:.2f})"
                rows.append({"task": task, "metric": metric, "mechanism": mech, by: length,
                             "diff": d.mean, "low": d.low, "high": d.high, "n": d.n, "verdict": judged,
                             "seeds": seeds_column(training_seeds(cells), training_seeds(ref))})
    return pd.DataFrame(rows)


HEADLINE_METRICS = ("exact_match", "ppl")  # what the one-screen verdict compares, per task family


def regimes(df: pd.DataFrame) -> pd.DataFrame:
    """The headline cells (HEADLINE_METRICS, no whole-document rows) with `regime`: 'in length' or 'beyond' full
    attention's training length for that task, so that both sides of any pair fall in the same regime."""
    cells = df[df["metric"].isin(HEADLINE_METRICS) & ~df["task"].str.contains("/overall")]
    # every run of the reference (at several learning rates its labels differ: `full scratch6000@lr0.003`)
    limit = cells[cells["mechanism"].map(base_name) == REFERENCE].groupby("task")["train_length"].max()
    cells = cells[cells["task"].isin(limit.index)]
    in_length = cells["context_length"].to_numpy() <= cells["task"].map(limit).to_numpy()
    return cells.assign(regime=np.where(in_length, "in length", "beyond"))


def _overview_table(pairs: pd.DataFrame, row: str) -> pd.DataFrame:
    pairs = pairs[~pairs["verdict"].str.startswith("uncalibrated")]  # listed under the table, not in it
    if pairs.empty:
        return pd.DataFrame()
    pairs = pairs.assign(column=pairs["task"] + " · " + pairs["regime"], text=[
        (v if v.startswith("no interval") else f"{v} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        + (f" (probe: {int(seeds)} seed{'s' * (seeds > 1)})" if pd.notna(seeds) and seeds < MIN_SEEDS else "")
        for v, d, lo, hi, seeds in pairs[["verdict", "diff", "low", "high", "seeds"]].itertuples(index=False)])
    table = pairs.pivot(index=row, columns="column", values="text")
    columns = sorted(table.columns, key=lambda c: (c.split(" · ")[0], c.endswith("beyond")))
    return table.reindex(columns=columns).fillna("")


def identity(name: str, options: dict) -> tuple[str, dict] | None:
    """(mechanism, options) a run computes: its own, or the mechanism it equals (`same_as`: FAM with no feedback
    tokens is BSWA). None for a mechanism (or option) this checkout does not know."""
    try:
        cls = mechanisms.get(name)
        same = cls.same_as(mechanisms.options(name, **options))
    except (ConfigError, TypeError):
        return None
    return same if same is not None else (name, options)


def baseline_overview(df: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each memory mechanism against its own-span baseline (the mechanism's `span_baseline`: Infini against the
    sliding window with W = segment, FAM against BSWA with the same blocks), where a memory claim lives; same
    layout as `verdict_overview`, rows '<mechanism> − <baseline>'. Only pairs both present in the records, and
    run as the same models (training budget, learning rate)."""
    cells = regimes(df)
    uncalibrated = uncalibrated_tasks(df)
    runs = dict(list(cells.groupby("mechanism")))
    # the models (budget, learning rate) a label ran as: a baseline must have run as the same ones
    models = {label: frozenset(g["model"]) if "model" in g else frozenset() for label, g in runs.items()}
    known = {label: identity(base_name(label), g["options"].iloc[0] or {}) for label, g in runs.items()}
    known = {label: value for label, value in known.items() if value is not None}
    parts = []
    for label in ordered(known):
        name, opts = known[label]
        target = mechanisms.get(name).span_baseline(mechanisms.options(name, **opts))
        if target is None:
            continue
        name, wanted = target
        matches = [b for b in ordered(known) if known[b][0] == name and models[b] == models[label]
                   and all(known[b][1].get(k) == v for k, v in wanted.items())]
        for base in matches[:1]:
            pairs = paired(cells[cells["mechanism"].isin([label, base])], samples, by="regime", reference=base)
            if not pairs.empty:
                pairs = pairs.assign(pair=f"{label} − {base}")
                pairs.loc[pairs["task"].isin(uncalibrated), "verdict"] = "uncalibrated"
                parts.append(pairs)
    if not parts:
        return pd.DataFrame()
    table = _overview_table(pd.concat(parts, ignore_index=True), "pair")
    return table.reindex([p for p in dict.fromkeys(pd.concat(parts)["pair"]) if p in table.index])


def verdict_overview(df: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """The one-screen verdict: mechanism x (task family, in length | beyond length) -> the paired difference to
    full attention pooled over the lengths of that regime, as '<verdict> <diff> [<low>, <high>]'. The regime is
    judged against the reference's training length, so both sides of a pair fall in the same one. Position buckets
    of perplexity count as lengths; whole-document rows are left out; uncalibrated families are left out (the
    dashboard lists them under the table with the reference's score)."""
    cells = regimes(df)
    if cells.empty:
        return pd.DataFrame()
    pairs = paired(cells, samples, by="regime")
    if pairs.empty:
        return pd.DataFrame()
    table = _overview_table(pairs, "mechanism")
    return table.reindex(index=ordered(table.index)) if not table.empty else table


def reference_scores(df: pd.DataFrame) -> dict[str, float]:
    """Per task (family): the reference mechanism's mean exact match at context lengths within its training
    length; where it ran in several configurations (labels: two learning rates), the best of them, the reference
    at its best recipe. Tasks without that metric (perplexity) have none."""
    ref = df[(df["mechanism"].map(base_name) == REFERENCE) & (df["metric"] == CALIBRATION_METRIC)]
    ref = ref[ref["context_length"] <= ref["train_length"]]
    scores: dict[str, float] = {}
    for (task, _), g in ref.groupby(["task", "mechanism"]):
        scores[task] = max(scores.get(task, -math.inf), float((g["value"] * g["n"]).sum() / g["n"].sum()))
    return scores


def uncalibrated_tasks(df: pd.DataFrame, threshold: float = CALIBRATION) -> dict[str, float]:
    """Task families the reference cannot do in its own training length (score < threshold): any mechanism's
    number there measures noise, so the report draws no verdict from them."""
    return {task: score for task, score in reference_scores(df).items() if score < threshold}


def verdict(d: Estimate, metric: str) -> str:
    """'better' / 'worse' than full when the whole CI is on one side of 0, 'tie' when it covers 0, and
    'no interval' when none could be computed (never reported as a tie)."""
    if math.isnan(d.low):
        return "no interval"
    if d.contains(0.0):
        return "tie"
    return "better" if (d.low > 0) == higher_is_better(metric) else "worse"


def effective_length(est: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per task/metric/mechanism: the longest context length up to which the mean stays >= threshold at every
    evaluated length (0 when even the shortest fails). Higher-is-better metrics only."""
    rows = []
    for (task, metric, mech), group in est.groupby(["task", "metric", "mechanism"]):
        if not higher_is_better(metric):
            continue
        reached = 0
        for length, mean in group.sort_values("context_length")[["context_length", "mean"]].itertuples(index=False):
            if mean < threshold:
                break
            reached = int(length)
        rows.append({"task": task, "metric": metric, "mechanism": mech, "effective_length": reached})
    if not rows:
        return pd.DataFrame(rows)
    rank = {label: i for i, label in enumerate(ordered(est["mechanism"]))}
    return pd.DataFrame(rows).sort_values(["task", "metric", "mechanism"], key=lambda c: c.map(rank) if
                                          c.name == "mechanism" else c, ignore_index=True)


def _cell(mean: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.2f}, {high:.2f}]"


def _latex_escape(text: str) -> str:
    for ch in "\\&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    return text


def wide(est: pd.DataFrame, task: str, metric: str, bold: tuple[str, str]) -> pd.DataFrame:
    """mechanism x context_length strings, the best mean per column wrapped in `bold`."""
    sub = est[(est["task"] == task) & (est["metric"] == metric)]
    best = sub.groupby("context_length")["mean"].transform("max" if higher_is_better(metric) else "min")
    text = [
        (f"{bold[0]}{_cell(m, lo, hi)}{bold[1]}" if m == b else _cell(m, lo, hi))
        for m, lo, hi, b in zip(sub["mean"], sub["low"], sub["high"], best, strict=True)
    ]
    table = sub.assign(text=text).pivot(index="mechanism", columns="context_length", values="text")
    table.columns = [str(c) for c in table.columns]
    return table.reindex(ordered(table.index)).fillna("–")


def write_tables(df: pd.DataFrame, est: pd.DataFrame, out: Path, threshold: float,
                 samples: pd.DataFrame | None = None) -> dict[str, list[Path]]:
    """All tables under out/tables/ from the cells (and their samples, if any) and their `estimates`; returns
    {'<task> — <metric>': [md, csv, tex]} plus paired / effective."""
    out = out / "tables"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for task, metric in est[["task", "metric"]].drop_duplicates().itertuples(index=False):
        stem = out / file_stem(f"{task}_{metric}")
        sub = est[(est["task"] == task) & (est["metric"] == metric)]
        sub.to_csv(stem.with_suffix(".csv"), index=False)
        stem.with_suffix(".md").write_text(wide(est, task, metric, ("**", "**")).to_markdown() + "\n")
        latex = wide(est, task, metric, ("\\textbf{", "}"))
        latex.index = [_latex_escape(str(i)) for i in latex.index]
        latex.index.name = "mechanism"
        stem.with_suffix(".tex").write_text(latex.to_latex(escape=False))
        written[f"{task} — {metric}"] = [stem.with_suffix(s) for s in (".md", ".csv", ".tex")]
    pairs = paired(df, samples)
    if not pairs.empty:
        pairs.to_csv(out / "paired_vs_full.csv", index=False)
        written["paired vs full"] = [out / "paired_vs_full.csv"]
    eff = effective_length(est, threshold)
    if not eff.empty:
        eff.to_csv(out / "effective_length.csv", index=False)
        (out / "effective_length.md").write_text(eff.to_markdown(index=False) + "\n")
        written["effective length"] = [out / "effective_length.md", out / "effective_length.csv"]
    return written
