"""Sanity gates shown on the dashboard: results any correct implementation must produce. A failing gate means
the comparison is not to be trusted (broken training, a window off by one, state that leaks), not that a
mechanism lost."""

from __future__ import annotations

import dataclasses

import pandas as pd

import mechanisms
from bench.core.errors import ConfigError
from bench.report.palette import base_name


@dataclasses.dataclass
class Gate:
    name: str
    status: str  # pass | fail | n/a
    detail: str


def _base(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df[[base_name(label) == name for label in df["mechanism"]]]


def bounded(label: str) -> bool | None:
    """The mechanism's own `bounded_state` (None for a mechanism this checkout does not know: not judged)."""
    try:
        return mechanisms.get(base_name(label)).bounded_state
    except ConfigError:
        return None


def _mean(cells: pd.DataFrame) -> float:
    return float((cells["value"] * cells["n"]).sum() / cells["n"].sum())


def _full_scores_in_length(df: pd.DataFrame, task: str, threshold: float, name: str) -> Gate:
    """Full attention's mean exact match on `task` at context lengths within its training length."""
    cells = _base(df, "full")
    cells = cells[(cells["task"] == task) & (cells["metric"] == "exact_match")
                  & (cells["context_length"] <= cells["train_length"])]
    if cells.empty:
        return Gate(name, "n/a", f"no in-length {task} cells for full")
    score = _mean(cells)
    return Gate(name, "pass" if score >= threshold else "fail", f"{score:.3f} over {int(cells['n'].sum())} samples")


def full_in_length(df: pd.DataFrame, threshold: float = 0.95) -> Gate:
    return _full_scores_in_length(
        df, "passkey", threshold,
        f"full attention retrieves passkeys within its training length (exact match >= {threshold})")


def full_single_fact(df: pd.DataFrame, threshold: float = 0.8) -> Gate:
    return _full_scores_in_length(
        df, "longqa/single_fact", threshold,
        f"full attention answers single-fact long-QA within its training length (exact match >= {threshold})")


def perplexity_finite_beyond_training(df: pd.DataFrame) -> Gate:
    name = "bounded mechanisms keep a finite perplexity in position buckets beyond the training length"
    cells = df[(df["task"] == "perplexity") & (df["metric"] == "ppl") & (df["context_length"] > df["train_length"])]
    cells = cells[[bounded(label) is True for label in cells["mechanism"]]]
    if cells.empty:
        return Gate(name, "n/a", "no perplexity buckets beyond the training length")
    bad = sorted({f"{r.mechanism} @ {r.context_length}" for r in cells.itertuples()
                  if not 0 < r.value < float("inf")})
    summary = f"{len(cells)} buckets of {cells['mechanism'].nunique()} mechanisms, worst ppl {cells['value'].max():.2f}"
    return Gate(name, "fail" if bad else "pass", "; ".join(bad) or summary)


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
    name = "bounded mechanisms carry the same state bytes at every length; the others' grows"
    cells = df.dropna(subset=["state_bytes"])
    if cells.empty:
        return Gate(name, "n/a", "no state_bytes recorded")
    problems = []
    for label, group in cells.groupby("mechanism"):
        sizes = group.groupby("context_length")["state_bytes"].max().sort_index()
        grows = sizes.iloc[-1] > sizes.iloc[0]
        expected = bounded(label)
        if expected is not None and len(sizes) > 1 and grows == expected:
            problems.append(f"{label}: {dict(sizes.astype(int))}")
    return Gate(name, "fail" if problems else "pass", "; ".join(problems) or f"{cells['mechanism'].nunique()} checked")


def evaluate_gates(df: pd.DataFrame) -> list[Gate]:
    return [full_in_length(df), full_single_fact(df), window_blind_far_back(df), bounded_state(df),
            perplexity_finite_beyond_training(df)]
