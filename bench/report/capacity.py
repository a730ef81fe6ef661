"""The capacity frontier (issue 23; Zoology's figure): recall against the state a mechanism carries, one curve per
mechanism family, one point per state setting, with intervals over training seeds and samples.

Which options are the state knob is read from the runs themselves, not from a list: among one mechanism's labels,
an option that varies with numeric values (`window`, `segment`, `fam_tokens`, `top_k`) or a part of the model name
that varies (`h1`/`h4`: the heads a width is split into) places a point on the curve, an option that varies with
other values (`update=linear|delta`) starts another curve. A learning rate swept next to it
(the `@lr` part of the model name) is tuning, not a setting: every point keeps the learning rate that scored best on
that cell, as Zoology reports, and the table says which one it was."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report.palette import colour, ordered, style  # noqa: E402
from bench.report.plots import fitted_legend, local_span, narrow_log_x, query_distances, save  # noqa: E402
from bench.report.tables import MIN_SEEDS, higher_is_better  # noqa: E402
from bench.results.summary import base_name, compute_options  # noqa: E402

LR_MARK = "@lr"  # bench/harness/runner.py: a non-default learning rate in the model name


def _numeric(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def settings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per mechanism label: `curve` (mechanism plus the non-numeric and compute options that vary among its
    runs), `point` (the numeric options that vary, as text), `lr` (from the model name; 'default' when absent) and
    `setting` (everything but the learning rate: the labels that compete for a cell's best learning rate). When
    two state knobs vary (Infini's segment and its heads), the one with the most values places the points and the
    others start curves, so that a line never joins points that differ in two knobs."""
    first = df.drop_duplicates("mechanism").set_index("mechanism")
    rows = []
    for name, group in first.groupby(first.index.map(base_name)):
        options = pd.DataFrame(list(group["options"].map(lambda o: o or {})), index=group.index)
        varying = [c for c in options.columns if options[c].astype(str).nunique() > 1]
        knobs = [c for c in varying if options[c].map(_numeric).all() and c not in compute_options(name)]
        kinds = [c for c in varying if c not in knobs]
        stems = group["model"].astype(str).str.partition(LR_MARK)[0]
        parts = stems.str.split("-", expand=True).fillna("").astype(str)  # parts that vary (h1/h2/h4: heads)
        shape = [c for c in parts.columns if parts[c].nunique() > 1]
        # the model-name parts that vary count as one knob (the heads a width is split into)
        axes = [(options[c].astype(str).nunique(), c) for c in knobs]
        axes += [(parts[shape].agg("-".join, axis=1).nunique(), None)] if shape else []
        axis = max(axes, key=lambda a: a[0], default=(0, None))[1]  # the first of the most-valued, on a tie
        kinds += [c for c in knobs if c != axis]
        knobs = [c for c in knobs if c == axis]
        split, shape = (shape, []) if axis is not None else ([], shape)
        for label, model in group["model"].items():
            stem, _, lr = str(model).partition(LR_MARK)
            apart = [f"{c}={options.at[label, c]}" for c in kinds] + [parts.at[label, c] for c in split]
            curve = name + (f"({', '.join(apart)})" if apart else "")
            tag = label[label.rindex(" ["):].strip() if label.endswith("]") and " [" in label else ""
            shown = [f"{c}={options.at[label, c]}" for c in knobs] + [parts.at[label, c] for c in shape]
            point = ", ".join(p for p in [*shown, tag] if p)  # a sweep or hash tag: runs `labelled` keeps apart
            rows.append({"mechanism": label, "curve": curve, "point": point, "lr": lr or "default",
                         "setting": f"{curve} {point} {stem}"})
    return pd.DataFrame(rows, columns=["mechanism", "curve", "point", "lr", "setting"])


