"""Training shapes: every mechanism of the default sweep trains on rows of >= MIN_UNITS_PER_SEQUENCE of its memory
units at the sweep's token budget per step, and a long enough training length is left as configured."""

import pytest

import mechanisms
from bench.models.tokenizers import ByteTokenizer
from bench.training.mixture import MIN_UNITS_PER_SEQUENCE, min_training_length, training_shape
from bench.training.protocols import mixture_tasks
from tests.helpers.config import make


@pytest.mark.parametrize("mechanism", mechanisms.names())
def test_training_rows_hold_the_recipes_segments_at_the_same_tokens_per_step(mechanism):
    """Every mechanism of the default sweep trains on rows of >= 8 segments/blocks, and a raised length costs
    batch rows, not tokens: the comparison keeps one token budget per step."""
    cfg = make("sweep=default", f"mechanism={mechanism}")
    options = dict(cfg.mechanism)
    unit = mechanisms.options(**options).memory_unit()
    length, batch = training_shape(cfg.train, options)
    assert length >= cfg.train.train_length and length * batch == cfg.train.train_length * cfg.train.batch_size
    if unit:
        assert length >= MIN_UNITS_PER_SEQUENCE * unit
    else:
        assert (length, batch) == (cfg.train.train_length, cfg.train.batch_size)


def test_a_long_enough_training_length_is_left_as_configured():
    cfg = make("mechanism=infini", "mechanism.segment=16", "train.train_length=300", "train.batch_size=5")
    assert training_shape(cfg.train, dict(cfg.mechanism)) == (300, 5)
    cfg = make("mechanism=fam", "mechanism.block=100", "train.train_length=300", "train.batch_size=5")
    assert training_shape(cfg.train, dict(cfg.mechanism)) == (800, 1)


def test_a_zero_weight_task_does_not_set_the_shortest_training_row(task_data):
    """Only the tasks the mixture draws from are built: passkey's ~100-token prompt at weight 0 must not force an
    MQAR-only mixture's curriculum to start at 109 tokens."""
    tok = ByteTokenizer()
    streams = mixture_tasks({"mqar": 1.0, "passkey": 0.0, "copy": 0}, tok, task_data)
    assert list(streams) == ["mqar"]
    assert min_training_length(streams.values()) == streams["mqar"].min_length() + 8


def test_the_training_stream_depends_on_the_mixture_not_the_order_it_is_written_in(task_data):
    """The checkpoint key hashes the mixture with sorted keys, so two orders of one mixture share a checkpoint:
    they must draw the same rows."""
    from bench.training.mixture import Mixture

    tok = ByteTokenizer()
    weights = {"copy": 0.35, "passkey": 0.2, "perplexity": 0.05}
    reordered = dict(reversed(list(weights.items())))
    draws = []
    for w in (weights, reordered):
        batches = Mixture(mixture_tasks(w, tok, task_data), w, seed=3)
        draws.append([batches.batch(4, 300)[0] for _ in range(3)])
    assert all(a.equal(b) for a, b in zip(*draws, strict=True))
