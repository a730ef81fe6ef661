"""The mechanism contract (DESIGN.md §2): an attention/memory layer as a state machine over chunks.

A mechanism owns its projections (like a Zoology mixer) and maps (B, T, D) -> (B, T, D). Whatever it must remember
between chunks lives in an explicit `State` so that the backbone can stream any chunking through it; the suite's
central invariant is that the chunking never changes the outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

State = Any  # a (nested) dataclass / tuple / dict of tensors; opaque to the backbone


class ConfigError(ValueError):
    """A configuration that cannot work; its message names the offending key in one line."""


@dataclasses.dataclass
class MechanismOptions:
    """Base of every mechanism's options; `name` selects the registered class."""

    name: str = "?"

    def validate(self) -> None:
        """Raise ConfigError naming the key when the options cannot work."""

    def memory_unit(self) -> int | None:
        """Tokens per segment/block that the memory carries across (None: no such unit). Memory only learns to
        cross boundaries it sees in training: the recipe wants >= 8 units per training sequence (DESIGN.md)."""
        return None


class Mechanism(nn.Module):
    """Base class; subclasses set `name` and `Options` and implement the four state-machine methods."""

    name: ClassVar[str]
    Options: ClassVar[type[MechanismOptions]]

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options: Any) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"model.d_model={d_model} must be divisible by model.n_heads={n_heads}")
        self.d_model, self.n_heads, self.layer_idx = d_model, n_heads, layer_idx
        self.head_dim = d_model // n_heads
        self.options = self.Options(name=self.name, **options)
        self.options.validate()

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State, positions: Tensor) -> tuple[Tensor, State]:
        raise NotImplementedError

    def state_nbytes(self, state: State) -> int:
        """Bytes carried between chunks: every tensor reachable from the state."""
        return sum(t.numel() * t.element_size() for t in _tensors(state))

    def stats(self) -> dict[str, float]:
        """Introspection numbers (gate mix, attention mass, ...) recorded alongside results."""
        return {}

    def bind_block(self, pre_norm: Callable[[Tensor], Tensor], feed_forward: Callable[[Tensor], Tensor]) -> None:
        """The backbone hands every mechanism its block's pre-attention norm and its feed-forward (norm included).
        Only mechanisms whose state lives in the residual stream use them (TransformerFAM updates its memory with
        the block's own FF); the rest ignore them."""

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name (within this module) -> learning-rate multiplier, for parameters that must move faster
        than the weights around them (e.g. Infini-attention's gates). Such parameters get no weight decay."""
        return {}


class ModelLevel:
    """A mechanism that works on whole models rather than inside a layer (RAG): it wraps a reader `LongContextLM`
    (DESIGN.md §3) built with the per-layer mechanism `reader_mechanism`, and is itself a `LongContextLM`."""

    name: ClassVar[str]
    Options: ClassVar[type[MechanismOptions]]
    reader_mechanism: ClassVar[str] = "full"

    def __init__(self, reader: Any, **options: Any) -> None:
        raise NotImplementedError


def _tensors(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
