"""Training shapes: every mechanism of the default sweep trains on rows of >= MIN_UNITS_PER_SEQUENCE of its memory
units at the sweep's token budget per step, and a long enough training length is left as configured."""

import pytest

import mechanisms
from bench.training.mixture import MIN_UNITS_PER_SEQUENCE, training_shape
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
