"""The figure legend below a report's panels fits the figure's width: long labels (a RAG reader's options) get
fewer columns, short ones keep four."""

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
