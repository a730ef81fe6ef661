"""Batches made ahead in a thread are the batches the loop would draw itself, bit for bit and in order, for every
registered task; a failing producer fails the consumer at that batch; closing early stops the producer."""

from __future__ import annotations

import threading

import pytest
import torch

import tasks
from bench.models.tokenizers import ByteTokenizer
from bench.training.loop import batches
from bench.training.mixture import Mixture, min_training_length
from bench.training.prefetch import Ahead
from bench.training.protocols import mixture_tasks
from tests.helpers.config import make


@pytest.mark.parametrize("name", tasks.names())
def test_prefetched_batches_equal_the_ones_drawn_in_the_loop(name, task_data):
    cfg = make("train.batch_size=3", "train.train_length=600", "train.seed=5").train
    tok = ByteTokenizer()
    weights = {"copy": 0.5, name: 0.5} if name != "copy" else {"copy": 1.0}

    def stream():
        mixture = Mixture(mixture_tasks(weights, tok, task_data), weights, seed=5)
        return batches(mixture, cfg, 12, min_training_length(mixture.tasks.values()))

    direct = list(stream())
    with Ahead(stream(), depth=2) as ahead:
        made_ahead = list(ahead)
    assert len(direct) == len(made_ahead) == 12
    assert len({length for length, _ in direct}) > 1  # the curriculum varies the length
    for (length, batch), (length_ahead, batch_ahead) in zip(direct, made_ahead, strict=True):
        assert length == length_ahead
        for t, t_ahead in zip(batch, batch_ahead, strict=True):
            assert t.dtype == t_ahead.dtype and torch.equal(t, t_ahead)


def test_a_failing_producer_fails_the_consumer_at_that_item():
    def items():
        yield 1
        yield 2
        raise ValueError("row 3 could not be built")

    with Ahead(items()) as ahead:
        assert next(ahead) == 1 and next(ahead) == 2
        with pytest.raises(ValueError, match="row 3"):
            next(ahead)


def test_closing_early_stops_the_producer():
    drawn = []

    def endless():
        i = 0
        while True:
            drawn.append(i)
            yield i
            i += 1

    ahead = Ahead(endless(), depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert not any(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(drawn) <= 3 + 2 + 1  # consumed + queued + the one in hand when it stopped
