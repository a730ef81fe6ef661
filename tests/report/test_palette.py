"""One colour per mechanism family, and no two registered mechanisms share one: a figure whose legend repeats a
colour (Mamba-2 drawn in full attention's blue) reads one mechanism's curve as another's."""

import mechanisms
from bench.report.palette import colour, style


def test_every_registered_mechanism_has_its_own_colour():
    names = mechanisms.names()
    colours = {name: colour(name) for name in names}
    assert len(set(colours.values())) == len(names), colours


def test_variants_of_one_family_share_its_colour_and_differ_by_line_style():
    labels = ["infini(update=delta)", "infini(update=linear)"]
    assert colour(labels[0]) == colour(labels[1]) == colour("infini")
    assert style(labels[0], labels) != style(labels[1], labels)
