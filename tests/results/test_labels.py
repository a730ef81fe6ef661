"""Labels: runs that differ only by their training seed share a label (the report then resamples seeds); runs
that differ in anything else the records can see never do."""

from bench.results.records import RunInfo
from bench.results.summary import labelled


def records(seed: int, config_hash: str, data_hash: str = "d1") -> list[dict]:
    run = RunInfo(sweep="s", mechanism="full", options={}, task="passkey", model="tiny-base10+2", seed=seed,
                  train_length=256, config_hash=config_hash)
    return [run.record(context_length=128, depth=d, metric="exact_match", value=0.5, n=4, data_hash=data_hash)
            for d in (0.0, 1.0)]


def test_training_seeds_of_one_configuration_share_a_label():
    rows = records(1, "a") + records(2, "b") + records(3, "c")
    assert set(labelled(rows)["mechanism"]) == {"full"}


def test_configurations_that_differ_otherwise_keep_apart():
    other_samples = records(1, "a") + records(2, "b", data_hash="d2")  # e.g. another eval.n: other samples
    assert labelled(other_samples)["mechanism"].nunique() == 2
    same_seed = records(1, "a") + records(1, "b")  # same seed, different configs: not replicates
    assert labelled(same_seed)["mechanism"].nunique() == 2


def test_an_option_left_at_a_none_default_is_not_shown():
    """neural_memory's inner_lr defaults to None (a per-memory rate): its runs are labelled plainly, not
    `neural_memory(inner_lr=nan)`; a value that differs from the default is still shown."""
    import dataclasses

    import mechanisms

    defaults = {k: v for k, v in dataclasses.asdict(mechanisms.options("neural_memory")).items() if k != "name"}
    rows = []
    for seed, options in ((1, defaults), (2, defaults | {"inner_lr": 0.5})):
        run = RunInfo(sweep="s", mechanism="neural_memory", options=options, task="passkey", model="tiny-base10+2",
                      seed=seed, train_length=512, config_hash=f"h{seed}")
        rows.append(run.record(context_length=128, depth=0.0, metric="exact_match", value=0.5, n=4, data_hash="d"))
    assert list(labelled(rows)["mechanism"]) == ["neural_memory(inner_lr=None)", "neural_memory(inner_lr=0.5)"]
    assert list(labelled(rows[:1])["mechanism"]) == ["neural_memory"]
