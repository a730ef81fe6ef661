"""The sweep's summary tables, derived only from records.jsonl: mechanism x context length per task and metric
(mean over depths and samples), accuracy by needle depth, and the mechanisms' introspection statistics.
Richer reports build on the same records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

import mechanisms
from bench.core import atomic
from bench.core.errors import ConfigError
from bench.results.manifest import Manifest, manifest_path
from bench.results.records import read_records

DEPTH_METRIC = "exact_match"  # the metric broken down by depth


def base_name(label: str) -> str:
    """`infini(update=delta) base1500+600 [sweep]` -> `infini`."""
    return label.split("(", 1)[0].split(" ", 1)[0]


def display_rank(name: str) -> float:
    """A mechanism's `display_order` (mechanisms/base.py); one this checkout does not know goes last."""
    try:
        return mechanisms.get(name).display_order
    except ConfigError:
        return float("inf")


def ordered(labels) -> list[str]:
    """Mechanism labels in their mechanisms' display order, then alphabetically."""
    return sorted(set(labels), key=lambda lab: (display_rank(base_name(lab)), lab))


def _weighted_mean(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    df = df.assign(weighted=df["value"] * df["n"])
    grouped = df.groupby(keys)[["weighted", "n"]].sum()
    return grouped["weighted"] / grouped["n"]


def _defaults(mechanism: str) -> dict[str, str]:
    """The registered mechanism's default options as strings ({} for a mechanism this checkout does not know)."""
    try:
        return {k: str(v) for k, v in dataclasses.asdict(mechanisms.options(mechanism)).items()}
    except ConfigError:
        return {}


def labelled(records: list[dict]) -> pd.DataFrame:
    """Records as a frame whose `mechanism` column tells apart runs that must never be averaged together and says
    how a run differs from the defaults: it adds the options that vary between runs of one mechanism or differ from
    its defaults (`infini(update=delta)`), and the parts of the model name that vary (its training budget, e.g.
    `base1500+600`); where one label still covers several configurations of a task, the sweep (`[infini_recipes]`)
    or else the config hash."""
    df = pd.DataFrame(records)
    labels = df["mechanism"].copy()
    for mech, group in df.groupby("mechanism"):
        options = pd.DataFrame(list(group["options"]), index=group.index).astype(str)
        defaults = _defaults(mech)
        shown = [c for c in options.columns
                 if options[c].nunique() > 1 or (c in defaults and (options[c] != defaults[c]).any())]
        models = group["model"].str.split("-", expand=True).astype(str)
        model_parts = [c for c in models.columns if models[c].nunique() > 1]
        for i in group.index:
            option_text = ", ".join(f"{c}={options.at[i, c]}" for c in shown)
            labels[i] = mech + (f"({option_text})" if option_text else "") + "".join(
                f" {models.at[i, c]}" for c in model_parts)
    df = df.assign(mechanism=labels)
    for _, group in df.groupby(["mechanism", "task"]):
        if group["config_hash"].nunique() > 1:
            tag = group["sweep"] if group[["sweep", "config_hash"]].drop_duplicates()["sweep"].is_unique else (
                group["config_hash"].str[:8])
            df.loc[group.index, "mechanism"] = group["mechanism"] + " [" + tag + "]"
    return df


def cells(records: list[dict]) -> pd.DataFrame:
    """Evaluation cells only (records with a context length), lengths as ints. A task's subtasks (long-QA
    families, whole-document perplexity) are never averaged together: `task` becomes `<task>/<subtask>`."""
    df = labelled(records)
    df = df[df["context_length"].notna()].astype({"context_length": int})
    sub = df["subtask"].notna() if "subtask" in df else pd.Series(False, index=df.index)
    return df.assign(task=df["task"].where(~sub, df["task"] + "/" + df["subtask"].astype(str)))


def summary_table(records: list[dict]) -> pd.DataFrame:
    means = _weighted_mean(cells(records), ["task", "metric", "mechanism", "context_length"])
    return means.unstack("context_length")


def depth_table(records: list[dict]) -> pd.DataFrame:
    """(task, context_length, mechanism) x depth: depth 0 puts the needle right after the instruction (earliest
    segment/block), depth 1 right before the question (the latest)."""
    df = cells(records)
    df = df[df["depth"].notna() & (df["metric"] == DEPTH_METRIC)]
    return _weighted_mean(df, ["task", "context_length", "mechanism", "depth"]).unstack("depth")


def introspection_table(records: list[dict]) -> pd.DataFrame:
    """One row per (mechanism, task, layer), one column per statistic, from the records without a context length;
    values rounded to 3 places, blank where a statistic does not apply to that mechanism."""
    df = labelled(records)
    df = df[df["context_length"].isna()]
    if df.empty:
        return pd.DataFrame()
    table = df.pivot_table(index=["mechanism", "task", "subtask"], columns="metric", values="value", aggfunc="mean")
    rank = {label: i for i, label in enumerate(ordered(df["mechanism"]))}
    table = table.sort_index(level="mechanism", key=lambda labels: labels.map(rank), sort_remaining=True)
    flat = table.rename_axis(columns=None).reset_index().round(3)
    return flat.astype(object).where(flat.notna(), "")


def unfinished_table(records_files: list[Path]) -> pd.DataFrame:
    """Cells the sweeps' manifests mark `failed` (with the reason) or still `running` (a job in progress, or one
    killed before it finished: resuming the sweep reruns it)."""
    rows = []
    for f in records_files:
        for config_hash, e in Manifest(manifest_path(f)).read().items():
            if e.status != "done":
                options = ", ".join(f"{k}={v}" for k, v in sorted(e.options.items()))
                rows.append({"sweep": Path(f).parent.name, "mechanism": e.mechanism, "options": options,
                             "task": e.task, "status": e.status, "attempts": e.attempts,
                             "reason": e.error or "", "since": e.updated_at, "overrides": e.overrides,
                             "config": config_hash})
    return pd.DataFrame(rows)


def to_markdown(records: list[dict], unfinished: pd.DataFrame | None = None) -> str:
    parts = ["# Summary\n", "Mean over depths and samples; columns are context lengths in tokens (for perplexity: "
             "the end of each position bucket; for `perplexity/overall`: the longest document scored).\n"]
    if unfinished is not None and not unfinished.empty:
        parts.append(f"\n## Cells that did not finish ({len(unfinished)})\n\n"
                     f"{unfinished.drop(columns='sweep').to_markdown(index=False)}\n")
    for (task, metric), block in summary_table(records).groupby(level=["task", "metric"]):
        block = block.droplevel(["task", "metric"]).dropna(axis=1, how="all")
        block = block.reindex(ordered(block.index))
        parts.append(f"\n## {task} — {metric}\n\n{block.to_markdown(floatfmt='.3f')}\n")
    by_depth = depth_table(records)
    for (task, length), block in by_depth.groupby(level=["task", "context_length"]):
        block = block.droplevel(["task", "context_length"]).dropna(axis=1, how="all")
        block = block.reindex(ordered(block.index))
        parts.append(f"\n## {task} — {DEPTH_METRIC} by needle depth at {length} tokens\n\n"
                     f"{block.to_markdown(floatfmt='.2f')}\n")
    stats = introspection_table(records)
    if not stats.empty:
        parts.append(f"\n## Mechanism statistics after evaluation (per layer)\n\n{stats.to_markdown(index=False)}\n")
    return "".join(parts)


def write_summary(records_file: Path) -> Path:
    text = to_markdown(read_records(records_file), unfinished_table([records_file]))
    out = Path(records_file).with_name("summary.md")
    atomic.write_text(out, text)
    print(text)
    return out

