"""Task families, one file each, behind one contract (see base.py)."""

import importlib
import pkgutil

from tasks.base import CellResult, Task, TaskOptions
from tasks.registry import get, names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CellResult", "Task", "TaskOptions", "get", "names", "register"]
