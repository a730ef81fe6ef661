"""The backbone LM: a pre-norm decoder (RMSNorm, SwiGLU; RoPE inside the mechanisms) with one mechanism per layer,
streamed chunk by chunk with per-layer states. Read top to bottom like nanoGPT's model.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mechanisms


@dataclasses.dataclass
class BackboneSpec:
    """What fixes the weights' shapes; mechanism options live separately (they change no shapes)."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 384
    norm_eps: float = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """One pre-norm decoder layer: x + mixer(norm1(x)), then + mlp(norm2(x)). The norms and MLP are any modules, so a
    Hugging Face layer's own norms and MLP sit in the same block around one of our mechanisms."""

    def __init__(self, norm1: nn.Module, mixer: mechanisms.Mechanism, norm2: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm1, self.mixer, self.norm2, self.mlp = norm1, mixer, norm2, mlp
        mixer.bind_block(self.norm1, self.feed_forward)

    @classmethod
    def build(cls, spec: BackboneSpec, mixer: mechanisms.Mechanism) -> Block:
        return cls(RMSNorm(spec.d_model, spec.norm_eps), mixer, RMSNorm(spec.d_model, spec.norm_eps),
                   SwiGLU(spec.d_model, spec.mlp_hidden))

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: Tensor, state: Any, positions: Tensor) -> tuple[Tensor, Any]:
        mixed, state = self.mixer(self.norm1(x), state, positions)
        x = x + mixed
        return x + self.feed_forward(x), state


class LayerStack(nn.Module):
    """Embedding -> blocks -> final norm and head, streamed with one state per block: the one layer stack that both
    our backbone and a Hugging Face model hosting our mechanisms (hf_mechanisms.MechanismLM) run. Subclasses set
    `embed`, `blocks` and implement `head_logits`."""

    embed: nn.Embedding
    blocks: nn.ModuleList

    @property
    def recurrence(self) -> mechanisms.SegmentRecurrence | None:
        """A mechanism that runs the whole stack segment by segment (RMT), registered as the submodule
        `segment_recurrence`; None: the plain pass."""
        return self._modules.get("segment_recurrence")

    def final_norm(self, x: Tensor) -> Tensor:
        """The last blocks' output as the head reads it: the stack's final norm (also what RMT writes as memory,
        as its reference does with a Hugging Face model's last hidden state)."""
        raise NotImplementedError

    def head_logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def layer_states(self, batch_size: int, device=None, dtype=None) -> list[Any]:
        """Fresh per-layer states (one per block)."""
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return [blk.mixer.init_state(batch_size, device, dtype) for blk in self.blocks]

    def init_states(self, batch_size: int, device=None, dtype=None) -> Any:
        if self.recurrence is None:
            return self.layer_states(batch_size, device, dtype)
        return self.recurrence.init_state(self, batch_size, device or self.embed.weight.device,
                                          dtype or self.embed.weight.dtype)

    def run_blocks(self, x: Tensor, states: list[Any], positions: Tensor) -> tuple[Tensor, list[Any]]:
        """Hidden states (B, T, D) through every block at `positions`; returns the last block's output and the
        new per-layer states."""
        new_states = []
        for blk, state in zip(self.blocks, states, strict=True):
            x, state = blk(x, state, positions)
            new_states.append(state)
        return x, new_states

    def forward(self, tokens: Tensor, states: Any = None, start: int = 0) -> tuple[Tensor, Any]:
        """Logits for tokens (B, T) whose first token sits at absolute position `start`; returns new states."""
        if states is None:
            states = self.init_states(tokens.shape[0])
        if self.recurrence is not None:
            return self.recurrence(self, tokens, states, start)
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x, new_states = self.run_blocks(self.embed(tokens), states, positions)
        return self.head_logits(x), new_states

    def repeat_states(self, states: Any, batch_size: int) -> Any:
        """States read at batch 1 repeated to `batch_size` identical rows (each mechanism's `repeat_state`)."""
        if self.recurrence is not None:
            return self.recurrence.repeat_state(states, batch_size)
        return [blk.mixer.repeat_state(s, batch_size) for blk, s in zip(self.blocks, states, strict=True)]

    def state_nbytes(self, states: Any) -> int:
        if self.recurrence is not None:
            return self.recurrence.state_nbytes(states)
        return sum(blk.mixer.state_nbytes(s) for blk, s in zip(self.blocks, states, strict=True))

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, blk in enumerate(self.blocks):
            out.update({f"layer{i}.{k}": v for k, v in blk.mixer.stats().items()})
        if self.recurrence is not None:
            out.update({f"recurrence.{k}": v for k, v in self.recurrence.stats().items()})
        return out


class Backbone(LayerStack):
    def __init__(self, spec: BackboneSpec, mechanism: str, mechanism_options: dict[str, Any]) -> None:
        super().__init__()
        self.spec, self.mechanism = spec, mechanism
        layer_mechanism, layer_options = mechanism, mechanism_options
        if mechanisms.is_segment_recurrence(mechanism):  # its layers are another mechanism's, at their defaults
            layer_mechanism, layer_options = mechanisms.get(mechanism).layer_mechanism, {}
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.blocks = nn.ModuleList(
            Block.build(spec, mechanisms.build(layer_mechanism, spec.d_model, spec.n_heads, i, **layer_options))
            for i in range(spec.n_layers)
        )
        if layer_mechanism != mechanism:
            recurrence = mechanisms.build_recurrence(mechanism, spec.d_model, **mechanism_options)
            self.add_module("segment_recurrence", recurrence)
        self.norm = RMSNorm(spec.d_model, spec.norm_eps)
        self.head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.apply(_init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith(("mixer.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / (2 * spec.n_layers) ** 0.5)

    def final_norm(self, x: Tensor) -> Tensor:
        return self.norm(x)

    def head_logits(self, x: Tensor) -> Tensor:
        return self.head(self.final_norm(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
