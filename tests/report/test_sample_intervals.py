"""Intervals from per-sample outcomes (the cells' sidecars): a paired bootstrap that covers a known difference at
its nominal rate, perplexity ratios that pool back to the records exactly, tables that keep the records-only method
unchanged for cells without samples, and perplexity verdicts that get an interval once samples exist."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from bench.report import build_report, tables
from bench.report.samples import entry_units, index_samples, load_samples
from bench.report.stats import (
    Estimate,
    estimate,
    paired_difference,
    ratio_estimate,
    sample_estimate,
    sample_paired_difference,
    wilson,
)
from bench.results.records import FIELDS
from bench.results.samples import samples_path
from bench.results.summary import cells
from tasks.perplexity import DocumentScore, bucket_table, document_outcomes, overall

KEYS = {"data_hash": "d", "subtask": "", "depth": "", "context_length": "128"}


# --- (a) coverage of the paired interval -------------------------------------------------------------------------


def paired_study(rng, seeds, n=100, p_ref=0.5, p_mech=0.6, rho=0.6, seed_sd=0.05, interaction_sd=0.02):
    """One simulated study: per training seed, n prompts scored 0/1 by the reference and by the mechanism. A seed
    shifts both success rates alike (the shared base model) and the mechanism's a little more (a seed x mechanism
    interaction around 0); the two outcomes of one prompt are correlated (Gaussian copula, rho). The true
    difference, over seeds and prompts, is p_mech - p_ref."""
    mech, ref = [], []
    for s in range(seeds):
        shift, interaction = rng.normal(0, seed_sd), rng.normal(0, interaction_sd)
        z_ref = rng.standard_normal(n)
        z_mech = rho * z_ref + math.sqrt(1 - rho**2) * rng.standard_normal(n)
        base = {"seed": s, "cell": 0, **KEYS, "sample": np.arange(n)}
        ref.append(pd.DataFrame(base | {"exact_match": (norm.cdf(z_ref) < p_ref + shift).astype(float)}))
        mech.append(pd.DataFrame(base | {"exact_match": (norm.cdf(z_mech) < p_mech + shift + interaction)
                                         .astype(float)}))
    return pd.concat(mech, ignore_index=True), pd.concat(ref, ignore_index=True)


@pytest.mark.parametrize("seeds", [3, 1])
def test_paired_interval_covers_the_true_difference_at_its_nominal_rate(seeds):
    rng = np.random.default_rng(2026)
    covered = 0
    for study in range(200):
        mech, ref = paired_study(rng, seeds)
        d = sample_paired_difference(mech, ref, "exact_match", seed=study, n_boot=1000)
        covered += d.contains(0.1)
    assert 0.90 <= covered / 200 <= 0.99, covered / 200


def test_paired_bootstrap_resamples_pairs_not_the_two_sides_independently():
    """Correlated outcomes make the paired interval narrower than the records-only one (independent redraws)."""
    mech, ref = paired_study(np.random.default_rng(1), seeds=1, n=200, rho=0.9)
    d = sample_paired_difference(mech, ref, "exact_match")
    assert d.mean == pytest.approx(mech["exact_match"].mean() - ref["exact_match"].mean(), abs=1e-12)
    assert d.n == 200 and d.low < d.mean < d.high
    agg = paired_difference(*(pd.DataFrame({"value": [u["exact_match"].mean()], "n": [200], "seed": [0],
                                            "data_hash": ["d"], "depth": [None], "subtask": [None]})
                              for u in (mech, ref)))
    assert d.mean == pytest.approx(agg.mean, abs=1e-12)
    assert (d.high - d.low) < 0.75 * (agg.high - agg.low)
    assert sample_paired_difference(mech, ref.assign(data_hash="other"), "exact_match") is None  # other prompts
    assert sample_paired_difference(mech, ref.assign(seed=7), "exact_match") is None  # another seed's model


def test_hierarchical_mean_resamples_seeds():
    """Seeds far apart: the interval spans the seed means; one seed alone gets a much narrower one."""
    units = pd.concat([pd.DataFrame({"seed": s, "cell": 0, "sample": np.arange(50), "exact_match": v})
                       for s, v in ((1, [1.0] * 45 + [0.0] * 5), (2, [0.0] * 45 + [1.0] * 5),
                                    (3, [1.0] * 25 + [0.0] * 25))], ignore_index=True)
    e = sample_estimate(units, "exact_match")
    assert e.mean == pytest.approx(0.5) and e.n == 150
    assert e.low < 0.3 and e.high > 0.7
    alone = sample_estimate(units[units["seed"] == 3], "exact_match")
    assert (alone.high - alone.low) < (e.high - e.low) / 2


def test_a_bounded_mean_never_gets_a_zero_width_interval():
    """All 1500 prompts right (or every seed right at exactly the same depths) leaves a percentile bootstrap
    nothing to resample: the interval falls back to the Wilson score interval of the pooled mean, which a rerun's
    0.999 falls inside; where the bootstrap is wider (seeds far apart), it stays."""
    perfect = pd.concat([pd.DataFrame({"seed": s, "cell": d, "sample": np.arange(100), "exact_match": 1.0})
                         for s in (1, 2, 3) for d in range(5)], ignore_index=True)
    e = sample_estimate(perfect, "exact_match")
    assert e.mean == e.high == 1.0 and e.low == pytest.approx(wilson(1.0, 1500)[0]) and 0.997 < e.low < 0.999
    stratified = perfect.assign(exact_match=(perfect["cell"] < 2).astype(float))  # right at 2 depths of 5, always
    e = sample_estimate(stratified, "exact_match")
    assert e.mean == pytest.approx(0.4) and e.contains(0.399) and e.high - e.low == pytest.approx(
        wilson(0.4, 1500)[1] - wilson(0.4, 1500)[0])
    lo, hi = wilson(0.5, 150)
    spread = pd.concat([pd.DataFrame({"seed": s, "cell": 0, "sample": np.arange(50), "exact_match": v})
                        for s, v in ((1, [1.0] * 50), (2, [0.0] * 50), (3, [1.0] * 25 + [0.0] * 25))])
    e = sample_estimate(spread, "exact_match")
    assert e.low < lo and e.high > hi  # the seeds' spread is wider than the floor: the bootstrap's interval
    fractions = perfect.assign(exact_match=np.where(perfect["sample"] % 2 == 0, 0.8, 1.0))  # digit-accuracy-like
    e = sample_estimate(fractions, "exact_match")
    assert e.high - e.low < wilson(0.9, 1500)[1] - wilson(0.9, 1500)[0]  # varied non-0/1 values: no floor
    # Wilson's interval against the textbook value (Agresti & Coull 1998: 0 of 10 -> [0, 0.278])
    assert wilson(0.0, 10)[0] == 0.0 and wilson(0.0, 10)[1] == pytest.approx(0.2775, abs=1e-4)



@given(values=st.lists(st.floats(0, 1), min_size=1, max_size=4), n=st.integers(1, 500))
@settings(max_examples=60, deadline=None)
def test_a_records_only_interval_always_contains_its_own_mean(values, n):
    """Without samples one seed's cells get a binomial bootstrap at their pooled mean; a fractional metric
    (digit accuracy 0.998 over 100 prompts) once drew [1, 1], an interval that excluded its own point (and broke
    the frontier plot's error bars)."""
    cells = pd.DataFrame({"value": values, "n": n, "seed": 1})
    e = estimate(cells)
    assert e.low <= e.mean <= e.high
    d = paired_difference(cells.assign(data_hash="d", depth="", subtask=""),
                          cells.assign(data_hash="d", depth="", subtask="", value=1 - cells["value"]))
    assert d.low <= d.high

# --- (b) perplexity pools back to the records exactly ------------------------------------------------------------


def documents(seed=0, count=7, longest=300):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(40, longest, (count,), generator=g).tolist()
    return [DocumentScore(torch.rand(n, generator=g, dtype=torch.float64).float() * 8, 3 * n + i)
            for i, n in enumerate(lengths)]


def units_of(outcomes, seed=1):
    return pd.DataFrame([{"seed": seed, "cell": 0, **KEYS, "sample": o.sample, **o.metrics} for o in outcomes])


def test_per_document_perplexity_weights_back_to_the_pooled_record_value_exactly():
    scores, ends = documents(), [64, 128, 256, 512]
    per_bucket = document_outcomes(scores, ends)
    for end, total, count in bucket_table(scores, ends):  # what the task records per bucket
        units = units_of(per_bucket[end])
        e = sample_estimate(units, "ppl")
        assert e.mean == math.exp(total / count) and e.n == count
        assert np.isfinite([e.low, e.high]).all()
        assert e.low < e.mean < e.high if len(units) > 1 else e.low == e.mean == e.high  # one document: no spread
        per_doc = units["nll"] / units["tokens"]  # weighted back by tokens, log-perplexities pool to the record
        assert math.exp((per_doc * units["tokens"]).sum() / units["tokens"].sum()) == pytest.approx(e.mean, rel=1e-12)
        if len(units) > 1:  # the plain mean of the documents' perplexities does not
            assert np.exp(per_doc).mean() != pytest.approx(e.mean, rel=1e-3)
    whole = overall(scores)  # the whole-document records
    docs = units_of([type(o)(i, {"nll": float(s.nll.double().sum()), "tokens": len(s.nll), "bytes": s.n_bytes})
                     for i, (s, o) in enumerate(zip(scores, per_bucket[64], strict=True))])
    est = ratio_estimate(docs)
    for metric in ("ppl", "nll", "bits_per_byte"):
        assert est[metric].mean == whole[metric], metric
        assert est[metric].low < est[metric].mean < est[metric].high
    assert est["ppl"].low == pytest.approx(math.exp(est["nll"].low))  # one bootstrap, two scales
    assert est["ppl"].n == est["nll"].n == sum(len(s.nll) for s in scores)


# --- a synthetic sweep with sidecars -----------------------------------------------------------------------------


def record(mechanism, task, length, metric, value, n, depth=None, subtask=None, seed=1, data_hash=None):
    r = dict.fromkeys(FIELDS)
    r.update(run_id=mechanism, sweep="synthetic", mechanism=mechanism, options={"window": 64} if mechanism ==
             "sliding_window" else {}, task=task, subtask=subtask, model="tiny", seed=seed, train_length=256,
             context_length=length, depth=depth, metric=metric, value=value, n=n, state_bytes=1000,
             tokens_per_s=1e4, config_hash=f"{mechanism}-{task}-{seed}",
             data_hash=data_hash or f"{task}-{length}-{depth}", git_sha="abc", created_at="2026-11-29T00:00:00Z")
    return r


def sample_row(r, i, metrics):
    return {"config_hash": r["config_hash"], "task": r["task"], "subtask": r["subtask"],
            "context_length": r["context_length"], "depth": r["depth"], "data_hash": r["data_hash"], "sample": i,
            "metrics": metrics, "prediction": None, "gold": None, "positions": None}


def synthetic_sweep(seeds=(1,)):
    """Records and sidecar rows of full and sliding_window on passkey (two lengths, two depths, 30 prompts) and
    perplexity (two buckets and whole documents, 6 documents): sliding_window misses more prompts, and has a
    lower NLL on every document (it is better)."""
    rng = np.random.default_rng(3)
    records, sidecars = [], {}
    base = documents(count=6, longest=256)  # the same documents for every seed, scored a little differently
    scores = {s: [DocumentScore(d.nll * (1 + 0.03 * i), d.n_bytes) for d in base] for i, s in enumerate(seeds)}
    for seed in seeds:
        for mech, p in (("full", 0.8), ("sliding_window", 0.5)):
            for length in (128, 256):
                for depth in (0.0, 1.0):
                    hits = (rng.random(30) < p).astype(float)
                    digits = np.where(hits == 1, 1.0, rng.integers(0, 5, 30) / 5)
                    for metric, v in (("exact_match", hits), ("digit_accuracy", digits)):
                        records.append(record(mech, "passkey", length, metric, sum(v.tolist()) / 30, 30, depth,
                                              seed=seed))
                    sidecars.setdefault(records[-1]["config_hash"], []).extend(
                        sample_row(records[-1], i, {"exact_match": h, "digit_accuracy": d})
                        for i, (h, d) in enumerate(zip(hits, digits, strict=True)))
            factor = 1.0 if mech == "full" else 0.9
            docs = [DocumentScore(s.nll * factor, s.n_bytes) for s in scores[seed]]
            data_hash = "docs"
            for end, total, count in bucket_table(docs, [64, 256]):
                records.append(record(mech, "perplexity", end, "ppl", math.exp(total / count), count,
                                      seed=seed, data_hash=data_hash))
                sidecars.setdefault(records[-1]["config_hash"], []).extend(
                    sample_row(records[-1], o.sample, o.metrics) for o in document_outcomes(docs, [64, 256])[end])
            longest, n_tokens = max(len(d.nll) for d in docs), sum(len(d.nll) for d in docs)
            for metric, value in overall(docs).items():
                records.append(record(mech, "perplexity", longest, metric, value, n_tokens, subtask="overall",
                                      seed=seed, data_hash=data_hash))
            sidecars[records[-1]["config_hash"]].extend(
                sample_row(records[-1], i, {"nll": float(d.nll.double().sum()), "tokens": len(d.nll),
                                            "bytes": d.n_bytes}) for i, d in enumerate(docs))
    return records, sidecars


def write_sweep(tmp_path, records, sidecars, only=None):
    path = tmp_path / "sweep_dir" / "records.jsonl"  # not the records' sweep name: sidecars follow the file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for config_hash, rows in sidecars.items():
        if only is None or config_hash in only:
            out = samples_path(path, config_hash)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- (c) without samples: exactly today's numbers ----------------------------------------------------------------


def aggregate_estimates(df):
    """tables.estimates as it was before samples were kept (verbatim)."""
    rows = []
    for (task, metric, mech, length), group in df.groupby(["task", "metric", "mechanism", "context_length"]):
        e = estimate(group)
        if not tables.higher_is_better(metric) and len(group["seed"].unique()) < 2:
            e = Estimate(e.mean, float("nan"), float("nan"), e.n)
        rows.append({"task": task, "metric": metric, "mechanism": mech, "context_length": length,
                     "mean": e.mean, "low": e.low, "high": e.high, "n": e.n})
    return pd.DataFrame(rows)


def aggregate_paired(df):
    """tables.paired as it was before samples were kept (verbatim, plus the calibration flag and the seed count it
    gained since)."""
    rows = []
    uncalibrated = tables.uncalibrated_tasks(df)
    for (task, metric, length), group in df.groupby(["task", "metric", "context_length"]):
        ref = group[group["mechanism"] == tables.REFERENCE]
        for mech, cells_ in group[group["mechanism"] != tables.REFERENCE].groupby("mechanism"):
            d = paired_difference(cells_, ref) if not ref.empty else None
            if d is not None:
                judged = tables.verdict(d, metric)
                if task in uncalibrated:
                    judged = f"uncalibrated ({tables.REFERENCE}: {uncalibrated[task]:.2f})"
                rows.append({"task": task, "metric": metric, "mechanism": mech, "context_length": length,
                             "diff": d.mean, "low": d.low, "high": d.high, "n": d.n, "verdict": judged,
                             "seeds": min(cells_["seed"].nunique(), ref["seed"].nunique())})
    return pd.DataFrame(rows)


def test_without_sidecars_estimates_and_paired_are_exactly_the_records_only_method(tmp_path):
    records, _ = synthetic_sweep()
    path = write_sweep(tmp_path, records, {})
    df = cells(records)
    samples = load_samples([path])
    assert samples.empty and index_samples(samples) is None
    before_est, before_pairs = aggregate_estimates(df), aggregate_paired(df)
    for rows in (None, samples):
        pd.testing.assert_frame_equal(tables.estimates(df, rows), before_est, check_exact=True)
        pd.testing.assert_frame_equal(tables.paired(df, rows), before_pairs, check_exact=True)
    pd.testing.assert_frame_equal(tables.estimates(df), before_est, check_exact=True)


def test_an_entry_uses_samples_only_when_every_cell_has_them_and_they_add_up(tmp_path):
    records, sidecars = synthetic_sweep()
    df = cells(records)
    before_est, before_pairs = aggregate_estimates(df).set_index(["task", "metric", "mechanism", "context_length"]), \
        aggregate_paired(df).set_index(["task", "metric", "mechanism", "context_length"])
    # sliding_window's passkey cell has no sidecar: its entries and every passkey comparison keep the records method
    path = write_sweep(tmp_path, records, sidecars, only={"full-passkey-1", "full-perplexity-1",
                                                          "sliding_window-perplexity-1"})
    samples = load_samples([path])
    est = tables.estimates(df, samples).set_index(before_est.index.names)
    pairs = tables.paired(df, samples).set_index(before_pairs.index.names)
    passkey_sw = est.index.get_level_values("mechanism") == "sliding_window"
    passkey = est.index.get_level_values("task") == "passkey"
    pd.testing.assert_frame_equal(est[passkey & passkey_sw], before_est[passkey & passkey_sw], check_exact=True)
    on_passkey = pairs.index.get_level_values("task") == "passkey"
    pd.testing.assert_frame_equal(pairs[on_passkey], before_pairs[on_passkey], check_exact=True)
    # full's passkey cells have samples: same means, intervals from the samples (here narrower than Bernoulli's
    # for digit_accuracy, whose per-sample values are not 0/1)
    full = est.xs(("passkey", "digit_accuracy", "full"), level=["task", "metric", "mechanism"])
    old = before_est.xs(("passkey", "digit_accuracy", "full"), level=["task", "metric", "mechanism"])
    assert np.allclose(full["mean"], old["mean"], rtol=0, atol=1e-12)
    assert ((full["high"] - full["low"]) < (old["high"] - old["low"])).all()
    # a sidecar that does not add up to its record counts as none
    bad = [r | {"value": 0.123} if r["config_hash"] == "full-passkey-1" and r["metric"] == "exact_match"
           and r["context_length"] == 128 and r["depth"] == 0.0 else r for r in records]
    bad_df = cells(bad)
    index = index_samples(samples)
    entry = bad_df[(bad_df["mechanism"] == "full") & (bad_df["task"] == "passkey") & (bad_df["metric"] ==
                                                                                        "exact_match")]
    assert entry_units(entry[entry["context_length"] == 128], samples, index, "exact_match") is None
    assert entry_units(entry[entry["context_length"] == 256], samples, index, "exact_match") is not None


# --- (d) perplexity verdicts get an interval ---------------------------------------------------------------------


def test_perplexity_paired_verdict_gets_a_finite_interval_with_samples(tmp_path):
    records, sidecars = synthetic_sweep()
    path = write_sweep(tmp_path, records, sidecars)
    df, samples = cells(records), load_samples([path])
    before = aggregate_paired(df)
    after = tables.paired(df, samples)
    ppl_before = before[before["metric"] == "ppl"]
    assert ppl_before["low"].isna().all() and (ppl_before["verdict"] == "no interval").all()  # records: no interval
    ppl = after[after["metric"].isin(["ppl", "nll", "bits_per_byte"])]
    assert len(ppl) == len(before[before["metric"].isin(["ppl", "nll", "bits_per_byte"])]) == 5
    assert np.isfinite(ppl[["low", "high"]].to_numpy()).all()
    assert (ppl["high"] < 0).all() and (ppl["verdict"] == "better").all()  # a lower NLL on every document
    # one cell a side: the difference is that of the records' values, to the last bit
    value = df.set_index(["mechanism", "task", "metric", "context_length"])["value"]
    for row in ppl.itertuples():
        assert row.diff == value[(row.mechanism, row.task, row.metric, row.context_length)] - \
            value[("full", row.task, row.metric, row.context_length)]
    # a perplexity entry is one cell: its estimate is the record's value, with an interval that holds it
    est = tables.estimates(df, samples)
    merged = est.merge(df, on=["task", "metric", "mechanism", "context_length"])
    merged = merged[merged["task"].str.startswith("perplexity")]
    assert len(merged) == 10 and (merged["mean"] == merged["value"]).all()
    assert np.isfinite(est[["low", "high"]].to_numpy()).all() and (est["low"] <= est["mean"]).all()
    assert (est["mean"] <= est["high"]).all()
    # on the log scale (nats per token): the same verdict, the difference of the records' log-perplexities
    full, sw = (entry_units(df[(df["mechanism"] == m) & (df["task"] == "perplexity") & (df["metric"] == "ppl")
                               & (df["context_length"] == 256)], samples, index_samples(samples), "ppl")
                for m in ("full", "sliding_window"))
    log = sample_paired_difference(sw, full, "ppl", log=True)
    ppl_full, ppl_sw = (value[(m, "perplexity", "ppl", 256)] for m in ("full", "sliding_window"))
    assert log.high < 0 and log.mean == pytest.approx(math.log(ppl_sw) - math.log(ppl_full), rel=1e-12)
    assert log.mean == pytest.approx(-0.1 * math.log(ppl_full), rel=1e-5)  # sliding_window: 0.9 x the NLL


def test_hierarchical_paired_perplexity_over_seeds_pairs_each_seed_with_its_own_reference(tmp_path):
    records, sidecars = synthetic_sweep(seeds=(1, 2, 3))
    path = write_sweep(tmp_path, records, sidecars)
    samples = load_samples([path])
    df = cells(records)
    df = df.assign(mechanism=df["mechanism"].str.split(" ").str[0])  # one label per mechanism across seeds
    pairs = tables.paired(df, samples)
    ppl = pairs[pairs["metric"] == "ppl"]
    assert len(ppl) == 3 and np.isfinite(ppl[["low", "high"]].to_numpy()).all()  # two buckets, whole documents
    assert (ppl["verdict"] == "better").all()
    n_tokens = df[(df["mechanism"] == "full") & (df["metric"] == "ppl")].groupby(["task", "context_length"])["n"]
    assert list(ppl.sort_values(["task", "context_length"])["n"]) == list(n_tokens.sum())  # each seed's docs once
    one_seed = tables.paired(df[df["seed"] == 1], samples)
    one_seed = one_seed[one_seed["metric"] == "ppl"]
    assert (ppl["high"].to_numpy() - ppl["low"].to_numpy() > 0).all()
    assert list(one_seed["n"] * 3) == list(ppl["n"])


def test_report_with_sidecars_writes_paired_perplexity_intervals(tmp_path):
    records, sidecars = synthetic_sweep()
    path = write_sweep(tmp_path, records, sidecars)
    build_report([path], tmp_path / "report")
    pairs = pd.read_csv(tmp_path / "report" / "tables" / "paired_vs_full.csv")
    ppl = pairs[pairs["metric"] == "ppl"]
    assert not ppl.empty and ppl["low"].notna().all() and (ppl["verdict"] == "better").all()
    ppl_table = pd.read_csv(tmp_path / "report" / "tables" / "perplexity_ppl.csv")
    assert ppl_table["low"].notna().all()
