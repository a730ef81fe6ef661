"""Uncertainty for the report: means with 95% bootstrap intervals, and paired differences against a reference.

Records hold one mean per cell (`value` over `n` samples), not per-sample scores. With several seeds the interval
comes from resampling seeds. With one seed it comes from resampling the pooled samples of the entry (all its
cells, e.g. every needle depth), reconstructed as Bernoulli outcomes (round(value * n) successes per cell): exact
for 0/1 metrics such as exact_match, and conservative for any other metric bounded in [0, 1] (a Bernoulli variable
has the largest variance of all [0, 1] variables with that mean). Metrics outside [0, 1] (perplexity) get no
single-seed interval. Like every percentile bootstrap, a score of exactly 0 or 1 gets a zero-width interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int  # samples behind the mean

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def _bernoulli_draws(values: np.ndarray, ns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means (N_BOOT,) of the pooled samples of several cells, resampled with replacement."""
    total = ns.sum()
    successes = np.rint(values * ns).sum()
    return rng.binomial(total, successes / total, size=N_BOOT) / total


def estimate(cells: pd.DataFrame, seed: int = 0) -> Estimate:
    """Mean of `value` weighted by `n` over the cells of one table entry (any depths/subtasks), with its CI.
    `cells` needs columns value, n, seed."""
    rng = np.random.default_rng(seed)
    values, ns = cells["value"].to_numpy(float), cells["n"].to_numpy(int)
    mean = float((values * ns).sum() / ns.sum())
    per_seed = cells.assign(w=values * ns).groupby("seed")[["w", "n"]].sum()
    if len(per_seed) > 1:
        seed_means = (per_seed["w"] / per_seed["n"]).to_numpy()
        picks = rng.integers(0, len(seed_means), size=(N_BOOT, len(seed_means)))
        return Estimate(mean, *_interval(seed_means[picks].mean(1)), int(ns.sum()))
    if ((values < 0) | (values > 1)).any():
        return Estimate(mean, float("nan"), float("nan"), int(ns.sum()))
    return Estimate(mean, *_interval(_bernoulli_draws(values, ns, rng)), int(ns.sum()))


def paired_difference(cells: pd.DataFrame, reference: pd.DataFrame, seed: int = 0) -> Estimate | None:
    """Mean of (cells - reference) over the cells both scored on the same samples (same data_hash, depth and
    subtask), with a bootstrap CI that redraws both sides independently — it ignores the positive correlation of
    paired outcomes, so the interval can only be wider than the exact paired one. None when nothing pairs."""
    keys = ["data_hash", "depth", "subtask", "seed"]
    a = cells[keys + ["value", "n"]].astype({"depth": str, "subtask": str})
    b = reference[keys + ["value", "n"]].astype({"depth": str, "subtask": str})
    pairs = a.merge(b, on=keys, suffixes=("", "_ref"))
    pairs = pairs[pairs["n"] == pairs["n_ref"]]
    if pairs.empty:
        return None
    values, ref, ns = (pairs[c].to_numpy(float) for c in ("value", "value_ref", "n"))
    ns = ns.astype(int)
    mean = float(((values - ref) * ns).sum() / ns.sum())
    if ((values < 0) | (values > 1) | (ref < 0) | (ref > 1)).any():
        return Estimate(mean, float("nan"), float("nan"), int(ns.sum()))
    rng = np.random.default_rng(seed)
    draws = _bernoulli_draws(values, ns, rng) - _bernoulli_draws(ref, ns, rng)
    return Estimate(mean, *_interval(draws), int(ns.sum()))
