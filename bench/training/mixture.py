"""The training data: a weighted mixture of the tasks' training streams, drawn one task per row, one length per
batch, and the row shape a mechanism trains with."""

from __future__ import annotations

from typing import Any

import torch

import mechanisms
from tasks.base import Task, train_rng

MIN_UNITS_PER_SEQUENCE = 8  # segments/blocks per training sequence for memory to learn (docs/design.md, Training)


class Mixture:
    """Draws training batches: one length per batch (a short-to-long curriculum), one task per sample."""

    def __init__(self, task_objs: dict[str, Task], weights: dict[str, float], seed: int) -> None:
        self.tasks = task_objs
        # Sorted: the stream must depend on the mapping alone, as the checkpoint key does (content_hash sorts keys);
        # in dict order, the same mixture written in another order drew another stream under the same key.
        self.names = sorted(n for n in weights if weights[n] > 0)
        self.weights = [weights[n] for n in self.names]
        self.rng = train_rng(seed)

    def batch(self, batch_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, weights = [], []
        for _ in range(batch_size):
            task = self.tasks[self.rng.choices(self.names, self.weights)[0]]
            tokens, w = task.training_sample(self.rng, length)
            rows.append(tokens)
            weights.append(w)
        t = torch.tensor(rows)
        return t[:, :-1], t[:, 1:], torch.tensor(weights)


def min_training_length(task_objs) -> int:
    """The shortest training row every mixture task can fill (its fixed text) with some room to vary."""
    return max(t.min_length() for t in task_objs) + 8


def training_shape(train_cfg: Any, options: dict[str, Any]) -> tuple[int, int]:
    """(train_length, batch_size) the mechanism of `options` trains with. Memory only learns to cross boundaries
    it sees in training, so the recipe wants >= MIN_UNITS_PER_SEQUENCE segments/blocks per sequence (docs/design.md):
    a shorter `train.train_length` is raised to hold them, and the batch shrinks in proportion so that a step sees
    the same number of tokens as every other mechanism's (the comparison keeps one token budget)."""
    name, rest = options["name"], {k: v for k, v in options.items() if k != "name"}
    unit = mechanisms.options(name, **rest).memory_unit()
    length, batch = train_cfg.train_length, train_cfg.batch_size
    if not unit or length >= MIN_UNITS_PER_SEQUENCE * unit:
        return length, batch
    raised = MIN_UNITS_PER_SEQUENCE * unit
    return raised, max(1, batch * length // raised)
