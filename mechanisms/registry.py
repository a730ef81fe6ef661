"""Name -> mechanism class. Importing `mechanisms` imports every module in the package and every installed plugin
(entry-point group `memorybench.mechanisms`), so a new mechanism is one file with `@register` (and, optionally, a
YAML in conf/mechanism/ for its comments; without one its Options dataclass is the config group entry).

Adding a mechanism (checklist; nothing else to edit):
1. `mechanisms/<name>.py`: an `Options` dataclass (defaults with their reasons as comments; `validate` raising
   ConfigError naming the key; `memory_unit` if it carries memory across segments/blocks) and a `Mechanism`
   subclass (or `ModelLevel` for whole-model wrappers) decorated with `@register`, implementing `init_state`,
   `forward`, and optionally `stats` / `lr_multipliers` / `reference_mask`.
2. Its capabilities as class attributes (base.Capabilities): `bounded_state`, `hf_support`, `display_order`,
   `perf_options`, `compute_options`. The sanity gates, HF support, ordering, `make perf` and the capacity frontier
   read them.
3. Optional `conf/mechanism/<name>.yaml` (`defaults: [/schema/mechanism/<name>@_here_, _self_]`, `name: <name>`).
The invariant suites in tests/mechanisms/ are parametrised over `names()` and test it without being edited.
From another package: the same file, plus an entry point `<name> = "yourpkg.module"` in the group
`memorybench.mechanisms` (docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions, ModelLevel, SegmentRecurrence

ENTRY_POINT_GROUP = "memorybench.mechanisms"
_REGISTRY: dict[str, type[Mechanism] | type[ModelLevel] | type[SegmentRecurrence]] = {}


def register(cls):
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"mechanism name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def is_model_level(name: str) -> bool:
    return issubclass(get(name), ModelLevel)


def is_per_layer(name: str) -> bool:
    """A mixer inside each layer (not a wrapper of a whole model, nor a recurrence around the layer stack)."""
    return issubclass(get(name), Mechanism)


def is_segment_recurrence(name: str) -> bool:
    return issubclass(get(name), SegmentRecurrence)


def get(name: str) -> type[Mechanism] | type[ModelLevel] | type[SegmentRecurrence]:
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
    """The one public constructor (docs/design.md, "Mechanisms")."""
    opts.pop("name", None)
    options(name, **opts)  # validate before allocating anything
    if is_model_level(name):
        raise ConfigError(f"mechanism {name!r} wraps a whole model (its reader uses "
                          f"{get(name).reader_mechanism!r} layers); it has no per-layer form")
    if is_segment_recurrence(name):
        raise ConfigError(f"mechanism {name!r} runs around the whole layer stack (its layers are "
                          f"{get(name).layer_mechanism!r}); it has no per-layer form")
    return get(name)(d_model, n_heads, layer_idx, **opts)


def build_recurrence(name: str, d_model: int, **opts: Any) -> SegmentRecurrence:
    """The recurrence a backbone of mechanism `name` runs its layers in (`is_segment_recurrence(name)`)."""
    opts.pop("name", None)
    options(name, **opts)
    return get(name)(d_model, **opts)
