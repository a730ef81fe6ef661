"""The documentation stays true to the tree: every relative link in README.md, docs/*.md and results/*/README.md
points to an existing file (and heading), every `python -m <module>` they name is a runnable module, every
`make <target>` is a Makefile target, and every docs/ page and section the code cites exists. No subprocess."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "results").glob("*/README.md")])
IDS = [str(p.relative_to(ROOT)) for p in DOCS]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
PYTHON_M = re.compile(r"\bpython3?(?:\.\d+)?\s+-m\s+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"(?<![\w/.-])make\s+([a-z][\w-]*)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
CITATION = re.compile(r"docs/([\w-]+\.md)(?:,\s*\"?([^\")\n]+?)\"?\))?")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where markdown links live."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code(text: str) -> str:
    """Fenced code blocks and inline code spans: where commands are shown."""
    return "\n".join([m.group(0) for m in FENCE.finditer(text)] + INLINE_CODE.findall(FENCE.sub("", text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


def headings(path: Path) -> set[str]:
    return {h.strip() for h in HEADING.findall(FENCE.sub("", path.read_text()))}


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M))
    for phony in re.findall(r"^\.PHONY:(.*)$", text, flags=re.M):
        targets.update(phony.split())
    return targets


def test_the_documentation_set_is_there():
    names = set(IDS)
    assert {"README.md", "docs/design.md", "docs/running.md", "docs/extending.md"} <= names, names
    assert any(name.startswith("results/") for name in names), names


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_relative_links_point_to_existing_files(doc: Path):
    broken = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:, ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = doc if not path_part else (doc.parent / path_part).resolve()
        if not dest.exists():
            broken.append(f"{target} (no such file: {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_python_m_modules_exist(doc: Path):
    missing = []
    for module in sorted(set(PYTHON_M.findall(doc.read_text()))):
        module = module.rstrip(".")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            missing.append(f"{module} (not importable)")
        elif spec.submodule_search_locations is not None and importlib.machinery.PathFinder.find_spec(
                f"{module}.__main__", spec.submodule_search_locations) is None:  # found without running the package
            missing.append(f"{module} (a package without __main__: `python -m` cannot run it)")
    assert not missing, f"{doc.relative_to(ROOT)}: " + "; ".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_make_targets_exist(doc: Path):
    targets = make_targets()
    unknown = sorted({t for t in MAKE.findall(code(doc.read_text())) if t not in targets})
    assert not unknown, f"{doc.relative_to(ROOT)} names make targets the Makefile lacks: {unknown}"


def test_docs_cited_by_code_and_config_exist():
    """Code, config and tests cite pages as `docs/<page>.md` and sections as `docs/design.md, "Heading"`."""
    problems = []
    sources = [p for d in ("bench", "mechanisms", "tasks", "tests", "conf") for p in (ROOT / d).rglob("*")
               if p.suffix in (".py", ".yaml") and p.resolve() != Path(__file__).resolve()]
    for source in sources:
        for page, section in CITATION.findall(source.read_text(errors="replace")):
            doc = ROOT / "docs" / page
            where = f"{source.relative_to(ROOT)} cites docs/{page}"
            if not doc.exists():
                problems.append(f"{where}: no such file")
            elif section and section.strip() not in headings(doc):
                problems.append(f"{where}, {section!r}: no such heading")
    assert not problems, "; ".join(problems)
