"""The import rule (docs/design.md): a module imports only its own package and strictly lower layers, mechanisms/
and tasks/ never import each other, and no project import hides inside a function to dodge a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "mechanisms", "tasks")

# (module prefix, layer); the longest matching prefix wins. Same layer: only within one package.
LAYERS = [
    ("bench.core", 0),
    ("mechanisms", 1), ("tasks", 1),
    ("bench.models", 2), ("bench.results", 2),
    ("bench.training", 3), ("bench.config", 3), ("bench.report", 3),
    ("bench.harness", 4),
    ("bench.integrations", 5), ("bench.perf", 5),
    # the command-line modules at the top of bench/ (python -m bench, bench.summary, ...) sit above everything
    ("bench.__main__", 6), ("bench.summary", 6), ("bench.timing", 6), ("bench.export_lm_eval", 6),
    ("bench.lm_eval_run", 6), ("bench", 6),
]


def layer_of(module: str) -> tuple[str, int]:
    """(the package that owns `module`, its layer)."""
    matches = [(prefix, rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/design.md)")
    return max(matches, key=lambda m: len(m[0]))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(tree: ast.AST, module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for every import of a project module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import: resolve against this module's package
                    base = ".".join(module.split(".")[: -child.level] + ([base] if base else []))
                found.extend((f"{base}.{a.name}" if _is_submodule(base, a.name) else base, child.lineno, in_function)
                             for a in child.names)
            visit(child, nested)

    visit(tree, False)
    return [(name, line, fn) for name, line, fn in found if name.split(".")[0] in PACKAGES]


def _is_submodule(package: str, name: str) -> bool:
    path = ROOT.joinpath(*package.split("."), name)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        module = module_name(path)
        owner, rank = layer_of(module)
        for target, line, in_function in project_imports(ast.parse(path.read_text()), module):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if in_function:
                problems.append(f"{where} inside a function (import it at module level; the layers have no cycles)")
            target_owner, target_rank = layer_of(target)
            if target_owner == owner:
                continue
            if target_rank >= rank:
                problems.append(f"{where}: layer {target_owner} ({target_rank}) is not below {owner} ({rank})")
    return problems


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_import_points_down_the_layers():
    assert violations(project_files()) == []


@pytest.mark.parametrize("source,target", [
    ("bench/core/errors.py", "bench.harness.runner"),       # core reaching up
    ("mechanisms/full.py", "tasks.passkey"),               # the two independent packages
    ("tasks/passkey.py", "bench.models.tokenizers"),        # a task typing against a model, not the protocol
    ("bench/models/backbone.py", "bench.results.records"),  # siblings in one layer
    ("bench/harness/factory.py", "bench.integrations.lm_eval_model"),
])
def test_a_back_edge_is_caught(tmp_path, source, target):
    """The checker itself: plant one upward import in a copy of a real module and it must be reported."""
    original = ROOT / source
    planted = original.with_name(f"_planted_{original.name}")
    planted.write_text(original.read_text() + f"\nimport {target}  # planted\n")
    try:
        found = violations([planted])
    finally:
        planted.unlink()
    assert any(target in v for v in found), found


def test_a_function_level_import_is_caught():
    planted = ROOT / "bench" / "harness" / "_planted_lazy.py"
    planted.write_text("def f():\n    from bench.core.errors import ConfigError\n    return ConfigError\n")
    try:
        found = violations([planted])
    finally:
        planted.unlink()
    assert any("inside a function" in v for v in found), found
