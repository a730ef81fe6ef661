"""Report figures (matplotlib, PNG + SVG), one colour per mechanism in every figure: accuracy vs context length,
needle depth x length heatmaps, perplexity by position, quality vs carried state (Pareto) and vs evaluation seconds
per 1K tokens read (test-time training included), recall vs key-to-query
distance (tasks whose samples keep per-query outcomes, such as mqar), and efficiency."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "memorybench"
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report.palette import colour, ordered, style  # noqa: E402
from bench.report.samples import labelled_samples  # noqa: E402
from bench.report.tables import file_stem, higher_is_better  # noqa: E402
from bench.results.summary import DEPTH_METRIC  # noqa: E402

SPAN_OPTIONS = ("window", "segment", "block")  # options that set a mechanism's local span, marked on length axes


def local_span(options: dict | None) -> int | None:
    """A mechanism's local span from its options (the first of SPAN_OPTIONS it has), None when it has none."""
    return next((int(options[k]) for k in SPAN_OPTIONS if k in (options or {})), None)


def narrow_log_x(ax, values) -> None:
    """A log-x axis over less than a decade has no labelled decade, so matplotlib labels its minor ticks in long
    scientific notation that runs together (1.3x10^5 1.4x10^5 ...); give it a few ticks in engineering notation
    (130k) instead. Wider axes keep matplotlib's own ticks."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) < 10:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def fitted_legend(fig, handles: list, labels: list[str], max_cols: int = 4, fontsize: float = 7):
    """A figure legend below the panels in as many columns (at most `max_cols`) as fit the figure's width. Long
    labels (a RAG reader's options run past 100 characters) in a fixed four columns ran off both edges of the
    saved image."""
    for ncols in range(min(len(labels), max_cols), 0, -1):
        legend = fig.legend(handles, labels, fontsize=fontsize, loc="outside lower center", ncols=ncols)
        if ncols == 1 or legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:
            return legend
        legend.remove()
    raise ValueError("a legend needs at least one label")


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    name = file_stem(name)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for p in paths:  # no timestamps and fixed SVG ids: regenerating unchanged records gives unchanged files
        fig.savefig(p, dpi=120, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def _lines(ax, frame: pd.DataFrame, x: str, y: str, labels: list[str]) -> None:
    """One line per mechanism label, points in context-length order, in the mechanism's colour and style."""
    for label in labels:
        s = frame[frame["mechanism"] == label].sort_values("context_length")
        ax.plot(s[x], s[y], marker="o", color=colour(label), linestyle=style(label, labels), label=label)


def _span_marks(ax, df: pd.DataFrame, labels: list[str]) -> None:
    for length in sorted(df["train_length"].dropna().unique()):
        ax.axvline(length, color="grey", linestyle="--", linewidth=1)
        ax.annotate("train length", (length, 1.0), xycoords=("data", "axes fraction"), fontsize=7, color="grey",
                    rotation=90, va="top", ha="right")
    for label in labels:
        span = local_span(df[df["mechanism"] == label]["options"].iloc[0])
        if span is not None:
            ax.axvline(span, color=colour(label), linestyle=":", linewidth=1)


def accuracy_vs_length(df: pd.DataFrame, est: pd.DataFrame, out: Path) -> list[Path]:
    paths = []
    for (task, metric), sub in est.groupby(["task", "metric"]):
        if not higher_is_better(metric) or sub["mean"].max() > 1:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        labels = ordered(sub["mechanism"])
        _lines(ax, sub, "context_length", "mean", labels)
        for label in labels:
            s = sub[sub["mechanism"] == label].sort_values("context_length")
            ax.fill_between(s["context_length"], s["low"], s["high"], color=colour(label), alpha=0.15)
        _span_marks(ax, df[df["task"] == task], labels)
        ax.set(xscale="log", xlabel="context length (tokens)", ylabel=metric, ylim=(-0.03, 1.03),
               title=f"{task}: {metric} (95% CI)")
        lengths = sorted(sub["context_length"].unique())
        ax.set_xticks(lengths, [str(x) for x in lengths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
        paths += save(fig, out, f"accuracy_vs_length_{task}_{metric}")
    return paths


def depth_heatmaps(df: pd.DataFrame, out: Path) -> list[Path]:
    """NIAH-style grid per mechanism: needle depth (rows) x context length (columns)."""
    paths = []
    cells = df[df["depth"].notna() & (df["metric"] == DEPTH_METRIC)]
    for task, sub in cells.groupby("task"):
        labels = ordered(sub["mechanism"])
        fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels) + 1, 3), squeeze=False,
                                 layout="constrained")
        for ax, label in zip(axes[0], labels, strict=True):
            s = sub[sub["mechanism"] == label].assign(w=lambda d: d["value"] * d["n"])
            grid = s.groupby(["depth", "context_length"])[["w", "n"]].sum()
            grid = (grid["w"] / grid["n"]).unstack("context_length")
            image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
            ax.set_yticks(range(grid.shape[0]), [f"{d:g}" for d in grid.index], fontsize=7)
            ax.set_title(label, fontsize=8, color=colour(label))
            ax.set_xlabel("context length", fontsize=7)
        axes[0][0].set_ylabel("needle depth", fontsize=7)
        fig.colorbar(image, ax=axes[0].tolist(), label=DEPTH_METRIC, shrink=0.8)
        fig.suptitle(f"{task}: {DEPTH_METRIC} by needle depth", fontsize=9)
        paths += save(fig, out, f"depth_heatmap_{task}")
    return paths


