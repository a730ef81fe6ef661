"""Name -> task class; importing `tasks` imports every module in the package (one file per task family) and every
installed plugin (entry-point group `memorybench.tasks`).

Adding a task family (checklist; nothing else to edit):
1. `tasks/<name>.py`: an `Options` dataclass (subclass of `TaskOptions`, with `validate`) and a `Task` subclass
   decorated with `@register`: `min_length`, `evaluate(lm, lengths, n, seed) -> list[CellResult]` written against
   `bench.core.protocols.LongContextLM` only, `training_sample` if it joins the training mixture, and
   `tokenizer_texts` for its fixed text. Attach each group's per-sample outcomes (`SampleOutcome`: the
   sample's metric values, prediction, gold, positions) to one of its `CellResult`s as `samples`: the report's
   paired intervals are computed from them. Draw evaluation samples from `eval_rng`, training rows from the
   generator it is handed (the two ranges are disjoint).
2. Optional `conf/task/<name>.yaml`; without one its Options dataclass is the config group entry.
3. Use it: `python -m bench task=<name>`, or add it to a sweep preset in conf/sweep/.
The task suites in tests/tasks/ are parametrised over `names()`.
"""

from __future__ import annotations

from bench.core.errors import ConfigError
from tasks.base import Task

ENTRY_POINT_GROUP = "memorybench.tasks"
_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ConfigError(f"task {name!r} is not a registered task (known: {', '.join(names())})")
    return _REGISTRY[name]
