"""Name -> mechanism class. Importing `mechanisms` imports every module in the package, so a new mechanism is one
file with `@register` plus one YAML in conf/mechanism/."""

from __future__ import annotations

from typing import Any

from mechanisms.base import ConfigError, Mechanism, MechanismOptions, ModelLevel

_REGISTRY: dict[str, type[Mechanism] | type[ModelLevel]] = {}


def register(cls):
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"mechanism name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def is_model_level(name: str) -> bool:
    return issubclass(get(name), ModelLevel)


def get(name: str) -> type[Mechanism] | type[ModelLevel]:
    if name not in _REGISTRY:
        raise ConfigError(f"mechanism.name={name!r} is not a registered mechanism (known: {', '.join(names())})")
    return _REGISTRY[name]


def options(name: str, **values: Any) -> MechanismOptions:
    """Validated options for `name`; unknown keys are an error, not a silent default."""
    cls = get(name)
    try:
        opts = cls.Options(name=name, **values)
    except TypeError as e:
        raise ConfigError(f"mechanism {name!r}: {e}") from None
    opts.validate()
    return opts


def build(name: str, d_model: int, n_heads: int, layer_idx: int = 0, **opts: Any) -> Mechanism:
    """The one public constructor (DESIGN.md §2)."""
    opts.pop("name", None)
    options(name, **opts)  # validate before allocating anything
    if is_model_level(name):
        raise ConfigError(f"mechanism {name!r} wraps a whole model (its reader uses "
                          f"{get(name).reader_mechanism!r} layers); it has no per-layer form")
    return get(name)(d_model, n_heads, layer_idx, **opts)
