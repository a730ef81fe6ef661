"""Simulated result stores: records and per-sample sidecars as a sweep writes them, with known truths."""

from bench.results.records import RunInfo, append_records, records_path
from bench.results.samples import sample_rows, write_samples
from tasks.base import CellResult, SampleOutcome

LENGTHS = (128, 512)


def write_study(results, sweep, truth, rng, n=100, seeds=(1, 2, 3)):
    """passkey exact_match for every (mechanism, seed): 0/1 outcomes with success rate truth[mechanism][length],
    the same prompts (data_hash) for every mechanism, as a real sweep has them."""
    path = records_path(results, sweep)
    for mech, rates in truth.items():
        for seed in seeds:
            info = RunInfo(sweep=sweep, mechanism=mech, options={}, task="passkey", model="tiny", seed=seed,
                           train_length=256, config_hash=f"{mech}-{seed}", run_id=f"{mech}{seed}", git_sha="abc",
                           created_at="2026-11-29T00:00:00+00:00")
            cells = []
            for length in LENGTHS:
                hits = (rng.random(n) < rates[length]).astype(float)
                outcomes = [SampleOutcome(i, {"exact_match": float(h)}, "12345" if h else "99999", "12345",
                                          {"needle": [10, 30]}) for i, h in enumerate(hits)]
                cells.append(CellResult(context_length=length, metric="exact_match", value=float(hits.mean()), n=n,
                                        depth=0.5, data_hash=f"prompts-{length}", samples=outcomes))
            write_samples(path, info.config_hash, sample_rows(info.config_hash, "passkey", cells))
            append_records(path, [info.record(context_length=c.context_length, metric=c.metric, value=c.value,
                                              n=c.n, depth=c.depth, data_hash=c.data_hash) for c in cells])
    return path
