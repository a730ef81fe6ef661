"""Generated task data cached as Hugging Face `datasets` under a content hash of everything that made it
(generator version, tokenizer, corpus, seed, lengths), so a second run reads the samples instead of rebuilding
them and two runs that share a key are guaranteed to score the same samples."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.hashing import content_hash

log = logging.getLogger(__name__)


def cached_rows(kind: str, key: Any, build: Callable[[], list[dict[str, Any]]], cache_dir: str | Path
                ) -> list[dict[str, Any]]:
    """Rows from `<cache_dir>/datasets/<kind>-<hash(key)>` (a `Dataset.save_to_disk` folder), built and saved
    first when missing. The folder appears by an atomic rename, so a reader never sees a half-written one."""
    import datasets

    path = Path(cache_dir) / "datasets" / f"{kind}-{content_hash(key)}"
    if path.is_dir():
        log.debug("%s: cached dataset %s", kind, path)
        return datasets.load_from_disk(str(path)).to_list()
    rows = build()
    if rows:
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a bar per small save would bury the sweep's own progress
        try:
            datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
        finally:
            if bars:
                datasets.enable_progress_bars()
        try:
            os.replace(tmp, path)
        except OSError:  # another job saved the same key first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return rows
