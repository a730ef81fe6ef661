"""The mechanism contract (docs/design.md): an attention/memory layer as a state machine over chunks.

A mechanism owns its projections (like a Zoology mixer) and maps (B, T, D) -> (B, T, D). Whatever it must remember
between chunks lives in an explicit `State` so that the backbone can stream any chunking through it; the suite's
central invariant is that the chunking never changes the outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench.core.errors import ConfigError

State = Any  # a (nested) dataclass / tuple / dict of tensors, the batch first in each; opaque to the backbone


@dataclasses.dataclass
class MechanismOptions:
    """Base of every mechanism's options; `name` selects the registered class."""

    name: str = "?"

    def validate(self) -> None:
        """Raise ConfigError naming the key when the options cannot work."""

    def memory_unit(self) -> int | None:
        """Tokens per segment/block that the memory carries across (None: no such unit). Memory only learns to
        cross boundaries it sees in training: the recipe wants >= 8 units per training sequence."""
        return None


class Capabilities:
    """What the rest of the suite needs to know about a mechanism, declared on its class and read from there by the
    sanity gates, the report's ordering, Hugging Face support and `make perf` (no lists of names elsewhere)."""

    # Whether the state carried between chunks stays the same size however long the input: the report's
    # bounded-state gate checks it (state bytes at the longest length == at the shortest).
    bounded_state: ClassVar[bool] = True
    # How it runs on a pretrained Hugging Face model (`model=hf`): "training_free" (a mask on the model's KV cache,
    # from the options' `window` / `sinks`, or a model-level wrapper), "lora" (inside every layer, with the layer's
    # own projections, trained with LoRA), or "none" (refused up front).
    hf_support: ClassVar[str] = "none"
    # Rank in tables and plots (lower first); mechanisms without one follow, alphabetically.
    display_order: ClassVar[float] = math.inf
    # Numeric options that set what the memory spends, not what it carries (weights_lora's test-time `steps`): the
    # capacity frontier draws a curve per value of these instead of placing them on one curve as state settings.
    compute_options: ClassVar[tuple[str, ...]] = ()
    # Options `make perf` measures it with at 1K-64K tokens (its defaults fill the rest).
    perf_options: ClassVar[dict[str, Any]] = {}
    # Continuing a full-attention base model (train.init=base): whether the base's attention weights (`qkv`, `out`)
    # are this mixer's own. False for a mixer with no counterpart to them (Megalodon): it starts its projections
    # fresh, and the block around it (embeddings, norms, feed-forward) still continues from the base.
    continues_base_attention: ClassVar[bool] = True

    @classmethod
    def span_baseline(cls, options: MechanismOptions) -> tuple[str, dict[str, Any]] | None:
        """The memory-free mechanism (name, options) that sees the same local span as this one: what its memory
        adds is measured against it (the report's own-span table). None: no such baseline."""
        return None

    @classmethod
    def same_as(cls, options: MechanismOptions) -> tuple[str, dict[str, Any]] | None:
        """Another registered mechanism (name, options) that this configuration computes exactly (FAM with no
        feedback tokens is BSWA): the report then finds it where that mechanism is asked for, e.g. as an own-span
        baseline. None: it is only itself."""
        return None


class Mechanism(Capabilities, nn.Module):
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

    def repeat_state(self, state: State, batch_size: int) -> State:
        """A batch-1 state as `batch_size` identical rows, to continue prompts that share what it has read. The
        default repeats every tensor along its first (batch) dimension; a state laid out otherwise overrides."""
        return repeat_rows(state, batch_size)

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

    @classmethod
    def reference_mask(cls, options: MechanismOptions, length: int, device: torch.device | str) -> Tensor | None:
        """(T, T) boolean "query i may attend key j" when the mechanism is plain masked softmax attention over one
        sequence: the naive dense-mask reference that tests and `make perf` hold the fast path against. None
        when the mechanism is not expressible as a mask (memories, feedback tokens)."""
        return None


class ModelLevel(Capabilities):
    """A mechanism that works on whole models rather than inside a layer (RAG): it wraps a reader `LongContextLM`
    (docs/design.md) built with the per-layer mechanism `reader_mechanism`, and is itself a `LongContextLM`."""

    name: ClassVar[str]
    Options: ClassVar[type[MechanismOptions]]
    reader_mechanism: ClassVar[str] = "full"
    bounded_state: ClassVar[bool] = False  # it keeps the whole context to retrieve from
    hf_support: ClassVar[str] = "training_free"  # the pretrained model becomes its reader

    def __init__(self, reader: Any, **options: Any) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Introspection recorded after evaluation, keys "<part>.<metric>" (weights_lora: its test-time cost)."""
        return {}


class SegmentRecurrence(Capabilities, nn.Module):
    """A mechanism around the whole layer stack rather than inside one layer (RMT): the stack's layers are
    `layer_mechanism`'s, and this module runs them segment by segment, carrying its own state from one segment to
    the next. The backbone hosts it (docs/design.md): `forward(stack, tokens, state, start)` replaces the stack's
    plain pass and must keep the same contract (logits for every token, any chunking, a state to carry)."""

    name: ClassVar[str]
    Options: ClassVar[type[MechanismOptions]]
    layer_mechanism: ClassVar[str] = "full"

    def __init__(self, d_model: int, **options: Any) -> None:
        super().__init__()
        self.d_model = d_model
        self.options = self.Options(name=self.name, **options)
        self.options.validate()

    def init_state(self, stack: Any, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> State:
        raise NotImplementedError

    def forward(self, stack: Any, tokens: Tensor, state: State, start: int) -> tuple[Tensor, State]:
        raise NotImplementedError

    def state_nbytes(self, state: State) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(state))

    def repeat_state(self, state: State, batch_size: int) -> State:
        """As `Mechanism.repeat_state` (the layer states it holds included)."""
        return repeat_rows(state, batch_size)

    def stats(self) -> dict[str, float]:
        return {}


def unit_pieces(first_position: int, length: int, unit: int) -> list[tuple[int, int, int]]:
    """(start, stop, filled) of every piece of a `length`-token call whose first token sits at `first_position`,
    cut where a memory unit (segment, chunk) of `unit` tokens ends at an absolute position; `filled` is how many
    tokens of the piece's unit came before it. Unit boundaries at absolute positions keep chunking invariant."""
    pieces, start = [], 0
    while start < length:
        filled = (first_position + start) % unit
        stop = min(length, start + unit - filled)
        pieces.append((start, stop, filled))
        start = stop
    return pieces


def gate_stats(gate: Tensor) -> dict[str, float]:
    """The memory's share of a per-head gated mix, sigmoid(gate): mean and spread over heads (Infini, neural memory)."""
    weight = torch.sigmoid(gate.detach().float())
    return {"gate_memory_weight": weight.mean().item(), "gate_memory_weight_std": weight.std(unbiased=False).item()}


def repeat_rows(state: State, batch_size: int) -> State:
    """Every tensor of a batch-1 state repeated to `batch_size` rows along its first dimension (a copy: states are
    never shared between rows); anything else (ints, None) kept as it is."""
    def repeat(t: Tensor) -> Tensor:
        if t.dim() == 0 or t.shape[0] != 1:
            raise ValueError(f"repeat_rows: a state tensor of shape {tuple(t.shape)} has no batch of 1 first; the "
                             "mechanism must override repeat_state")
        return t.repeat(batch_size, *[1] * (t.dim() - 1))
    return _map_tensors(state, repeat)


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _map_tensors(getattr(obj, f.name), fn)
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


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
