"""The sweep's summary tables, derived only from records.jsonl: mechanism x context length per task and metric
(mean over depths and samples), accuracy by needle depth, and the mechanisms' introspection statistics.
Richer reports build on the same records."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

import mechanisms
from bench.core import atomic
from bench.core.errors import ConfigError
from bench.results.manifest import Manifest, manifest_path
from bench.results.phases import PHASES, read_phases
from bench.results.records import read_records

DEPTH_METRIC = "exact_match"  # the metric broken down by depth
# what a summary or report reads of every record: a line without them is not a record
REQUIRED = ("sweep", "mechanism", "options", "task", "model", "config_hash", "context_length", "metric", "value", "n")
RECOVER = "rerunning the sweep recomputes cells whose records are missing"


class RecordsError(ValueError):
    """A records store (or its manifest) a summary or report cannot read, as one line that names the file and
    says how to recover; the command-line tools print it after `error: ` and exit 2."""


class MissingRecords(FileNotFoundError):
    """Neither records nor unfinished cells to show: the sweep has not run."""


def base_name(label: str) -> str:
    """`infini(update=delta) base1500+600 [sweep]` -> `infini`."""
    return label.split("(", 1)[0].split(" ", 1)[0]


def _capability(name: str, attribute: str, unknown):
    """A class attribute of a registered mechanism (mechanisms/base.py), or `unknown` for a name this checkout does
    not register (records from another checkout or plugin still summarise)."""
    try:
        return getattr(mechanisms.get(name), attribute)
    except ConfigError:
        return unknown


def display_rank(name: str) -> float:
    """A mechanism's `display_order`; one this checkout does not know goes last."""
    return _capability(name, "display_order", float("inf"))


def compute_options(name: str) -> tuple[str, ...]:
    """A mechanism's `compute_options`: knobs of cost, not of carried state."""
    return tuple(_capability(name, "compute_options", ()))


def ordered(labels) -> list[str]:
    """Mechanism labels in their mechanisms' display order, then alphabetically."""
    return sorted(set(labels), key=lambda lab: (display_rank(base_name(lab)), lab))


def is_finite(record: dict) -> bool:
    value = record.get("value")
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def split_finite(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records with a finite value, the others). Records written before records refused NaN/inf can hold them;
    summaries and reports leave them out of every mean and say so (`non_finite_note`)."""
    return [r for r in records if is_finite(r)], [r for r in records if not is_finite(r)]


def _where(r: dict) -> str:
    """`full passkey exact_match at 128 tokens, depth 0.0 = nan`: which cell a record is, and its value."""
    task = r.get("task") if r.get("subtask") is None else f"{r.get('task')}/{r.get('subtask')}"
    at = f" at {r['context_length']} tokens" if r.get("context_length") is not None else ""
    depth = f", depth {r['depth']}" if r.get("depth") is not None else ""
    return f"{r.get('mechanism')} {task} {r.get('metric')}{at}{depth} = {r.get('value')}"


def non_finite_note(excluded: list[dict], shown: int = 3) -> str:
    """One line: how many records were left out as non-finite, and the first few of them ('' for none)."""
    if not excluded:
        return ""
    more = f", and {len(excluded) - shown} more" if len(excluded) > shown else ""
    return (f"{len(excluded)} record{'s' if len(excluded) > 1 else ''} excluded from every mean as non-finite "
            f"(NaN/inf): {'; '.join(_where(r) for r in excluded[:shown])}{more}")


def _weighted_mean(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Mean of `value` weighted by `n`; a non-finite value is left out (a NaN summed by pandas would count as 0
    while its `n` still divides)."""
    df = df[df["value"].astype(float).map(math.isfinite).astype(bool)]  # a Series: an empty list would select columns
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
        # as strings before pandas sees them: an option whose default is None would otherwise become NaN ("nan")
        options = pd.DataFrame([{k: str(v) for k, v in o.items()} for o in group["options"]],
                               index=group.index).fillna("nan")
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
        if group["config_hash"].nunique() > 1 and not seed_replicates(group):
            tag = group["sweep"] if group[["sweep", "config_hash"]].drop_duplicates()["sweep"].is_unique else (
                group["config_hash"].str[:8])
            df.loc[group.index, "mechanism"] = group["mechanism"] + " [" + tag + "]"
    return df


def seed_replicates(group: pd.DataFrame) -> bool:
    """Whether the configurations under one label are training seeds of one study: each config hash has its own
    seed, and all were evaluated on exactly the same samples (the same data hashes per cell), so nothing but the
    training seed sets them apart that the records can tell. Their cells then share the label and the report's
    intervals resample the seeds."""
    per_config = group.groupby("config_hash")
    seeds = per_config["seed"].nunique()
    if (seeds != 1).any() or group["seed"].nunique() != len(seeds):
        return False
    evaluated = [frozenset(map(tuple, cells[["context_length", "depth", "subtask", "data_hash"]].astype(str).values))
                 for _, cells in per_config]
    return all(e == evaluated[0] for e in evaluated)


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