def frontier_table(df: pd.DataFrame, est: pd.DataFrame) -> pd.DataFrame:
    """Per (task, metric, context length) and state setting, the best learning rate's estimate and the setting's
    carried state in bytes (picking the best of several rates makes the winner's interval a little optimistic, as in
    Zoology's figures). A rate run on fewer than MIN_SEEDS seeds competes only when no rate has that many, so a
    one-seed tuning probe never replaces a claim (`learning_rates` shows how it did). Only for metrics in [0, 1]
    where higher is better, and only when some mechanism sweeps a state knob (otherwise `plots.quality_vs_state`
    says all there is)."""
    columns = ["task", "metric", "context_length", "curve", "point", "lr", "state_bytes", "mean", "low", "high", "n",
               "seeds"]
    meta = settings(df)
    if meta.empty or not (meta["point"] != "").any():
        return pd.DataFrame(columns=columns)
    by_cell = df.groupby(["task", "mechanism", "context_length"])
    state = by_cell["state_bytes"].max().rename("state_bytes")
    seeds = by_cell["seed"].nunique().rename("seeds")
    keep = est[est["metric"].map(higher_is_better) & (est["mean"] <= 1)]
    rows = keep.merge(meta, on="mechanism").join(state, on=["task", "mechanism", "context_length"])
    rows = rows.join(seeds, on=["task", "mechanism", "context_length"])
    rows = rows.dropna(subset=["state_bytes", "mean"]).assign(claim=lambda r: r["seeds"] >= MIN_SEEDS)
    best = rows.sort_values(["claim", "mean"], ascending=False, kind="stable").drop_duplicates(
        ["task", "metric", "context_length", "setting"])
    return best.sort_values(["task", "metric", "context_length", "curve", "state_bytes", "point"])[columns]


def learning_rates(df: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """For every frontier point that ran at more than one learning rate, each rate's mean on the training seeds all
    its rates share (paired by seed, so a rate tried on one tuning seed is compared on that seed alone), next to its
    own seed count and whether the frontier shows it. The frontier keeps the best rate among those with enough
    seeds for a claim; this table is where a rate probed on fewer seeds shows whether it would have won (then its
    remaining seeds are worth running). The tuning choice is one rate per setting, not per cell: `tuned` marks the
    rate with the best `setting_mean` (its mean on the shared seeds over the family's subtasks, MQAR's pair counts),
    so that one seed's row noise in a single cell does not pick the rate."""
    columns = ["task", "metric", "context_length", "curve", "point", "lr", "shared_seeds", "mean_on_shared", "seeds",
               "shown", "setting_mean", "tuned"]
    meta = settings(df)
    if meta.empty:
        return pd.DataFrame(columns=columns)
    keys = ["task", "metric", "context_length", "setting"]
    runs = df.merge(meta, on="mechanism")
    runs = runs[runs["metric"].map(higher_is_better)]
    rows = []
    for (task, metric, length, _), group in runs.groupby(keys):
        seeds_by_lr = group.groupby("lr")["seed"].agg(set)
        if len(seeds_by_lr) < 2:
            continue
        shared = set.intersection(*seeds_by_lr)
        for lr, sub in group.groupby("lr"):
            on_shared = sub[sub["seed"].isin(shared)]
            rows.append({"task": task, "metric": metric, "context_length": length, "curve": sub["curve"].iloc[0],
                         "point": sub["point"].iloc[0], "lr": lr, "shared_seeds": len(shared),
                         "mean_on_shared": on_shared["value"].mean() if shared else math.nan,
                         "seeds": sub["seed"].nunique()})
    cell = ["task", "metric", "context_length", "curve", "point", "lr"]
    shown = table[cell].drop_duplicates().assign(shown=True)
    out = pd.DataFrame(rows, columns=columns[:-3]).merge(shown, on=cell, how="left")
    out["shown"] = out["shown"].eq(True)
    setting = [out["task"].str.split("/", n=1).str[0], out["metric"], out["context_length"], out["curve"],
               out["point"]]
    out["setting_mean"] = out.groupby([*setting, out["lr"]])["mean_on_shared"].transform("mean")
    out["tuned"] = out["setting_mean"] == out.groupby(setting)["setting_mean"].transform("max")
    return out[columns]




EQUAL_STATE = 1.1  # states within 10% count as equal (Infini's 33,280 bytes at segment 16 against W=32's 32,768)


def decisive_pairs(table: pd.DataFrame, min_seeds: int = MIN_SEEDS, equal_state: float = EQUAL_STATE
                   ) -> pd.DataFrame:
    """Pairs of points of different curves whose carried states are equal within a factor `equal_state`, each
    estimated over at least `min_seeds` training seeds, and whose intervals do not overlap: the frontier's decisive
    differences."""
    rows = []
    table = table[table["seeds"] >= min_seeds]
    for keys, group in table.groupby(["task", "metric", "context_length"]):
        points = list(group.itertuples(index=False))
        for i, a in enumerate(points):
            for b in points[i + 1:]:
                equal = max(a.state_bytes, b.state_bytes) <= equal_state * min(a.state_bytes, b.state_bytes)
                if a.curve != b.curve and equal and (a.low > b.high or b.low > a.high):
                    hi, lo = (a, b) if a.mean > b.mean else (b, a)
                    rows.append({"task": keys[0], "metric": keys[1], "context_length": keys[2],
                                 "better": f"{hi.curve} {hi.point}".strip(), "better_state_bytes": hi.state_bytes,
                                 "better_mean": hi.mean, "better_low": hi.low, "better_high": hi.high,
                                 "worse": f"{lo.curve} {lo.point}".strip(), "worse_state_bytes": lo.state_bytes,
                                 "worse_mean": lo.mean, "worse_low": lo.low, "worse_high": lo.high})
    return pd.DataFrame(rows)


def plot_frontier(table: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per (task family, metric, context length), one panel per subtask (MQAR's pair counts)."""
    paths = []
    family = table["task"].str.split("/", n=1).str[0]
    for (fam, metric, length), sub in table.groupby([family, "metric", "context_length"]):
        tasks = sorted(sub["task"].unique(), key=_natural)
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1, 4.2), sharey=True,
                                 layout="constrained", squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            cell = sub[sub["task"] == task]
            curves = ordered(sub["curve"])
            for curve in ordered(cell["curve"]):
                s = cell[cell["curve"] == curve].sort_values("state_bytes")
                err = [s["mean"] - s["low"], s["high"] - s["mean"]]
                ax.errorbar(s["state_bytes"], s["mean"], yerr=err, marker="o", capsize=2, color=colour(curve),
                            linestyle=style(curve, curves), label=curve)
                probe = s[s["seeds"] < MIN_SEEDS]  # open markers: fewer seeds than a claim needs
                ax.scatter(probe["state_bytes"], probe["mean"], marker="o", facecolors="white",
                           edgecolors=colour(curve), zorder=3)
            ax.set(xscale="log", xlabel="carried state (bytes)", title=task, ylim=(-0.02, 1.02))
            narrow_log_x(ax, cell["state_bytes"])
        axes[0][0].set_ylabel(f"{metric} (best learning rate)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fitted_legend(fig, handles, labels)
        title = (f"{fam} at {length} tokens: recall vs state (95% CI over seeds and samples; open: < {MIN_SEEDS} "
                 "seeds, a probe)")  # wrapped to the width: one panel is narrower than the line
        fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 15)), fontsize=9)
        paths += save(fig, out, f"frontier_{fam}_{metric}_{length}")
    return paths


