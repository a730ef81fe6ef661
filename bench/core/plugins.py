"""Mechanisms and tasks from installed packages: a package registers them under the entry-point groups
`memorybench.mechanisms` / `memorybench.tasks` (the way pytest and lm-eval plugins are found); loading the entry
point imports its module, whose `@register` adds it to the registry."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from bench.core.errors import ConfigError

log = logging.getLogger(__name__)


def load_entry_points(group: str) -> list[str]:
    """Import every entry point of `group`; returns their names. A plugin that fails to import is an error naming
    it (a silently missing mechanism would make a sweep compare something else)."""
    loaded = []
    for ep in entry_points(group=group):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(f"plugin {ep.name!r} ({ep.value}, entry point group {group}) failed to import: "
                              f"{type(e).__name__}: {e}") from None
        loaded.append(ep.name)
    return loaded
