"""Attention/memory mechanisms, one file each, all behind one contract (see base.py)."""

import importlib
import pkgutil

from mechanisms.base import ConfigError, Mechanism, MechanismOptions, ModelLevel, State
from mechanisms.registry import build, get, is_model_level, names, options, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry", "rope"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ConfigError", "Mechanism", "MechanismOptions", "ModelLevel", "State", "build", "get", "is_model_level", "names",
    "options", "register",
]
