"""Stable content hashes: the keys of checkpoints, cached data and sweep cells."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form of `obj` (sorted keys), truncated."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
