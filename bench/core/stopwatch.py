"""Named wall-clock phases inside one piece of work, so a sweep cell can say where its time went (training the
shared base model, its own training, loading) without every function between the cell and the training loop
returning timings. Phases only count inside `collecting()`; elsewhere `phase()` costs one clock read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

_spent: ContextVar[dict[str, float] | None] = ContextVar("stopwatch_spent", default=None)


@contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Seconds per phase name of everything timed inside the block (nested collections keep their own)."""
    spent: dict[str, float] = {}
    token = _spent.set(spent)
    try:
        yield spent
    finally:
        _spent.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall seconds to `name` in the innermost `collecting()`, if any; a phase that raises still
    counts the time it took."""
    started = perf_counter()
    try:
        yield
    finally:
        spent = _spent.get()
        if spent is not None:
            spent[name] = spent.get(name, 0.0) + perf_counter() - started