CELL_PHASES = ("prepare", "base", "train", "model", "evaluate")  # runner.evaluate_cell's seconds, in its order


def timing_table(records_file: Path) -> pd.DataFrame:
    """Wall seconds of every finished cell's last run (from the manifest): preparing it (tokenizer, task data),
    getting the model (training it, or loading its cached checkpoint: the first cell of a mechanism and seed trains,
    the others load), of which training the shared base model and the cell's own, and evaluating. Columns the cells'
    code did not time are left out; cells recorded by code that timed nothing are left out."""
    rows = [{"mechanism": e.mechanism, "task": e.task, "overrides": e.overrides,
             **{f"{phase} s": e.seconds.get(phase) for phase in CELL_PHASES}}
            for e in Manifest(manifest_path(records_file)).read().values() if e.status == "done" and e.seconds]
    if not rows:
        return pd.DataFrame()
    rank = {label: i for i, label in enumerate(ordered(row["mechanism"] for row in rows))}
    rows.sort(key=lambda row: (rank[row["mechanism"]], row["task"], row["overrides"]))  # mechanism x task x seed
    return pd.DataFrame(rows).dropna(axis="columns", how="all")


def phase_table(recorded: dict[str, dict], cells: pd.DataFrame) -> pd.DataFrame:
    """Where a whole run's time went: the last `make bench`'s setup, sweep process and report (`recorded`, from
    timing.json), and the sweep's cells summed by phase (evaluation by task). Empty when neither says more than the
    per-cell table."""
    rows: list[tuple[str, float]] = [(PHASES[p], recorded[p]["seconds"]) for p in ("setup", "sweep") if p in recorded]
    if "train s" in cells:  # timed by phase (older cells timed only model and evaluate)
        timed = cells.dropna(subset=["train s"])
        load = timed["model s"] - timed["base s"] - timed["train s"]
        rows += [(f"  cells: preparation (tokenizer, task data; {len(timed)} cells)", timed["prepare s"].sum()),
                 ("  cells: training the shared base model", timed["base s"].sum()),
                 ("  cells: training their own models", timed["train s"].sum()),
                 ("  cells: loading cached models", load.clip(lower=0).sum())]
        rows += [(f"  cells: evaluation, {task}", seconds)
                 for task, seconds in timed.groupby("task", sort=False)["evaluate s"].sum().items()]
    if "report" in recorded:
        rows.append((PHASES["report"], recorded["report"]["seconds"]))
    if not rows:
        return pd.DataFrame()
    if all(p in recorded for p in PHASES):
        rows.append(("total (setup + sweep + report)", sum(recorded[p]["seconds"] for p in PHASES)))
    return pd.DataFrame(rows, columns=["phase", "seconds"])


def timing_markdown(records_file: Path) -> str:
    table = timing_table(records_file)
    recorded = read_phases(records_file)
    phases = phase_table(recorded, table)
    out = ""
    if not phases.empty:
        when = f" (timing.json: the last `make bench`, {max(v['at'] for v in recorded.values())})" if recorded else ""
        out += (f"\n## Wall time\n\nMeasured by the run itself{when}; the cells' rows sum each cell's last run "
                f"(manifest.json), so a resumed sweep's process time covers only the cells it ran.\n\n"
                f"{phases.to_markdown(index=False, floatfmt=',.0f')}\n")
    if table.empty:
        return out
    total = table[["model s", "evaluate s"]].sum()
    left_out = "setup and report" if "prepare s" in table else "setup, tokenizer and report"
    return out + (f"\n## Wall time per cell\n\nModel (train or load) {total['model s'] / 60:.1f} min and evaluation "
                  f"{total['evaluate s'] / 60:.1f} min over {len(table)} cells, as the cells' last runs measured them "
                  f"({left_out} not included).\n\n"
                  f"{table.to_markdown(index=False, floatfmt='.1f')}\n")


def _missing_as_none(block: pd.DataFrame) -> pd.DataFrame:
    """A cell without a mean (not evaluated, or only non-finite values) as None, which Markdown shows as `–`."""
    return block.astype(object).where(block.notna(), None)


