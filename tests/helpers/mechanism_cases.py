"""Every registered mechanism (plugins included) as the shared invariant suites see it, each with options small
enough that a few dozen tokens cross several of its memory units. Nothing here lists the mechanisms: a new one is
picked up from `mechanisms.names()`, its memory unit shrunk when it declares one, its defaults used otherwise."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import mechanisms
from bench.core.errors import ConfigError
from bench.models.backbone import RMSNorm, SwiGLU

UNIT = 6  # tokens per segment/block under test: a 45-token sequence crosses seven of them
# Small options that `memory_unit` cannot derive: how far a sliding window reaches is not a memory unit.
SMALL: dict[str, dict[str, Any]] = {"sliding_window": {"window": 7}}
# Further cases worth the same invariants: the edges of the mechanisms above (and the recipes the hand-written
# suites of each mechanism grew up with).
EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("sliding_window", {"window": 1}),
    ("sliding_window", {"window": 5, "sinks": 3}),
    ("infini", {"segment": 5, "update": "delta"}),
    ("fam", {"block": 6, "mem_blocks": 1, "fam_tokens": 2}),
    ("fam", {"block": 4, "mem_blocks": 0, "fam_tokens": 4}),
    ("fam", {"block": 6, "mem_blocks": 1, "fam_tokens": 0}),  # BSWA by another name (`same_as`)
]


def per_layer_names() -> list[str]:
    """Registered mechanisms that work inside a layer (not whole-model wrappers such as RAG, nor recurrences around
    the layer stack such as RMT)."""
    return [n for n in mechanisms.names() if mechanisms.is_per_layer(n)]


def small_options(name: str) -> dict[str, Any]:
    """`SMALL[name]` if listed; else the defaults with every int option that equals the memory unit set to UNIT
    (segment, block, ...) when that validates and shrinks the unit; else {} (the defaults)."""
    if name in SMALL:
        return dict(SMALL[name])
    defaults = mechanisms.options(name)
    unit = defaults.memory_unit()
    if not unit or unit <= UNIT:
        return {}
    shrunk = {f.name: UNIT for f in dataclasses.fields(defaults)
              if f.name != "name" and type(getattr(defaults, f.name)) is int and getattr(defaults, f.name) == unit}
    try:
        if shrunk and mechanisms.options(name, **shrunk).memory_unit() == UNIT:
            return shrunk
    except ConfigError:
        pass
    return {}


def memory_unit(name: str, options: dict[str, Any]) -> int:
    return mechanisms.options(name, **options).memory_unit() or 0


def cases() -> list[tuple[str, dict[str, Any]]]:
    """(name, options): every per-layer mechanism with its small options, then EXTRA (for registered names)."""
    found = [(n, small_options(n)) for n in per_layer_names()]
    for name, options in EXTRA:
        if name in mechanisms.names() and (name, options) not in found:
            found.append((name, options))
    return found


def case_id(name: str, options: dict[str, Any]) -> str:
    return "-".join([name, *(f"{k}={v}" for k, v in options.items())])


def params(selected: list[tuple[str, dict[str, Any]]] | None = None) -> list:
    """`cases()` (or `selected`) as pytest params with readable ids (`-k <mechanism>` selects one)."""
    return [pytest.param(n, o, id=case_id(n, o)) for n, o in (cases() if selected is None else selected)]


def with_reference_mask(selected: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The cases whose mechanism is plain masked attention (its `reference_mask` is not None)."""
    return [(n, o) for n, o in selected
            if mechanisms.get(n).reference_mask(mechanisms.options(n, **o), 8, "cpu") is not None]


def build(name: str, options: dict[str, Any], d_model: int, n_heads: int, dtype: torch.dtype = torch.float32,
          seed: int = 0) -> mechanisms.Mechanism:
    """The mechanism, bound to a random block norm and feed-forward as the backbone would bind it (FAM uses them)."""
    torch.manual_seed(seed)
    m = mechanisms.build(name, d_model, n_heads, **options).to(dtype)
    m.block_parts = torch.nn.ModuleList([RMSNorm(d_model, 1e-6), RMSNorm(d_model, 1e-6), SwiGLU(d_model, 48)]).to(dtype)
    norm1, norm2, mlp = m.block_parts
    m.bind_block(norm1, lambda a: mlp(norm2(a)))
    return m
