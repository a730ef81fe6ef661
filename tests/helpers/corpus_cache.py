"""The default corpus parsed once per test session and copied into each test's own cache folder, so that the
many subprocess tests do not each spend ~5 s parsing the standard library (they still read it through the same
cache code a user's run does)."""

import functools
import shutil
import tempfile
from pathlib import Path

from tasks.data.corpus import load_corpus


@functools.cache
def _built() -> Path:
    root = Path(tempfile.mkdtemp(prefix="memorybench-corpus-"))
    load_corpus({"source": "cpython"}, root)
    return root / "corpora"


def seed(cache_dir: Path) -> Path:
    """`cache_dir`, with the default corpus's cache already in it."""
    shutil.copytree(_built(), Path(cache_dir) / "corpora", dirs_exist_ok=True)
    return Path(cache_dir)
