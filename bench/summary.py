"""The sweep's summary table: mechanism x context length per task and metric (mean over depths and samples),
derived only from records.jsonl. Richer reports build on the same records."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bench.records import read_records


def summary_table(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(records)
    df["weighted"] = df["value"] * df["n"]
    grouped = df.groupby(["task", "metric", "mechanism", "context_length"])[["weighted", "n"]].sum()
    grouped["value"] = grouped["weighted"] / grouped["n"]
    return grouped["value"].unstack("context_length")


def to_markdown(records: list[dict]) -> str:
    table = summary_table(records)
    parts = ["# Summary\n", "Mean over depths and samples; columns are context lengths in tokens.\n"]
    for (task, metric), block in table.groupby(level=["task", "metric"]):
        block = block.droplevel(["task", "metric"])
        parts.append(f"\n## {task} — {metric}\n\n{block.to_markdown(floatfmt='.3f')}\n")
    return "".join(parts)


def write_summary(records_file: Path) -> Path:
    text = to_markdown(read_records(records_file))
    out = Path(records_file).with_name("summary.md")
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite results/<sweep>/summary.md from its records.jsonl")
    parser.add_argument("sweep", nargs="?", default="default")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    path = Path(args.results_dir) / args.sweep / "records.jsonl"
    if not path.exists():
        raise SystemExit(f"error: no records at {path}; run the sweep first")
    write_summary(path)


if __name__ == "__main__":
    main()