def perplexity_by_position(est: pd.DataFrame, out: Path) -> list[Path]:
    sub = est[est["metric"] == "ppl"]
    paths = []
    for task, s in sub.groupby("task"):
        if s["context_length"].nunique() < 2:  # whole-document perplexity: one point, nothing to plot
            continue
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        labels = ordered(s["mechanism"])
        _lines(ax, s, "context_length", "mean", labels)
        ax.set(xscale="log", yscale="log", xlabel="position bucket end (tokens)", ylabel="perplexity",
               title=f"{task}: perplexity by position")
        ax.legend(fontsize=7)
        paths += save(fig, out, f"perplexity_by_position_{task}")
    return paths


def quality_vs_state(df: pd.DataFrame, est: pd.DataFrame, out: Path) -> list[Path]:
    """Pareto view: each mechanism's score against the bytes it carries, one point per context length."""
    state = df.groupby(["task", "mechanism", "context_length"])["state_bytes"].max()
    return _quality_against(est, state, "carried state (bytes)", "memory", out, "quality_vs_state")


def _quality_against(est: pd.DataFrame, x: pd.Series, xlabel: str, what: str, out: Path, stem: str) -> list[Path]:
    """Score (log x) against `x`, a value per (task, mechanism, context length), for each task's depth metric."""
    paths = []
    for (task, metric), sub in est.groupby(["task", "metric"]):
        sub = sub.join(x, on=["task", "mechanism", "context_length"]).dropna(subset=[x.name])
        if sub.empty or metric != DEPTH_METRIC:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        _lines(ax, sub, x.name, "mean", ordered(sub["mechanism"]))
        for x_value, y, length in sub[[x.name, "mean", "context_length"]].itertuples(index=False):
            ax.annotate(str(length), (x_value, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel=xlabel, ylabel=metric, title=f"{task}: {metric} vs {what}")
        ax.legend(fontsize=7)
        paths += save(fig, out, f"{stem}_{task}_{metric}")
    return paths


def seconds_per_kilotoken(df: pd.DataFrame) -> pd.Series:
    """Evaluation seconds per 1,000 tokens the model read, for each (task, mechanism, context length), the median
    over its cells: 1000 / the cell's measured tokens/s. A memory trained at test time (weights_lora) pays for its
    adaptation here, as retrieval pays for its search. Each task counts the tokens its model reads (MQAR: every
    query's re-read prefix), so compare mechanisms within a task, not across tasks."""
    cells = df.dropna(subset=["tokens_per_s", "context_length"])
    cells = cells[cells["tokens_per_s"] > 0]
    seconds = 1000.0 / cells["tokens_per_s"]
    return seconds.groupby([cells["task"], cells["mechanism"], cells["context_length"]]).median().rename(
        "seconds_per_kilotoken")


def quality_vs_cost(df: pd.DataFrame, est: pd.DataFrame, out: Path) -> list[Path]:
    """Each mechanism's score against what its evaluation costs, one point per context length."""
    return _quality_against(est, seconds_per_kilotoken(df),
                            "evaluation seconds per 1K tokens read (test-time training included)", "cost", out,
                            "quality_vs_cost")


def query_distances(df: pd.DataFrame, samples: pd.DataFrame | None) -> pd.DataFrame:
    """One row per scored query of the samples whose `positions` keep per-query outcomes ({key, query, hits}:
    tasks/mqar.py): mechanism label, task/subtask, key -> query distance in tokens, hit."""
    columns = ["mechanism", "task", "distance", "hit"]
    if samples is None or samples.empty or "positions" not in samples:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in labelled_samples(samples, df).itertuples(index=False):
        p = r.positions
        if isinstance(p, dict) and {"key", "query", "hits"} <= p.keys():
            rows += [(r.mechanism, r.family, q - k, bool(h))
                     for k, q, h in zip(p["key"], p["query"], p["hits"], strict=True)]
    return pd.DataFrame(rows, columns=columns)


def distance_table(df: pd.DataFrame, samples: pd.DataFrame | None) -> pd.DataFrame:
    """Share of queries recalled per task, mechanism label and key -> query distance bin [from, to) (powers of
    two, in tokens), with the number of queries behind it."""
    queries = query_distances(df, samples)
    columns = ["task", "mechanism", "distance_from", "distance_to", "recalled", "queries"]
    if queries.empty:
        return pd.DataFrame(columns=columns)
    start = 2 ** queries["distance"].clip(lower=1).map(lambda d: int(d).bit_length() - 1)
    grouped = queries.assign(distance_from=start).groupby(["task", "mechanism", "distance_from"])["hit"]
    table = grouped.agg(recalled="mean", queries="size").reset_index()
    return table.assign(distance_to=table["distance_from"] * 2)[columns]


def recall_vs_distance(df: pd.DataFrame, samples: pd.DataFrame | None, out: Path) -> list[Path]:
    """Share of queries recalled against the key -> query distance, in power-of-two bins: where a window's recall
    stops (at its W) and whether a memory carries pairs past its local span."""
    paths = []
    for task, acc in distance_table(df, samples).groupby("task"):
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        labels = ordered(acc["mechanism"])
        for label in labels:
            s = acc[acc["mechanism"] == label].sort_values("distance_from")
            ax.plot(s["distance_from"], s["recalled"], marker="o", color=colour(label),
                    linestyle=style(label, labels), label=label)
        ax.set(xscale="log", xlabel="key -> query distance (tokens, bin start)", ylabel="share recalled",
               ylim=(-0.02, 1.02), title=f"{task}: recall vs distance")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.legend(fontsize=7)
        paths += save(fig, out, f"recall_vs_distance_{task}")
    return paths


def efficiency(df: pd.DataFrame, out: Path) -> list[Path]:
    """Tokens/s and carried state vs context length, log-log."""
    cells = df.dropna(subset=["tokens_per_s", "state_bytes"])
    if cells.empty:
        return []
    agg = cells.groupby(["mechanism", "context_length"])[["tokens_per_s", "state_bytes"]].median().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    labels = ordered(agg["mechanism"])
    for ax, column in zip(axes, ("tokens_per_s", "state_bytes"), strict=True):
        _lines(ax, agg, "context_length", column, labels)
    axes[0].set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="tokens/s (evaluation)")
    axes[1].set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="carried state (bytes)")
    axes[1].legend(fontsize=7)
    return save(fig, out, "efficiency")


def write_plots(df: pd.DataFrame, est: pd.DataFrame, out: Path, samples: pd.DataFrame | None = None) -> list[Path]:
    out = out / "plots"
    return (accuracy_vs_length(df, est, out) + depth_heatmaps(df, out) + perplexity_by_position(est, out)
            + quality_vs_state(df, est, out) + quality_vs_cost(df, est, out) + recall_vs_distance(df, samples, out)
            + efficiency(df, out))
