"""Multi-query associative recall (MQAR; Arora et al. 2023, Zoology): how many key -> value bindings a memory holds.

A row is N key-value pairs, then a query region in which every key comes back once, followed by its value, at a
gap drawn from a power law (most queries soon after the pairs, a long tail far away); the rest of the region is
filler. Keys, values and filler come from disjoint id ranges, each key and each value is used once per row, and only
the queried values are supervised and scored: N answers per row, so a small model learns it (dense supervision),
and N is the knob a memory's capacity is read against. `exact_match` is the share of a row's queried values
recalled exactly (a row's mean over its N queries; the cell's mean over rows), under the name every other task's
headline metric has, so the report's calibration gate and verdicts read it like the others.

Conventions Zoology leaves to its code, decided here:
- Our rows are next-token streams, so the value follows its query key as a real token (Zoology scores it as a label
  after a noise token). A later query can see an earlier query's value; it never sees its own.
- Filler comes from its own id range (Zoology draws non-query tokens from the whole vocabulary), so a filler token
  is never mistaken for a key.
- Scored per query by teacher forcing: the prompt up to the query key, then whether the greedy next token is the
  value (`LongContextLM.loglikelihood`), which every model in the suite answers, retrieval included.
Each sample's outcome stores every query's key position, query position and hit, so accuracy can be read as a
function of the key -> query distance (`query_outcomes`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from bench.core.protocols import Tokenizer
from tasks.base import CellResult, SampleOutcome, Task, TaskData, TaskOptions, eval_rng
from tasks.data.cache import cached_rows
from tasks.registry import register

GENERATOR_VERSION = "mqar-v1"  # bump when a row's layout changes: cached samples are keyed by it


@dataclasses.dataclass
class MqarOptions(TaskOptions):
    num_kv_pairs: list[int] = dataclasses.field(default_factory=lambda: [4, 8, 16])  # one subtask per count
    vocab_size: int = 128  # key and value ids: the first half keys, the second values (Zoology's minimal: 256)
    power_a: float = 0.01  # query slot s (from the region's start) has weight (s + 1) ** (power_a - 1) (Zoology)

    def validate(self) -> None:
        if not self.num_kv_pairs or any(n < 1 for n in self.num_kv_pairs):
            raise ConfigError(f"task.num_kv_pairs must be positive pair counts, got {list(self.num_kv_pairs)}")
        if self.vocab_size < 2 or self.vocab_size % 2:
            raise ConfigError(f"task.vocab_size must be an even number >= 2, got {self.vocab_size}")
        if max(self.num_kv_pairs) > self.vocab_size // 2:
            raise ConfigError(f"task.num_kv_pairs: {max(self.num_kv_pairs)} pairs need as many distinct keys, and "
                              f"task.vocab_size={self.vocab_size} has {self.vocab_size // 2}")
        if not 0.0 < self.power_a <= 1.0:
            raise ConfigError(f"task.power_a must lie in (0, 1], got {self.power_a}")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    keys: list[int]
    values: list[int]
    filler: list[int]

    @classmethod
    def of(cls, tokenizer: Tokenizer, size: int) -> Vocabulary:
        specials = {tokenizer.bos_id, tokenizer.eos_id, getattr(tokenizer, "pad_id", None)}
        usable = [i for i in range(tokenizer.vocab_size) if i not in specials]
        if len(usable) <= size:
            raise ConfigError(f"task.vocab_size={size} leaves no filler ids in a tokenizer of {len(usable)} "
                              f"ordinary ids")
        return cls(usable[: size // 2], usable[size // 2 : size], usable[size:])


def query_slots(rng: random.Random, n_slots: int, n_queries: int, power_a: float) -> list[int]:
    """`n_queries` distinct slot indices in [0, n_slots), drawn one by one without replacement with weight
    (s + 1) ** (power_a - 1): Zoology's power law over the gap from the start of the query region."""
    remaining = list(range(n_slots))
    weights = [(s + 1) ** (power_a - 1) for s in remaining]
    picked = []
    for _ in range(n_queries):
        i = rng.choices(range(len(remaining)), weights)[0]
        picked.append(remaining.pop(i))
        weights.pop(i)
    return sorted(picked)


