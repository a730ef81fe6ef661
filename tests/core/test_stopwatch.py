"""Phases count only inside a collection, add up when repeated, count a phase that raised, and a nested collection
keeps its own phases out of the outer one (on a fake clock: every reading is one second later)."""

from __future__ import annotations

import itertools

import pytest

from bench.core import stopwatch


def test_phases_add_up_inside_a_collection_and_nowhere_else(monkeypatch):
    clock = itertools.count()
    monkeypatch.setattr(stopwatch, "perf_counter", lambda: float(next(clock)))
    with stopwatch.phase("train"):  # no collection: nothing to add to, and no error
        pass
    with stopwatch.collecting() as spent:
        for _ in range(2):
            with stopwatch.phase("train"):  # each phase spans one tick
                pass
        with pytest.raises(RuntimeError), stopwatch.phase("base"):
            raise RuntimeError("diverged")
        with stopwatch.collecting() as inner, stopwatch.phase("train"):
            pass
    assert spent == {"train": 2.0, "base": 1.0} and inner == {"train": 1.0}
