"""Training rows of every registered task (tasks.names()): requested length, <bos> first and nowhere else, training
seeds disjoint from evaluation seeds; the copy task's mix of small-alphabet spans."""

import random

import pytest

import tasks
from bench.core.errors import ConfigError
from bench.models.tokenizers import ByteTokenizer
from tasks.base import EVAL_SEED_OFFSET, train_rng
from tasks.copy import CopyOptions, CopyTask


@pytest.mark.parametrize("name", tasks.names())
def test_training_samples_have_the_requested_length_and_start_with_bos(task_data, name):
    """Every task's rows start with <bos> like the prompts the harness scores (a row without it taught full
    attention a different first token than evaluation shows), and <bos> appears nowhere else."""
    tok = ByteTokenizer()
    task = tasks.get(name)(tasks.get(name).Options(name=name), tok, task_data)
    for length in (task.min_length() + 8, 300):
        tokens, weights = task.training_sample(random.Random(length), length)
        assert len(tokens) == length + 1 and len(weights) == length
        assert tokens[0] == tok.bos_id and tok.bos_id not in tokens[1:]


def test_training_seeds_are_disjoint_from_evaluation_seeds():
    with pytest.raises(ConfigError):
        train_rng(EVAL_SEED_OFFSET)


def test_copy_training_mixes_small_alphabet_spans_that_need_a_longer_matched_prefix():
    """Half the repeated spans use at most 16 distinct tokens, so one token does not say what follows it."""
    task = CopyTask(CopyOptions(name="copy"), ByteTokenizer())
    rng = random.Random(0)
    distinct = [len(set(task.training_sample(rng, 256)[0][1:])) for _ in range(200)]
    small = sum(d <= 16 for d in distinct) / len(distinct)
    assert 0.35 < small < 0.65 and max(distinct) > 16