def _natural(task: str) -> tuple:
    digits = "".join(ch for ch in task if ch.isdigit())
    return (int(digits) if digits else math.inf, task)



def span_split(df: pd.DataFrame, samples: pd.DataFrame | None) -> pd.DataFrame:
    """Recall inside a mechanism's local span s (window, segment or block; key -> query distance <= s, where a
    window of W still reaches the value after the key), between s and 2s, and beyond 2s, per label and over all
    its context lengths: a window must split cleanly at s, and what a memory recalls beyond 2s came through the
    memory (within 2s a segment- or block-local path may still hold the pair, depending on where the segment
    boundary falls)."""
    columns = ["task", "mechanism", "span", "inside", "to_2x", "beyond_2x", "queries_inside", "queries_to_2x",
               "queries_beyond_2x"]
    queries = query_distances(df, samples)
    first = df.drop_duplicates("mechanism").set_index("mechanism")
    spans = {label: local_span(options) for label, options in first["options"].items()}
    rows = []
    for (task, label), sub in queries.groupby(["task", "mechanism"]):
        s = spans.get(label)
        if s is None:
            continue
        near, mid, far = (sub[sub["distance"] <= s], sub[(sub["distance"] > s) & (sub["distance"] <= 2 * s)],
                          sub[sub["distance"] > 2 * s])
        rows.append({"task": task, "mechanism": label, "span": s, "inside": near["hit"].mean(),
                     "to_2x": mid["hit"].mean(), "beyond_2x": far["hit"].mean(), "queries_inside": len(near),
                     "queries_to_2x": len(mid), "queries_beyond_2x": len(far)})
    return pd.DataFrame(rows, columns=columns)
