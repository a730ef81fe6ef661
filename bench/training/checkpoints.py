"""The one checkpoint cache, for backbones and LoRA adapters alike: a checkpoint is trusted only when its file
matches the SHA-256 recorded beside it; anything else (no digest, a mismatch, unreadable) is deleted and retrained.

Saving writes the checkpoint atomically (temp file, fsync, rename, folder fsync) and only then its digest, so a
kill at any point leaves either a verified pair or an unverified file that the next run retrains. Temp files left
by a killed writer are removed.

One process trains a given checkpoint at a time: the whole look-up-or-train runs under a file lock beside the
checkpoint, so the jobs of a parallel sweep (joblib, a SLURM array) that share a base model wait for the first one
to train it and then load it, instead of each training it again (or reading a checkpoint whose digest is not yet
written and discarding it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock, Timeout

from bench.core import atomic

log = logging.getLogger(__name__)
M = TypeVar("M")


class CorruptCheckpoint(Exception):
    """A cached checkpoint that fails or lacks its digest, or cannot be read; the caller retrains."""


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    atomic.write_with(path, lambda f: torch.save({"state_dict": state_dict, "meta": meta}, f))
    atomic.write_text(digest_path(path), _sha256(path) + "\n")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint, verified against its recorded SHA-256. Raises CorruptCheckpoint with the reason."""
    digest_file = digest_path(path)
    if not digest_file.exists():
        raise CorruptCheckpoint(f"checkpoint {path} has no recorded SHA-256 ({digest_file.name}): its write may not "
                                "have finished")
    if digest_file.read_text().strip() != _sha256(path):
        raise CorruptCheckpoint(f"checkpoint {path} does not match its SHA-256 ({digest_file.name})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # garbled in a way the digest cannot see (it was written so): say so in one line
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(e).__name__})") from None


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def remove_orphan_temps(path: Path) -> None:
    """Temp files of `path` and its digest whose writer process is gone (killed mid-write).

    A temp file is `.<name>.<pid>.tmp` (bench.core.atomic); only names of exactly that shape are considered, so the
    checkpoint's pattern never takes a live writer's digest temp (`.<name>.sha256.<pid>.tmp`) for an orphan."""
    for name in (path.name, digest_path(path).name):
        shape = re.compile(rf"\.{re.escape(name)}\.(\d+)\.tmp")
        for tmp in path.parent.glob(f".{name}.*.tmp"):
            match = shape.fullmatch(tmp.name)
            if match and not _alive(int(match.group(1))):
                tmp.unlink(missing_ok=True)


def cached(path: Path, label: str, load: Callable[[dict[str, torch.Tensor]], M],
           train: Callable[[], tuple[M, dict[str, torch.Tensor], dict[str, Any]]], use_cache: bool = True) -> M:
    """`load(state_dict)` from a verified checkpoint at `path`, or `train()` -> (model, state to save, meta) and save
    it. `use_cache=False` always trains (an injected fault must happen, not be read from the cache). Another process
    training the same checkpoint is waited for (see the module's docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another job is training or reading %s; waiting for it", label, path)
        lock.acquire()
    try:
        remove_orphan_temps(path)
        if use_cache and path.exists():
            try:
                state = load_checkpoint(path)["state_dict"]
            except CorruptCheckpoint as e:
                log.warning("%s; deleting it and retraining", e)
                discard(path)
            else:
                log.info("%s: cached checkpoint %s", label, path)
                return load(state)
        model, state, meta = train()
        save_checkpoint(path, state, meta)
        return model
    finally:
        lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
