"""MQAR rows (Zoology's layout, tasks/mqar.py): disjoint id ranges, every key once in the pairs and once queried,
every query's gold is its pair's value, the power-law gaps, dense supervision; scoring on fixture models whose
recall is known; determinism and the data cache."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.core.errors import ConfigError
from bench.models.tokenizers import ByteTokenizer
from tasks.mqar import MqarOptions, MqarTask, Vocabulary, build_row, query_outcomes, query_slots
from tests.helpers.recall import RecallLM

TOK = ByteTokenizer()
VOCAB = Vocabulary.of(TOK, 128)


def test_id_ranges_are_disjoint_and_avoid_specials():
    keys, values, filler = set(VOCAB.keys), set(VOCAB.values), set(VOCAB.filler)
    assert len(keys) == len(values) == 64 and filler
    assert not (keys & values or keys & filler or values & filler)
    assert not {TOK.bos_id, TOK.eos_id} & (keys | values | filler)


@settings(max_examples=60, deadline=None)
@given(n_pairs=st.integers(1, 40), extra=st.integers(0, 200), power_a=st.floats(0.01, 1.0), seed=st.integers(0, 10**6))
def test_row_invariants(n_pairs, extra, power_a, seed):
    length = 4 * n_pairs + extra
    row = build_row(random.Random(seed), VOCAB, length, n_pairs, power_a)
    tokens, kpos, qpos = row["tokens"], row["key_positions"], row["query_positions"]
    assert len(tokens) == length
    pair_keys = [tokens[p] for p in kpos]
    pair_values = {tokens[p]: tokens[p + 1] for p in kpos}
    assert kpos == list(range(0, 2 * n_pairs, 2))
    assert len(set(pair_keys)) == n_pairs and set(pair_keys) <= set(VOCAB.keys)  # each key once
    assert len(set(pair_values.values())) == n_pairs and set(pair_values.values()) <= set(VOCAB.values)
    assert sorted(tokens[q] for q in qpos) == sorted(pair_keys)  # every key queried, once
    for k, q in zip(kpos, qpos, strict=True):
        assert tokens[q] == tokens[k] and tokens[q + 1] == tokens[k + 1]  # the gold is its pair's value
        assert q >= 2 * n_pairs and q > k
    key_ids = set(VOCAB.keys)
    assert sum(t in key_ids for t in tokens) == 2 * n_pairs  # no key anywhere else (filler is its own range)


def test_query_gaps_follow_the_power_law():
    """With power_a = 0.01 most queries sit in the first slots of the region; with 1.0 they are uniform."""
    rng = random.Random(0)
    steep = [s for _ in range(300) for s in query_slots(rng, 100, 4, 0.01)]
    flat = [s for _ in range(300) for s in query_slots(rng, 100, 4, 1.0)]
    assert sorted(steep)[len(steep) // 2] < 15 < 35 < sorted(flat)[len(flat) // 2]
    assert max(steep) > 50  # a long tail, not a cut-off
    assert all(len(set(query_slots(rng, 10, 10, 0.01))) == 10 for _ in range(20))  # without replacement


def test_training_rows_supervise_exactly_the_queried_values():
    task = MqarTask(MqarOptions(name="mqar", num_kv_pairs=[4, 8]), TOK)
    for length in (40, 200):
        tokens, weights = task.training_sample(random.Random(length), length)
        targets = tokens[1:]
        supervised = [targets[i] for i, w in enumerate(weights) if w]
        assert len(supervised) in (4, 8) and set(supervised) <= set(VOCAB.values)
        for i, w in enumerate(weights):
            if w:  # the input at a supervised target is the query key whose value it is
                key = tokens[i]
                assert key in VOCAB.keys and tokens[1:][tokens[1:].index(key) + 1] == targets[i]


@pytest.fixture
def task(tmp_path):
    from tasks.base import TaskData

    return MqarTask(MqarOptions(name="mqar", num_kv_pairs=[2, 8]), TOK, TaskData(None, tmp_path))


def test_scoring_with_a_perfect_and_a_windowed_memory(task):
    perfect = task.evaluate(RecallLM(10**9), [96], n=20, seed=0)
    assert {r.subtask: r.value for r in perfect} == {"kv2": 1.0, "kv8": 1.0}
    reach = 40
    windowed = task.evaluate(RecallLM(reach), [96], n=20, seed=0)
    every = [hit for cell in windowed for s in cell.samples for _, hit in query_outcomes(s)]
    assert any(every) and not all(every)  # the windowed model both recalls and misses
    for cell in windowed:
        outcomes = [q for s in cell.samples for q in query_outcomes(s)]
        assert len(outcomes) == 20 * int(cell.subtask[2:])
        assert all(hit == (distance <= reach) for distance, hit in outcomes)  # distances as stored
        assert cell.value == pytest.approx(sum(h for _, h in outcomes) / len(outcomes))
        assert cell.metric == "exact_match" and cell.n == 20 and cell.data_hash


def test_samples_are_deterministic_and_cached(task, tmp_path, monkeypatch):
    first = task.samples(96, 8, 5, seed=3)
    assert len(list((tmp_path / "datasets").glob("mqar-*"))) == 1
    monkeypatch.setattr("tasks.mqar.build_row", lambda *a: pytest.fail("rebuilt instead of read from the cache"))
    assert task.samples(96, 8, 5, seed=3) == first
    monkeypatch.undo()
    assert task.samples(96, 8, 5, seed=4) != first


@pytest.mark.parametrize("options,key", [
    ({"num_kv_pairs": []}, "task.num_kv_pairs"),
    ({"num_kv_pairs": [0]}, "task.num_kv_pairs"),
    ({"vocab_size": 127}, "task.vocab_size"),
    ({"num_kv_pairs": [65], "vocab_size": 128}, "task.num_kv_pairs"),
    ({"power_a": 0.0}, "task.power_a"),
])
def test_bad_options_name_their_key(options, key):
    with pytest.raises(ConfigError, match=key):
        MqarOptions(name="mqar", **options).validate()


def test_rows_too_short_for_their_pairs_are_refused():
    with pytest.raises(ConfigError, match="8 pairs need 32 tokens"):
        build_row(random.Random(0), VOCAB, 31, 8, 0.01)
    with pytest.raises(ConfigError, match="task.vocab_size"):
        Vocabulary.of(TOK, 512)
