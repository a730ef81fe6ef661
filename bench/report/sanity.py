"""Sanity gates shown on the dashboard: results any correct implementation must produce. A failing gate means
the comparison is not to be trusted (broken training, a window off by one, state that leaks), not that a
mechanism lost."""

from __future__ import annotations

import dataclasses

import pandas as pd

from bench.report.palette import base_name

BOUNDED_EXCEPT = {"full", "rag"}  # mechanisms whose carried state may grow with length


@dataclasses.dataclass
class Gate:
    name: str
    status: str  # pass | fail | n/a
    detail: str


def _base(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df[[base_name(label) == name for label in df["mechanism"]]]


def _mean(cells: pd.DataFrame) -> float:
    return float((cells["value"] * cells["n"]).sum() / cells["n"].sum())


def full_in_length(df: pd.DataFrame, threshold: float = 0.95) -> Gate:
    name = f"full attention retrieves passkeys within its training length (exact match >= {threshold})"
    cells = _base(df, "full")
    cells = cells[(cells["task"] == "passkey") & (cells["metric"] == "exact_match")
                  & (cells["context_length"] <= cells["train_length"])]
    if cells.empty:
        return Gate(name, "n/a", "no in-length passkey cells for full")
    score = _mean(cells)
    return Gate(name, "pass" if score >= threshold else "fail", f"{score:.3f} over {int(cells['n'].sum())} samples")


def window_blind_far_back(df: pd.DataFrame, threshold: float = 0.1) -> Gate:
    name = f"sliding window cannot see a needle at depth 0 when the context is >= 4x its window (<= {threshold})"
    cells = _base(df, "sliding_window")
    cells = cells[(cells["task"] == "passkey") & (cells["metric"] == "exact_match") & (cells["depth"] == 0)]
    far = cells[[r["context_length"] >= 4 * (r["options"] or {}).get("window", float("inf"))
                 for _, r in cells.iterrows()]]
    if far.empty:
        return Gate(name, "n/a", "no such cells")
    score = _mean(far)
    return Gate(name, "pass" if score <= threshold else "fail", f"{score:.3f} over {int(far['n'].sum())} samples")


def bounded_state(df: pd.DataFrame) -> Gate:
    name = "bounded mechanisms carry the same state bytes at every length; full attention's grows"
    cells = df.dropna(subset=["state_bytes"])
    if cells.empty:
        return Gate(name, "n/a", "no state_bytes recorded")
    problems = []
    for label, group in cells.groupby("mechanism"):
        sizes = group.groupby("context_length")["state_bytes"].max().sort_index()
        grows = sizes.iloc[-1] > sizes.iloc[0]
        expected_growth = base_name(label) in BOUNDED_EXCEPT
        if len(sizes) > 1 and grows != expected_growth:
            problems.append(f"{label}: {dict(sizes.astype(int))}")
    return Gate(name, "fail" if problems else "pass", "; ".join(problems) or f"{cells['mechanism'].nunique()} checked")


def evaluate_gates(df: pd.DataFrame) -> list[Gate]:
    return [full_in_length(df), window_blind_far_back(df), bounded_state(df)]
