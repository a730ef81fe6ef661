"""The dashboard: one self-contained static index.html (jinja2) with the sanity gates, sortable tables, the
figures (relative paths next to it) and a provenance footer."""

from __future__ import annotations

import html
from importlib import metadata
from pathlib import Path

import jinja2
import pandas as pd

from bench.core import atomic
from bench.report import palette
from bench.report.sanity import Gate
from bench.report.tables import wide

PACKAGES = ("torch", "pandas", "numpy", "matplotlib", "hydra-core", "jinja2")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _html_table(table: pd.DataFrame) -> str:
    table = table.copy()
    table.index = [html.escape(str(i)) for i in table.index]
    return table.reset_index(names=table.index.name or "mechanism").to_html(
        index=False, escape=False, classes="sortable", border=0)


def _verdict_html(overview: pd.DataFrame, row: str = "mechanism", links: dict[tuple[str, str], str] | None = None
                  ) -> str:
    """The one-screen verdict with each cell coloured by its verdict (better / worse / tie / uncalibrated; a probe,
    backed by fewer than MIN_SEEDS training seeds, stays uncoloured) and
    linked to the page of the row mechanism's missed samples on that family (`bench.report.misses`)."""
    def cell(text: str, label: str, column: str) -> str:
        kind = text.split(" ", 1)[0] if text else ""
        kind = kind if kind in ("better", "worse", "tie", "uncalibrated") and "(probe:" not in text else "na"
        span = f'<span class="v-{kind}">{html.escape(text)}</span>'
        target = (links or {}).get((label.split(" − ")[0], column.split(" · ")[0]))
        return f'<a href="{html.escape(target)}">{span}</a>' if target and text else span

    table = pd.DataFrame({c: [cell(overview.at[i, c], str(i), str(c)) for i in overview.index]
                          for c in overview.columns}, index=overview.index)
    table.index = [html.escape(str(i)) for i in table.index]
    table.columns = [html.escape(str(c)) for c in table.columns]
    return table.reset_index(names=row).to_html(index=False, escape=False, classes="verdict", border=0)


def render(df: pd.DataFrame, est: pd.DataFrame, extra: dict[str, pd.DataFrame], gates: list[Gate],
           figures: list[Path], out: Path, title: str, sources: list[str],
           unfinished: pd.DataFrame | None = None, overview: pd.DataFrame | None = None,
           uncalibrated: dict[str, float] | None = None, baseline: pd.DataFrame | None = None,
           links: dict[tuple[str, str], str] | None = None) -> Path:
    tables = [
        {"title": f"{task} — {metric}", "html": _html_table(wide(est, task, metric, ("<b>", "</b>")))}
        for task, metric in (est[["task", "metric"]].drop_duplicates().itertuples(index=False)
                             if not est.empty else [])
    ]
    for name, frame in extra.items():
        if not frame.empty:
            tables.append({"title": name, "html": frame.to_html(index=False, classes="sortable", border=0,
                                                                 float_format=lambda x: f"{x:.3f}")})
    created = sorted(df["created_at"].dropna())
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    page = env.get_template("index.html.j2").render(
        title=title, sources=sources, gates=gates, tables=[{**t, "html": jinja2.utils.markupsafe.Markup(t["html"])}
                                                            for t in tables],
        mechanisms=[{"label": m, "colour": palette.hex_colour(m)} for m in palette.ordered(df["mechanism"])],
        figures=[str(f.relative_to(out)) for f in figures if f.suffix == ".png"],
        shas=sorted(df["git_sha"].dropna().unique()), configs=sorted(df["config_hash"].unique()),
        n_configs=df["config_hash"].nunique(), n_records=len(df),
        created_range=f"{created[0]} – {created[-1]}" if created else "?",
        packages=[(p, _version(p)) for p in PACKAGES],
        unfinished=jinja2.utils.markupsafe.Markup(unfinished.to_html(index=False, classes="sortable", border=0))
        if unfinished is not None and not unfinished.empty else None,
        overview=jinja2.utils.markupsafe.Markup(_verdict_html(overview, links=links))
        if overview is not None and not overview.empty else None,
        uncalibrated=sorted((uncalibrated or {}).items()),
        baseline=jinja2.utils.markupsafe.Markup(_verdict_html(baseline, "pair", links))
        if baseline is not None and not baseline.empty else None,
        seeds=[str(x) for x in sorted(df["seed"].dropna().unique())] if "seed" in df else [],
    )
    path = out / "index.html"
    atomic.write_text(path, page)
    return path

