"""Name -> task class; importing `tasks` imports every module in the package (one file per task family)."""

from __future__ import annotations

from mechanisms.base import ConfigError
from tasks.base import Task

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ConfigError(f"task {name!r} is not a registered task (known: {', '.join(names())})")
    return _REGISTRY[name]
