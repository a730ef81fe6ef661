"""The task contract: a family that (1) contributes a training stream with seeds disjoint from evaluation,
(2) supplies text for the BPE tokenizer, and (3) scores a `LongContextLM` on a grid of cells."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, ClassVar

from bench.core.errors import ConfigError

# Training draws seeds below this offset, evaluation at or above it: the two never share a sample.
EVAL_SEED_OFFSET = 1_000_003


@dataclasses.dataclass
class TaskOptions:
    name: str = "?"

    def validate(self) -> None:
        """Raise ConfigError naming the key when the options cannot work."""


@dataclasses.dataclass
class SampleOutcome:
    """One evaluation sample's outcome: what the report pairs and bootstraps over, and what a reader checks when a
    mechanism misses (the prompt's needle/fact positions, the prediction, the gold answer). The same `sample`
    index within one (context length, depth, subtask) group is the same prompt for every mechanism."""

    sample: int
    metrics: dict[str, float]  # per-sample values whose mean is the record (accuracy), or sums (perplexity)
    prediction: str | None = None
    gold: str | None = None
    positions: dict[str, Any] | None = None  # token spans in the prompt, e.g. {"needle": [start, end]}


@dataclasses.dataclass
class CellResult:
    """One metric of one evaluation cell; bench.results.records adds the run's provenance."""

    context_length: int | None  # None: describes the run, not one context length (e.g. mechanism stats)
    metric: str
    value: float
    n: int
    depth: float | None = None
    subtask: str | None = None
    state_bytes: int | None = None
    tokens_per_s: float | None = None
    data_hash: str | None = None
    # The per-sample outcomes behind this cell's group (context length, depth, subtask): given once per group, on
    # one of the metrics that share the samples; written to results/<sweep>/samples/<config_hash>.jsonl.
    samples: list[SampleOutcome] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TaskData:
    """What tasks that read real text need besides their options: the sweep's corpus (tasks/data/corpus.py) and where
    generated data is cached."""

    corpus: Any  # tasks.data.corpus.Corpus
    cache_dir: Path


class Task:
    name: ClassVar[str]
    Options: ClassVar[type[TaskOptions]]

    def __init__(self, options: TaskOptions, tokenizer: Any, data: TaskData | None = None) -> None:
        self.options, self.tokenizer, self._data = options, tokenizer, data

    @property
    def data(self) -> TaskData:
        if self._data is None:
            raise ConfigError(f"the {self.name} task reads the corpus: construct it with a TaskData")
        return self._data

    @classmethod
    def tokenizer_texts(cls) -> list[str]:
        """Representative text for training the BPE tokenizer (deterministic)."""
        return []

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """A training sequence of exactly `length` + 1 tokens (inputs + shifted targets) and per-target weights.
        It starts with <bos>, as every prompt the harness scores does (`StreamingLM` prepends it). Measured: with
        passkey and long-QA rows trained without it, full attention read the evaluation's <bos> as the start of
        a copy or text row and its in-length passkey score fell from 1.00 to 0.55 (depth 0.5)."""
        raise NotImplementedError

    def min_length(self) -> int:
        return 1

    def evaluate(self, lm: Any, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        raise NotImplementedError


def eval_rng(seed: int, *key: Any) -> random.Random:
    """Deterministic evaluation randomness per cell, from the range training never uses."""
    return random.Random(f"eval:{EVAL_SEED_OFFSET + seed}:{key}")


def train_rng(seed: int) -> random.Random:
    if seed >= EVAL_SEED_OFFSET:
        raise ConfigError(f"train.seed must be < {EVAL_SEED_OFFSET} (evaluation seeds live above it)")
    return random.Random(f"train:{seed}")
