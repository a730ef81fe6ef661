"""Training batches made ahead, off the optimisation step's critical path.

Batches are pure Python (each task's `training_sample`), so a background thread builds the next ones while the
step runs in torch, which releases the GIL. One thread draws every batch in order, so the stream is the one the
loop would draw itself, bit for bit (tests/training/test_prefetch.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Ahead(Iterator[T]):
    """Iterate `items` from a daemon thread that stays at most `depth` items ahead. An exception in the producer
    is raised in the consumer at the item where it happened; `close()` (or leaving a `with` block) stops it."""

    def __init__(self, items: Iterable[T], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(items),), daemon=True,
                                        name="batch-prefetch")
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(_Failed(error))
            return
        self._put(_DONE)

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
