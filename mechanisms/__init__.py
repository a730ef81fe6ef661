"""Attention/memory mechanisms, one file each, all behind one contract (see base.py)."""

import importlib
import pkgutil

from bench.core.errors import ConfigError
from bench.core.plugins import load_entry_points
from mechanisms.base import Mechanism, MechanismOptions, ModelLevel, SegmentRecurrence, State
from mechanisms.registry import (
    ENTRY_POINT_GROUP,
    build,
    build_recurrence,
    get,
    is_model_level,
    is_per_layer,
    is_segment_recurrence,
    names,
    options,
    register,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry", "rope"}:
        importlib.import_module(f"{__name__}.{_module.name}")
load_entry_points(ENTRY_POINT_GROUP)  # mechanisms from installed packages (docs/extending.md)

__all__ = [
    "ConfigError", "Mechanism", "MechanismOptions", "ModelLevel", "SegmentRecurrence", "State", "build",
    "build_recurrence", "get", "is_model_level", "is_per_layer", "is_segment_recurrence", "names", "options",
    "register",
]
