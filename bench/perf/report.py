"""Tables, targets and log-log plots of a `make perf` run, derived only from its records.jsonl."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import mechanisms
from bench.core import atomic
from bench.report.palette import colour  # noqa: E402
from bench.report.plots import save  # noqa: E402
from bench.results.records import read_records  # noqa: E402
from bench.results.summary import ordered  # noqa: E402

MiB = 2**20


def label(row: pd.Series) -> str:
    impl = (row["options"] or {}).get("impl")
    return f"{row['mechanism']} [{impl}]" if impl else row["mechanism"]


def frame(records_file: Path) -> pd.DataFrame:
    df = pd.DataFrame(read_records(records_file))
    df["label"] = df.apply(label, axis=1)
    return df


def pivot(df: pd.DataFrame, subtask: str, metric: str, scale: float = 1.0) -> pd.DataFrame:
    sub = df[(df["subtask"] == subtask) & (df["metric"] == metric)]
    table = sub.pivot_table(index="label", columns="context_length", values="value", aggfunc="first") / scale
    table.columns = [int(c) for c in table.columns]
    return table.reindex(ordered(table.index))


def markdown(table: pd.DataFrame, fmt: str) -> str:
    """Blank where a length was not measured (e.g. dense-mask references beyond dense_max_length)."""
    text = table.map(lambda x: "" if pd.isna(x) else format(x, fmt))
    return text.to_markdown(colalign=("left",) + ("right",) * len(text.columns))


def value(df: pd.DataFrame, lab: str, subtask: str, metric: str, length: int | None,
          column: str = "value") -> float | None:
    sub = df[(df["label"] == lab) & (df["subtask"] == subtask) & (df["metric"] == metric)]
    if length is not None:
        sub = sub[sub["context_length"] == length]
    return float(sub[column].iloc[0]) if len(sub) else None


def bounded_streams(df: pd.DataFrame) -> list[str]:
    """Our streamed mechanisms whose class promises bounded state (peers' rows carry an `[impl]` label)."""
    streamed = set(df[(df["subtask"] == "model_stream") & ~df["label"].str.contains(r"\[", regex=True)]["label"])
    return [m for m in ordered(streamed) if m in mechanisms.names() and mechanisms.get(m).bounded_state]


def targets(df: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets as measured ratios, met or not (n/a where this run did not measure a length)."""
    rows = []

    def add(name: str, measured: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": "n/a" if measured is None else f"{measured:.2f}", "goal": goal,
                     "met": "n/a" if met is None else ("yes" if met else "no")})

    for subtask in ("kernel", "layer"):
        for length, goal in ((16384, 6), (65536, 20)):
            sw, full = (value(df, m, subtask, "tokens_per_s", length) for m in ("sliding_window", "full"))
            ratio = sw / full if sw and full else None
            add(f"sliding_window / full {subtask} tokens/s at {length // 1024}K", ratio, f">= {goal}",
                None if ratio is None else ratio >= goal)
    for m in bounded_streams(df):
        s4, s64 = (value(df, m, "model_stream", "peak_bytes", n) for n in (4096, 65536))
        st4, st64 = (value(df, m, "model_stream", "tokens_per_s", n, "state_bytes") for n in (4096, 65536))
        same_state = None if st4 is None or st64 is None else st4 == st64
        add(f"{m}: state_bytes at 64K equals 4K", None if same_state is None else float(same_state), "1 (equal)",
            same_state)
        ratio = s64 / s4 if s4 and s64 is not None else None
        add(f"{m}: streaming peak memory 64K / 4K", ratio, "<= 1.2", None if ratio is None else ratio <= 1.2)
    gflops, peak = value(df, "full", "kernel", "gflops", 8192), value(df, "matmul", "hardware", "gflops", None)
    share = gflops / peak if gflops and peak else None
    add("full attention SDPA at 8K / fp32 matmul GFLOP/s", share, ">= 0.40", None if share is None else share >= 0.4)
    step, bf16_step = (value(df, lab, "train_step", m, None) for lab, m in
                       (("full", "gflops"), ("full [bfloat16]", "tokens_per_s")))
    share = step / peak if step and peak else None
    add("full attention training step, model GFLOP/s / fp32 matmul", share, ">= 0.60",
        None if share is None else share >= 0.6)
    fp32_step = value(df, "full", "train_step", "tokens_per_s", None)
    ratio = bf16_step / fp32_step if bf16_step and fp32_step else None
    add("full attention training tokens/s, bfloat16 / float32", ratio, ">= 1.3",
        None if ratio is None else ratio >= 1.3)
    peer_label = "infini [infini-transformer-pytorch]"
    common = sorted(set(df[df["label"] == peer_label]["context_length"]) &
                    set(df[(df["label"] == "infini") & (df["subtask"] == "model_stream")]["context_length"]))
    if common:
        ratios = [value(df, "infini", "model_stream", "tokens_per_s", n) /
                  value(df, peer_label, "model_stream", "tokens_per_s", n) for n in common]
        worst = min(ratios)
        add(f"infini / peer model tokens/s (worst of {len(common)} lengths)", worst, ">= 1.5", worst >= 1.5)
    else:
        add("infini / peer model tokens/s", None, ">= 1.5 (peer not installed: pip install -e '.[perf]')", None)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, subtask: str, metric: str, ylabel: str, out: Path, name: str, scale: float = 1.0):
    sub = df[(df["subtask"] == subtask) & (df["metric"] == metric)]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for lab in ordered(sub["label"]):
        s = sub[sub["label"] == lab].sort_values("context_length")
        ax.plot(s["context_length"], s["value"] / scale, marker="o", color=colour(lab.split(" ")[0]),
                linestyle="--" if "[" in lab else "-", label=lab)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{subtask}: {ylabel}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out, name)


def write_report(records_file: Path) -> Path:
    df = frame(records_file)
    out = Path(records_file).parent
    figures = []
    figures += plot(df, "layer", "tokens_per_s", "tokens/s (one layer, one call)", out / "plots", "layer_tokens_per_s")
    figures += plot(df, "kernel", "tokens_per_s", "tokens/s (attention kernel alone)", out / "plots",
                    "kernel_tokens_per_s")
    figures += plot(df, "model_stream", "tokens_per_s", "tokens/s (default model, streamed)", out / "plots",
                    "model_tokens_per_s")
    figures += plot(df, "model_stream", "peak_bytes", "peak memory above baseline (MiB)", out / "plots",
                    "model_peak_memory", MiB)
    meta = df.iloc[0]
    parts = [
        "# Performance (`make perf`)\n\n",
        f"One run on `{meta['git_sha']}` at {meta['created_at']}; medians of {meta['n']} interleaved repeats. "
        f"fp32 matmul: {value(df, 'matmul', 'hardware', 'gflops', None):.1f} GFLOP/s.\n",
        "\n## Targets\n\n", targets(df).to_markdown(index=False), "\n",
        "\n## One layer, whole sequence in one call: tokens/s\n\n",
        markdown(pivot(df, "layer", "tokens_per_s"), ".0f"), "\n",
        "\n## Default model, streamed in chunks: tokens/s\n\n",
        markdown(pivot(df, "model_stream", "tokens_per_s"), ".0f"), "\n",
        "\n## Default model, streamed: peak memory above baseline (MiB)\n\n",
        markdown(pivot(df, "model_stream", "peak_bytes", MiB), ".1f"), "\n",
        "\n## Default model, streamed: carried state (bytes)\n\n",
        markdown(pivot(df.assign(value=df["state_bytes"]), "model_stream", "tokens_per_s"), ".0f"), "\n",
        "\n## Training step (default model and training shape; forward, backward, AdamW): tokens/s\n\n",
        markdown(pivot(df, "train_step", "tokens_per_s"), ".0f"), "\n",
        "\n## Training step: model GFLOP/s (full attention's FLOPs at that shape, bench/perf/training.py)\n\n",
        markdown(pivot(df, "train_step", "gflops"), ".1f"), "\n",
        "\n## Attention kernels alone (rotated q, k, v in; no projections): tokens/s\n\n",
        markdown(pivot(df, "kernel", "tokens_per_s"), ".0f"), "\n",
        "\n## Full attention SDPA kernel: GFLOP/s (causal FLOPs 4·T²·d/2 per head)\n\n",
        markdown(pivot(df, "kernel", "gflops"), ".1f"), "\n",
        "\n## Figures\n\n", *(f"![{p.stem}](plots/{p.name})\n" for p in figures if p.suffix == ".png"),
    ]
    summary = out / "summary.md"
    atomic.write_text(summary, "".join(parts))
    return summary