def to_markdown(records: list[dict], unfinished: pd.DataFrame | None = None) -> str:
    parts = ["# Summary\n", "Mean over depths and samples; columns are context lengths in tokens (for perplexity: "
             "the end of each position bucket; for `perplexity/overall`: the longest document scored).\n"]
    records, excluded = split_finite(records)
    if excluded:
        parts.append(f"\n{non_finite_note(excluded)}.\n")
    if not records:
        parts.append("\nNo record with a finite value.\n" if excluded else
                     "\nNo records: no cell of this sweep has finished.\n")
    if unfinished is not None and not unfinished.empty:
        parts.append(f"\n## Cells that did not finish ({len(unfinished)})\n\n"
                     f"{unfinished.drop(columns='sweep').to_markdown(index=False)}\n")
    if not records:
        return "".join(parts)
    for (task, metric), block in summary_table(records).groupby(level=["task", "metric"]):
        block = block.droplevel(["task", "metric"]).dropna(axis=1, how="all")
        block = _missing_as_none(block.reindex(ordered(block.index)))
        parts.append(f"\n## {task} — {metric}\n\n{block.to_markdown(floatfmt='.3f', missingval='–')}\n")
    by_depth = depth_table(records)
    for (task, length), block in by_depth.groupby(level=["task", "context_length"]):
        block = block.droplevel(["task", "context_length"]).dropna(axis=1, how="all")
        block = _missing_as_none(block.reindex(ordered(block.index)))
        parts.append(f"\n## {task} — {DEPTH_METRIC} by needle depth at {length} tokens\n\n"
                     f"{block.to_markdown(floatfmt='.2f', missingval='–')}\n")
    stats = introspection_table(records)
    if not stats.empty:
        parts.append(f"\n## Mechanism statistics after evaluation (per layer)\n\n{stats.to_markdown(index=False)}\n")
    return "".join(parts)


def read_store(records_file: str | Path) -> list[dict]:
    """A sweep's records (none when the file does not exist); a store that cannot be read raises RecordsError
    naming the file (and line) and how to recover."""
    path = Path(records_file)
    try:
        rows = read_records(path)
    except IsADirectoryError:
        raise RecordsError(f"{path} is a directory, not a records file; move it aside ({RECOVER})") from None
    except UnicodeDecodeError as e:  # before ValueError, which it subclasses
        raise RecordsError(f"{path} is not text (undecodable byte at offset {e.start}); the file is damaged: "
                           f"restore it or delete it ({RECOVER})") from None
    except OSError as e:
        raise RecordsError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # read_records names the file and the line that is not JSON
        raise RecordsError(f"{e}; fix or delete that line ({RECOVER})") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or any(k not in row for k in REQUIRED):
            line = [n for n, text in enumerate(path.read_text().split("\n"), 1) if text.strip()][i]
            raise RecordsError(f"{path}:{line} is not a record (a JSON object with {', '.join(REQUIRED)}); "
                               f"fix or delete that line ({RECOVER})")
    return rows


def _unfinished(records_files: list[Path]) -> pd.DataFrame:
    try:
        return unfinished_table(records_files)
    except ValueError as e:  # Manifest.read: names the manifest and says to delete it
        raise RecordsError(str(e)) from None
    except OSError as e:
        raise RecordsError(f"cannot read the manifest next to {', '.join(map(str, records_files))}: "
                           f"{e.strerror or e} ({e.filename or ''}); move it aside (the records alone tell which "
                           "cells are done)") from None


def load_sweeps(records_files: list[Path], require: bool = True) -> tuple[list[dict], pd.DataFrame]:
    """The sweeps' records and their manifests' unfinished cells (`unfinished_table`). A sweep in which every cell
    failed has no records but a manifest that says why, and that is worth showing. With `require`, nothing at all
    to show raises MissingRecords (a records file is missing and its manifest lists no unfinished cell) or
    RecordsError (the records files exist but hold none)."""
    records_files = [Path(f) for f in records_files]
    records = [r for f in records_files for r in read_store(f)]
    per_file = {f: _unfinished([f]) for f in records_files}
    frames = [u for u in per_file.values() if not u.empty]
    unfinished = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if require:
        missing = [str(f) for f, u in per_file.items() if not f.exists() and u.empty]
        if missing:
            raise MissingRecords(f"no records at {', '.join(missing)}; run the sweep first")
        if not records and unfinished.empty:
            raise RecordsError(f"{', '.join(map(str, records_files))}: no records in the file and no unfinished "
                               "cell in the manifest; run the sweep first (or delete the empty file)")
    return records, unfinished


def write_summary(records_file: Path, require: bool = False) -> Path:
    """Rewrite summary.md next to `records_file` (see `load_sweeps` for `require`)."""
    text = to_markdown(*load_sweeps([records_file], require=require)) + timing_markdown(Path(records_file))
    out = Path(records_file).with_name("summary.md")
    atomic.write_text(out, text)
    print(text)
    return out

