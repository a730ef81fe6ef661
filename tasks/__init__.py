"""Task families, one file each, behind one contract (see base.py)."""

import importlib
import pkgutil

from bench.core.plugins import load_entry_points
from tasks.base import CellResult, Task, TaskOptions
from tasks.registry import ENTRY_POINT_GROUP, get, names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry", "data"}:
        importlib.import_module(f"{__name__}.{_module.name}")
load_entry_points(ENTRY_POINT_GROUP)  # tasks from installed packages (docs/extending.md)

__all__ = ["CellResult", "Task", "TaskOptions", "get", "names", "register"]
