"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a torn one.

Write to a temp file in the same folder, fsync it, rename it over the target, then fsync the folder so the rename
itself survives a power loss. Every file the suite replaces as a whole (checkpoints, digests, manifests, summaries,
cached tokenizers, reports) goes through here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | Path) -> None:
    """Make a create/rename/unlink in `path` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temp file for binary writing; on a clean exit it replaces `path`, on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_with(path: str | Path, writer: Callable[[BinaryIO], None]) -> None:
    """Atomically write what `writer(file)` writes (e.g. `lambda f: torch.save(obj, f)`)."""
    with atomic_open(path) as f:
        writer(f)
