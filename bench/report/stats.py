"""Uncertainty for the report: means with 95% bootstrap intervals, and paired differences against a reference.

**From per-sample outcomes** (the cells' sidecars, bench/report/samples.py), when every cell of a table entry has
them. A unit is one sample (a prompt; for perplexity one document's tokens in the position bucket, or the whole
document), in a stratum: the cell (needle depth, family) it belongs to within its training seed. The percentile
bootstrap resamples units with replacement within each stratum (the design fixes how many samples each depth has);
with more than one training seed it is hierarchical: it resamples the seeds with replacement, then the units within
each seed drawn (a seed drawn twice gets two independent resamples). Each draw pools its units exactly as the point
estimate does:

- a per-sample metric (exact_match, digit_accuracy, retrieval_recall): the mean over the samples;
- perplexity: the ratio exp(sum nll / sum tokens) over the documents, `nll` = sum nll / sum tokens and bits per
  byte = sum nll / (ln 2 * sum bytes), so the estimate of one cell is its record's value (summed in sample order,
  as the task sums it: to the last bit).

`sample_paired_difference` joins the two sides on PAIR_KEYS (the same prompt or document, scored by a model of the
same training seed) and resamples the *pairs*: a real paired bootstrap, so the positive correlation of the two
sides' outcomes narrows the interval as it should. For perplexity it is the difference of the pooled perplexities
(or of log-perplexity, `log=True`) over the same documents; every draw has the same sign on both scales, so the
verdict is the same (up to the interpolation between two neighbouring draws). With few seeds the two-stage
bootstrap is approximate: it counts the within-seed noise twice (conservative when that noise dominates) and cannot
see more seed-to-seed spread than its seeds show (3 seeds under-cover when that spread dominates). Simulated
(tests/report/test_sample_intervals.py), the 95% paired interval covers a known difference in about 97% of
studies with 3 seeds and 94% with one.

**From the records alone** (cells recorded before samples were kept). Records hold one mean per cell (`value`
over `n` samples), not per-sample scores. With several seeds the interval comes from resampling seeds. With one
seed it comes from resampling the pooled samples of the entry (all its cells, e.g. every needle depth),
reconstructed as Bernoulli outcomes at the pooled mean: exact for 0/1 metrics such as exact_match, and
conservative for any other metric bounded in [0, 1] (a Bernoulli variable has the largest variance of all [0, 1]
variables with that mean); that interval also gets the Wilson floor below, so it always contains its mean. Metrics
outside [0, 1] (perplexity) get no single-seed interval, and paired differences redraw both sides independently.

**A floor for bounded means.** A percentile bootstrap cannot see uncertainty the samples do not show: 1500 correct
prompts out of 1500, or a sliding window that is right at exactly the depths it can reach in every seed, give a
zero-width interval, which claims certainty no finite sample gives (a cold rerun scored 0.999 and 0.399 against
committed [1.000, 1.000] and [0.400, 0.400]). The interval of a per-sample mean of 0/1 outcomes (exact_match) is
therefore at least the Wilson score interval of the pooled mean over its n samples (conservative for a stratified
design); a mean of another [0, 1] metric (digit_accuracy) gets the same floor where its samples show no variation
at all (conservative: no [0, 1] variable has a larger variance at that mean than a Bernoulli one), and keeps its
narrower bootstrap interval otherwise. Paired differences keep their bootstrap interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95
PAIR_KEYS = ["data_hash", "subtask", "depth", "context_length", "sample", "seed"]
_CHUNK = 4_000_000  # resample indices generated at once (rows x units)


@dataclasses.dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int  # samples behind the mean

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


Z = 1.959963984540054  # the standard normal's 97.5% quantile: LEVEL = 0.95


def wilson(p: float, n: int) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed over n trials (never zero width for n > 0)."""
    center = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, center - half), min(1.0, center + half)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    return float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def _bernoulli_draws(values: np.ndarray, ns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means (N_BOOT,) of the pooled samples of several cells, resampled with replacement. The success
    rate is the pooled mean itself, not a rounded count: a fractional metric (digit accuracy 0.998 over 100
    samples) rounded to 100 successes drew [1, 1], an interval that excluded its own mean."""
    total = ns.sum()
    return rng.binomial(total, (values * ns).sum() / total, size=N_BOOT) / total


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
    low, high = _interval(_bernoulli_draws(values, ns, rng))
    floor_low, floor_high = wilson(mean, int(ns.sum()))
    return Estimate(mean, min(low, floor_low), max(high, floor_high), int(ns.sum()))


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


# --- from per-sample outcomes ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleStatistic:
    """How a record's metric is computed from its samples: transform(sum numerator / sum denominator), the
    denominator None for a plain mean (the number of samples); `count` is the column whose sum is the record's
    `n` (None: the number of samples)."""

    numerator: str
    denominator: str | None
    count: str | None
    point: Callable[[float, float], float]  # (sum numerator, sum denominator) -> value, as the task computes it
    draws: Callable[[np.ndarray, np.ndarray], np.ndarray]  # the same on arrays of bootstrap sums


def _ratio(a, w):
    return a / w


PERPLEXITY_STATISTICS = {
    "ppl": SampleStatistic("nll", "tokens", "tokens", lambda a, w: math.exp(a / w), lambda a, w: np.exp(a / w)),
    "nll": SampleStatistic("nll", "tokens", "tokens", _ratio, _ratio),
    "bits_per_byte": SampleStatistic("nll", "bytes", "tokens", lambda a, w: a / (math.log(2) * w),
                                     lambda a, w: a / (np.log(2) * w)),
}


def sample_statistic(metric: str) -> SampleStatistic:
    """The perplexity ratios by name; any other metric is the mean of its per-sample values."""
    return PERPLEXITY_STATISTICS.get(metric) or SampleStatistic(metric, None, None, _ratio, _ratio)


def _columns(units: pd.DataFrame, stat: SampleStatistic, suffix: str = "") -> np.ndarray:
    """(m, 2): each unit's numerator and denominator (1 for a plain mean); `suffix` picks a paired side."""
    a = units[stat.numerator + suffix].to_numpy(float)
    w = np.ones_like(a) if stat.denominator is None else units[stat.denominator + suffix].to_numpy(float)
    return np.column_stack([a, w])


def _in_order(column: np.ndarray) -> float:
    """The left-to-right sum (as the tasks sum their samples), so one cell's estimate is its record's value."""
    return float(sum(column.tolist()))


def _count(units: pd.DataFrame, stat: SampleStatistic) -> int:
    return len(units) if stat.count is None else int(units[stat.count].sum())


def _strata(units: pd.DataFrame) -> list[list[np.ndarray]]:
    """Row positions per stratum (`cell`, or the whole seed without it) per training seed."""
    seeds = pd.factorize(units["seed"], use_na_sentinel=False)[0]
    cells = pd.factorize(units["cell"], use_na_sentinel=False)[0] if "cell" in units else np.zeros(len(units), int)
    return [[np.flatnonzero((seeds == s) & (cells == c)) for c in np.unique(cells[seeds == s])]
            for s in range(seeds.max() + 1)]


def _resample_within(values: np.ndarray, strata: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, c): column sums of `size` independent resamples of one seed's units, each stratum resampled with
    replacement to its own size."""
    total = np.zeros((size, values.shape[1]))
    for rows in strata:
        block, n = values[rows], len(rows)
        step = max(1, _CHUNK // n)
        for start in range(0, size, step):
            k = min(step, size - start)
            picks = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
            counts = np.bincount(picks.ravel(), minlength=k * n).reshape(k, n)
            total[start:start + k] += counts @ block
    return total


def bootstrap_sums(values: np.ndarray, strata: list[list[np.ndarray]], rng: np.random.Generator,
                   n_boot: int = N_BOOT) -> np.ndarray:
    """(n_boot, c): the column sums of `values` (m, c) in each bootstrap draw. One seed: the units resampled within
    their strata. Several: the seeds resampled with replacement, then each drawn seed's units within its strata."""
    if len(strata) == 1:
        return _resample_within(values, strata[0], n_boot, rng)
    picks = rng.integers(0, len(strata), size=(n_boot, len(strata)))
    total = np.zeros((n_boot, values.shape[1]))
    for slot in range(len(strata)):
        for s, seed_strata in enumerate(strata):
            rows = np.flatnonzero(picks[:, slot] == s)
            if rows.size:
                total[rows] += _resample_within(values, seed_strata, rows.size, rng)
    return total


def sample_estimate(units: pd.DataFrame, metric: str, seed: int = 0, n_boot: int = N_BOOT) -> Estimate:
    """`metric` over the samples in `units` (columns seed, the metric's sample columns, and optionally `cell`, the
    stratum within a seed) with its percentile bootstrap interval (hierarchical over seeds when there are several).
    A mean for per-sample metrics; for ppl / nll / bits_per_byte the pooled ratio over the documents, which for one
    cell equals its record's value. `n` is the record's count: samples, or tokens for perplexity."""
    stat = sample_statistic(metric)
    values = _columns(units, stat)
    mean = stat.point(_in_order(values[:, 0]), _in_order(values[:, 1]))
    sums = bootstrap_sums(values, _strata(units), np.random.default_rng(seed), n_boot)
    low, high = _interval(stat.draws(sums[:, 0], sums[:, 1]))
    outcomes = values[:, 0]
    binary = bool(np.isin(outcomes, (0.0, 1.0)).all())
    bounded = bool(((outcomes >= 0) & (outcomes <= 1)).all())
    if stat.denominator is None and (binary or (bounded and low == high)):  # the floor (module docstring)
        floor_low, floor_high = wilson(min(max(mean, 0.0), 1.0), len(units))
        low, high = min(low, floor_low), max(high, floor_high)
    return Estimate(mean, low, high, _count(units, stat))


def ratio_estimate(units: pd.DataFrame, seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Estimate]:
    """Perplexity, nll (nats per token) and, where documents carry `bytes`, bits per byte over the documents in
    `units` (columns nll, tokens[, bytes], seed[, cell]), bootstrapped over documents (and seeds)."""
    metrics = ["ppl", "nll"] + (["bits_per_byte"] if "bytes" in units else [])
    return {m: sample_estimate(units, m, seed, n_boot) for m in metrics}


def sample_paired_difference(units: pd.DataFrame, reference: pd.DataFrame, metric: str, seed: int = 0,
                             n_boot: int = N_BOOT, log: bool = False) -> Estimate | None:
    """`metric` of `units` minus that of `reference` over the samples both scored (joined on PAIR_KEYS: the same
    prompt or document, a model of the same training seed), with a paired percentile bootstrap that resamples the
    pairs (within `units`' strata; hierarchically over the common seeds). For perplexity the difference of the
    pooled ratios over the same documents; with `log` the difference of log-perplexity (nats per token). None when
    nothing pairs."""
    stat = sample_statistic(metric)
    if log and metric == "ppl":
        stat = PERPLEXITY_STATISTICS["nll"]
    columns = list(dict.fromkeys(c for c in (stat.numerator, stat.denominator, stat.count) if c is not None))
    extra = ["cell"] if "cell" in units else []
    pairs = units[PAIR_KEYS + extra + columns].merge(reference[PAIR_KEYS + columns], on=PAIR_KEYS,
                                                     suffixes=("", "_ref"))
    if pairs.empty:
        return None
    values = np.column_stack([_columns(pairs, stat), _columns(pairs, stat, "_ref")])
    mean = (stat.point(_in_order(values[:, 0]), _in_order(values[:, 1]))
            - stat.point(_in_order(values[:, 2]), _in_order(values[:, 3])))
    sums = bootstrap_sums(values, _strata(pairs), np.random.default_rng(seed), n_boot)
    draws = stat.draws(sums[:, 0], sums[:, 1]) - stat.draws(sums[:, 2], sums[:, 3])
    return Estimate(mean, *_interval(draws), _count(pairs, stat))
