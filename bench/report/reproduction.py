"""Does a rerun reproduce a study's conclusions? Training is bit-reproducible only on the same kind of CPU with the
same thread count (docs/running.md, "Reproducibility"), so a rerun elsewhere gets other numbers; what must hold is
what the study concludes. Two criteria, from the committed study's own intervals:

- no decisive verdict flips: where the committed paired difference to full attention is decisive (its interval
  excludes 0), the rerun's difference must not be decisive the other way (reported too: how many merely changed
  sign or became ties);
- the rerun's cell means fall inside the committed 95% intervals (mechanism x task x metric x context length) in
  at least `COVERAGE` of the cells both studies hold.

Cells are matched by what they measure (mechanism, task, metric, context length), not by config hash: a rerun may
differ in what the hash leaves out, such as the thread count.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from bench.report import tables
from bench.report.samples import load_samples
from bench.results.summary import cells, load_sweeps, split_finite

COVERAGE = 0.95
CELL = ["task", "metric", "mechanism", "context_length"]


@dataclasses.dataclass
class Reproduction:
    cells: pd.DataFrame  # CELL + committed mean/low/high, rerun mean, inside
    verdicts: pd.DataFrame  # CELL + committed diff/low/high/verdict, rerun diff/low/high/verdict, flipped

    @property
    def coverage(self) -> float:
        return float(self.cells["inside"].mean()) if len(self.cells) else float("nan")

    @property
    def decisive(self) -> pd.DataFrame:
        return self.verdicts[self.verdicts["verdict"].isin(["better", "worse"])]

    @property
    def flipped(self) -> pd.DataFrame:
        return self.decisive[self.decisive["flipped"]]

    @property
    def holds(self) -> bool:
        return len(self.cells) > 0 and self.flipped.empty and self.coverage >= COVERAGE

    def markdown(self, committed: str, rerun: str) -> str:
        d = self.decisive
        kept = int((d["verdict"] == d["verdict_rerun"]).sum())
        sign = int(((d["diff"] > 0) != (d["diff_rerun"] > 0)).sum())
        lines = [
            f"# Reproduction of {committed} by {rerun}\n",
            f"- cells in both: {len(self.cells)}; rerun means inside the committed 95% intervals: "
            f"{int(self.cells['inside'].sum())} ({self.coverage:.1%}; criterion >= {COVERAGE:.0%})",
            f"- decisive committed verdicts: {len(d)}; the same verdict in the rerun: {kept}; "
            f"difference of the other sign: {sign}; decisive the other way (flipped): {len(self.flipped)}",
            f"- conclusions reproduce: {'yes' if self.holds else 'no'}\n",
        ]
        outside = self.cells[~self.cells["inside"]]
        if not outside.empty:
            lines.append("## Rerun means outside the committed intervals\n")
            shown = outside.drop(columns=["low_rerun", "high_rerun", "width", "width_rerun"])
            lines.append(shown.to_markdown(index=False, floatfmt=".3f") + "\n")
        lines.append("## Interval widths\n")
        lines.append("Width of the 95% intervals (high - low) over context lengths, median and widest, each study's "
                     "own: how much more (or less) the rerun's protocol spreads.\n")
        lines.append(self.widths().to_markdown(index=False, floatfmt=".3f") + "\n")
        changed = d[d["verdict"] != d["verdict_rerun"]]
        if not changed.empty:
            lines.append("## Decisive verdicts the rerun does not repeat\n")
            lines.append(changed.to_markdown(index=False, floatfmt=".3f") + "\n")
        return "\n".join(lines)


    def widths(self) -> pd.DataFrame:
        """Interval widths per task x metric x mechanism over context lengths (median and widest), committed and
        rerun, and the ratio of the medians."""
        grouped = self.cells.groupby(["task", "metric", "mechanism"])[["width", "width_rerun"]]
        out = grouped.median().join(grouped.max(), rsuffix="_max").reset_index()
        out["ratio"] = out["width_rerun"] / out["width"]
        return out


def load(records_file: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, samples) of one store, finite records only, as the report reads them."""
    records, _ = split_finite(load_sweeps([records_file])[0])
    return cells(records), load_samples([records_file])


def compare(committed: tuple[pd.DataFrame, pd.DataFrame | None], rerun: tuple[pd.DataFrame, pd.DataFrame | None]
            ) -> Reproduction:
    """`committed` and `rerun` are (cells, samples) frames as the report builds them (summary.cells,
    samples.load_samples)."""
    est = tables.estimates(*committed)
    again = tables.estimates(*rerun)[CELL + ["mean", "low", "high"]].rename(
        columns={"mean": "mean_rerun", "low": "low_rerun", "high": "high_rerun"})
    joined = est.merge(again, on=CELL)
    joined["inside"] = (joined["mean_rerun"] >= joined["low"]) & (joined["mean_rerun"] <= joined["high"])
    joined["width"], joined["width_rerun"] = joined["high"] - joined["low"], joined["high_rerun"] - joined["low_rerun"]
    keep = ["diff", "low", "high", "verdict"]
    pairs = tables.paired(*committed)
    pairs_again = tables.paired(*rerun)
    verdicts = pairs[CELL + keep].merge(pairs_again[CELL + keep], on=CELL, suffixes=("", "_rerun"))
    opposite = {"better": "worse", "worse": "better"}
    verdicts["flipped"] = verdicts["verdict_rerun"] == verdicts["verdict"].map(opposite)
    return Reproduction(joined, verdicts)
