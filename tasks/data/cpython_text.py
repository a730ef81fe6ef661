"""The default corpus's text, from what ships with CPython itself: the standard library's docstrings (read with
`ast`, nothing imported) and the `pydoc_data` help topics. Standard library only, so it builds on a bare Python
with no network: `python -S tasks/data/cpython_text.py` prints what it found."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

# Not prose, or the standard library's own test data: left out.
SKIPPED = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__phello__"}


def docstrings_in_order(tree: ast.AST) -> list[str]:
    """Module, class and function docstrings in source order."""
    out = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def stdlib_docstrings() -> list[tuple[str, str]]:
    """(title, text): one document per top-level module or package, its docstrings in file and source order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    modules: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIPPED & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file this Python cannot parse carries no docstrings for us
        modules.setdefault(rel.parts[0].removesuffix(".py"), []).extend(docstrings_in_order(tree))
    return [(f"stdlib/{name}", "\n\n".join(docs)) for name, docs in modules.items() if docs]


def help_topics() -> list[tuple[str, str]]:
    """(title, text): one document per `help()` topic of pydoc_data (the language reference's sections)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions split pydoc_data out
        return []
    return [(f"pydoc/{name}", text) for name, text in sorted(topics.items())]


if __name__ == "__main__":
    docs = stdlib_docstrings() + help_topics()
    print(f"{len(docs)} documents, {sum(len(t) for _, t in docs)} characters")
