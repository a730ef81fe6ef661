"""The project's user-facing error, and how any exception is reduced to the one line a user sees."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A configuration that cannot work; its message names the offending key in one line."""


def one_line(e: BaseException) -> str:
    """An exception's message in one line: its first line, then its cause's (Hydra wraps OmegaConf's error,
    which holds the reason), the full key OmegaConf reports on a later line, and the options Hydra lists after
    "Could not find"."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0].strip()
    options = re.findall(r"^\t(\w+)$", text, flags=re.M)
    if "Could not find" in line and options:
        line += f"; known: {', '.join(options)}"
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        line = f"{line.rstrip('.')}: {one_line(cause)}"
    full_key = re.search(r"full_key: (\S+)", text)
    if full_key and full_key.group(1) not in line:
        line += f" ({full_key.group(1)})"
    return line