def build_row(rng: random.Random, vocab: Vocabulary, length: int, n_pairs: int, power_a: float) -> dict[str, Any]:
    """A row of exactly `length` tokens: the pairs, then the query region. `key_positions[j]` and
    `query_positions[j]` are where the j-th key stands in the pairs and where it is queried; the value follows
    each, at position + 1."""
    if 4 * n_pairs > length:
        raise ConfigError(f"mqar: {n_pairs} pairs need {4 * n_pairs} tokens (pairs and their queries), and the "
                          f"context length is {length}")
    keys, values = rng.sample(vocab.keys, n_pairs), rng.sample(vocab.values, n_pairs)
    row = [t for pair in zip(keys, values, strict=True) for t in pair]
    region = length - 2 * n_pairs
    slots = query_slots(rng, region // 2, n_pairs, power_a)
    order = rng.sample(range(n_pairs), n_pairs)  # which key each chosen slot queries
    queried = dict(zip(slots, order, strict=True))
    query_positions = [0] * n_pairs
    for slot in range(region // 2):
        if slot in queried:
            j = queried[slot]
            query_positions[j] = len(row)
            row += [keys[j], values[j]]
        else:
            row += [rng.choice(vocab.filler), rng.choice(vocab.filler)]
    row += [rng.choice(vocab.filler) for _ in range(region % 2)]
    return {"tokens": row, "key_positions": [2 * j for j in range(n_pairs)], "query_positions": query_positions}


def query_outcomes(outcome: SampleOutcome) -> list[tuple[int, bool]]:
    """(key -> query distance in tokens, hit) for every query of one sample's stored outcome."""
    p = outcome.positions or {}
    return [(q - k, bool(h)) for k, q, h in zip(p["key"], p["query"], p["hits"], strict=True)]


@register
class MqarTask(Task):
    name = "mqar"
    Options = MqarOptions

    def __init__(self, options: MqarOptions, tokenizer: Tokenizer, data: TaskData | None = None) -> None:
        super().__init__(options, tokenizer, data)
        self.vocab = Vocabulary.of(tokenizer, options.vocab_size)

    def min_length(self) -> int:
        return 4 * min(self.options.num_kv_pairs)

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """<bos> + a row of `length` tokens with a pair count drawn from the task's counts that fit (all rows of
        a batch share the length, not the count); every queried value is a target, nothing else."""
        fitting = [n for n in self.options.num_kv_pairs if 4 * n <= length] or [length // 4]
        row = build_row(rng, self.vocab, length, rng.choice(fitting), self.options.power_a)
        weights = [0.0] * length
        for q in row["query_positions"]:
            weights[q + 1] = 1.0  # target i is row token i (inputs start at <bos>): the value at q + 1
        return [self.tokenizer.bos_id, *row["tokens"]], weights

    def samples(self, length: int, n_pairs: int, n: int, seed: int) -> list[dict[str, Any]]:
        """The `n` evaluation rows of a cell, cached as a dataset under the hash of everything that made them."""
        o = self.options

        def build() -> list[dict[str, Any]]:
            rng = eval_rng(seed, self.name, length, n_pairs)
            return [build_row(rng, self.vocab, length, n_pairs, o.power_a) for _ in range(n)]

        key = [GENERATOR_VERSION, length, n_pairs, n, seed, o.vocab_size, o.power_a, self.tokenizer.fingerprint]
        return cached_rows("mqar", key, build, self.data.cache_dir)

    def evaluate(self, lm, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        results = []
        for length in lengths:
            state_bytes = lm.state_bytes_after(length)
            for n_pairs in self.options.num_kv_pairs:
                rows = self.samples(length, n_pairs, n, seed)
                started, outcomes, scored = time.perf_counter(), [], 0
                for i, row in enumerate(rows):
                    tokens = row["tokens"]
                    hits = [lm.loglikelihood(tokens[: q + 1], [tokens[q + 1]])[1] for q in row["query_positions"]]
                    scored += sum(q + 2 for q in row["query_positions"])
                    outcomes.append(SampleOutcome(
                        i, {"exact_match": sum(hits) / n_pairs}, f"{sum(hits)}/{n_pairs} values recalled",
                        self.tokenizer.decode([tokens[q + 1] for q in row["query_positions"]]),
                        {"key": row["key_positions"], "query": row["query_positions"], "hits": [int(h) for h in hits]}))
                elapsed = time.perf_counter() - started
                results.append(CellResult(
                    context_length=length, metric="exact_match", subtask=f"kv{n_pairs}", n=n,
                    value=sum(o.metrics["exact_match"] for o in outcomes) / n, state_bytes=state_bytes,
                    tokens_per_s=scored / elapsed, data_hash=content_hash([r["tokens"] for r in rows]),
                    samples=outcomes))
        return results
