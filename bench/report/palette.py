"""One look per mechanism across every figure and table: a fixed order (full first) and a fixed colour per
mechanism family; variants of one family (`infini(update=delta)`) share its colour and differ by line style."""

from __future__ import annotations

import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.results.summary import base_name, display_rank, ordered  # noqa: E402, F401  (re-exported for the report)

# tab10, then the darkest shade of each of tab20b's five hues: the registry ranks more mechanisms than tab10 has
# colours (with tab10 alone, Mamba-2 drew in full attention's blue); tests/report/test_palette.py keeps them apart.
PALETTE = plt.get_cmap("tab10").colors + plt.get_cmap("tab20b").colors[::4]
LINESTYLES = ["-", "--", "-.", ":"]


def colour(label: str):
    name = base_name(label)
    rank = display_rank(name)  # a ranked mechanism keeps its colour; others get a stable one from their name
    index = int(rank) if rank != float("inf") else 7 + zlib.crc32(name.encode()) % 3
    return PALETTE[index % len(PALETTE)]


def hex_colour(label: str) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in colour(label)[:3])


def style(label: str, labels: list[str]) -> str:
    variants = sorted(lab for lab in labels if base_name(lab) == base_name(label))
    return LINESTYLES[variants.index(label) % len(LINESTYLES)]
