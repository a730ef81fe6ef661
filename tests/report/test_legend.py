"""The figure legend below a report's panels fits the figure's width: long labels (a RAG reader's options) get
fewer columns, short ones keep four; log-x tick labels never run together."""

import matplotlib.pyplot as plt
import pytest

from bench.report.plots import fitted_legend


def legend_for(labels: list[str], width: float = 8.0):
    fig, ax = plt.subplots(figsize=(width, 3), layout="constrained")
    for label in labels:
        ax.plot([0, 1], [0, 1], label=label)
    handles, names = ax.get_legend_handles_labels()
    return fig, fitted_legend(fig, handles, names)


def test_long_labels_take_fewer_columns_and_stay_inside_the_figure():
    fig, legend = legend_for([f"rag(retriever=bm25, chunk_tokens={i}, overlap=8, query_tokens=16, keep_prefix=32)"
                              for i in range(6)])
    assert legend._ncols < 4
    assert legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width
    plt.close(fig)


def test_short_labels_keep_four_columns():
    fig, legend = legend_for(["full", "sliding_window", "infini", "fam", "bswa"])
    assert legend._ncols == 4
    plt.close(fig)


def test_a_single_column_is_the_last_resort_even_when_it_overflows():
    fig, legend = legend_for(["x" * 400, "y"], width=3.0)
    assert legend._ncols == 1
    plt.close(fig)


def test_no_labels_is_an_error():
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="at least one label"):
        fitted_legend(fig, [], [])
    plt.close(fig)


def tick_labels_overlap(fig, ax) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
    boxes = sorted((t.get_window_extent(renderer) for t in labels if t.get_text() and t.get_visible()),
                   key=lambda b: b.x0)
    inside = [b for b in boxes if b.x1 >= ax.bbox.x0 and b.x0 <= ax.bbox.x1]
    return any(a.x1 > b.x0 for a, b in zip(inside, inside[1:], strict=False))


@pytest.mark.parametrize("values", [[131_000, 198_000], [1_000, 4_000_000]])
def test_log_x_tick_labels_never_run_together(values):
    """A frontier panel whose states span less than a decade (Infini recipes: 131K-198K bytes) labelled its minor
    ticks 1.3x10^5 1.4x10^5 ... on top of each other; a wide span keeps matplotlib's decade labels."""
    from bench.report.plots import narrow_log_x

    fig, ax = plt.subplots(figsize=(3.2, 3))
    ax.plot(values, [0.2, 0.6], marker="o")
    ax.set_xscale("log")
    narrow_log_x(ax, values)
    assert not tick_labels_overlap(fig, ax)
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]  # and it is labelled
    plt.close(fig)
