"""Recurrent Memory Transformer (Bulatov et al. 2022, arXiv 2207.06881; the decoder-only layout of its BABILong
runs, arXiv 2304.11062): the input is cut into segments of `segment` tokens at absolute boundaries, and every
segment is read as [memory | segment tokens | memory]: the `memory_tokens` vectors in front are the memory the
segment reads, the same vectors after it are write slots, and the last layer's outputs at the write slots become
the memory of the next segment. The first segment reads a learned initial memory. Causal attention inside a
segment means the tokens see the read memory and the write slots see the whole segment; nothing else crosses a
segment boundary.

Where it lives: memory passes from the last layer of one segment to the first layer of the next, so it is a
recurrence around the whole layer stack, not a mixer inside one layer, and it is trained like every other
mechanism (a model-level wrapper such as RAG only reads with an already trained model). So it is a
`SegmentRecurrence` that the backbone hosts: the layers are full attention (continued from the base model like
every mechanism's), and this module runs them segment by segment.

Conventions, as implemented: the memory is the stack's final hidden state at the write slots, after the final
norm (what the reference code reads as a Hugging Face model's `hidden_states[-1]`, which comes after GPT-2's ln_f),
fed back as input embeddings. Not before the norm: the residual stream adds to the memory in every segment, so a
pre-norm memory grows without bound (a model trained that way from scratch wrote memories of RMS 1.2 after one
segment and 13.6 after eight, against token embeddings of 0.14, and its gradient was 15 of the model's 19.8
before clipping); positions (RoPE) restart in every segment (read memory 0..M-1, tokens M..M+S-1,
write slots M+S..2M+S-1), so every segment looks the same to the layers; gradients flow through the memory across
`bptt_segments` segments (truncated BPTT, the memory detached every `bptt_segments` segments; 0: through every
segment of a training row). Streaming state: the memory, plus the K/V caches of the current segment so far
(bounded by M + S), empty between segments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import MechanismOptions, SegmentRecurrence, unit_pieces
from mechanisms.registry import register


@dataclasses.dataclass
class RMTState:
    memory: Tensor  # (B, M, D) what the current (or next) segment reads
    layers: list[Any] | None  # per-layer states of the current segment so far (read memory first); None between
    since_detach: int = 0  # segments the memory's gradient has flowed through (training)


@dataclasses.dataclass
class RMTOptions(MechanismOptions):
    segment: int = 64  # tokens per segment, like Infini's segment: the same 512-token training rows hold 8
    memory_tokens: int = 8  # M: the BABILong runs use 10-16 on GPT-2 scale models
    # truncated BPTT: the memory is detached after every `bptt_segments` segments (fixed windows, so the first
    # segment of a window sends no gradient further back); 0: never within a training row
    bptt_segments: int = 0

    def validate(self) -> None:
        for key in ("segment", "memory_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mechanism.{key} must be >= 1, got {getattr(self, key)}")
        if self.bptt_segments < 0:
            raise ConfigError(f"mechanism.bptt_segments must be >= 0, got {self.bptt_segments}")

    def memory_unit(self) -> int:
        return self.segment


@register
class RecurrentMemory(SegmentRecurrence):
    name = "rmt"
    Options = RMTOptions
    display_order = 12

    def __init__(self, d_model: int, **options: Any) -> None:
        super().__init__(d_model, **options)
        self.initial_memory = nn.Parameter(torch.randn(self.options.memory_tokens, d_model) * 0.02)
        self._written: list[Any] = [0.0, 0]  # sum of the written memories' RMS (a tensor: no sync), and their count

    def init_state(self, stack, batch_size, device, dtype) -> RMTState:
        memory = self.initial_memory.to(device=device, dtype=dtype).unsqueeze(0).expand(batch_size, -1, -1)
        return RMTState(memory, None)

    def stats(self) -> dict[str, float]:
        total, count = self._written
        return {"written_memory_rms": float(total) / count} if count else {}

    def forward(self, stack, tokens: Tensor, state: RMTState, start: int) -> tuple[Tensor, RMTState]:
        s, m = self.options.segment, self.options.memory_tokens
        b, t = tokens.shape
        device = tokens.device
        memory, layers, since = state.memory, state.layers, state.since_detach
        if layers is None and start % s:
            raise ValueError(f"rmt: a stream starting mid-segment (position {start}, segment {s}) needs the state "
                             f"that streamed the segment's first tokens")
        logits = []
        for i, stop, filled in unit_pieces(start, t, s):
            n = stop - i
            x = stack.embed(tokens[:, i : i + n])
            completes = filled + n == s
            if filled == 0 and completes:  # a whole segment: [read memory | tokens | write slots] in one call
                out, _ = stack.run_blocks(torch.cat([memory, x, memory], 1), stack.layer_states(b),
                                          torch.arange(2 * m + s, device=device))
                logits.append(stack.head_logits(out[:, m : m + s]))
                written = stack.final_norm(out[:, m + s :])
            else:  # a piece: the segment's caches carry between calls
                if filled == 0:
                    _, layers = stack.run_blocks(memory, stack.layer_states(b), torch.arange(m, device=device))
                out, layers = stack.run_blocks(x, layers, torch.arange(m + filled, m + filled + n, device=device))
                logits.append(stack.head_logits(out))
                written = None
                if completes:
                    written, _ = stack.run_blocks(memory, layers, torch.arange(m + s, 2 * m + s, device=device))
                    written = stack.final_norm(written)
            if completes:
                memory, layers, since = written, None, since + 1
                if not torch.is_grad_enabled():
                    self._written = [self._written[0] + written.pow(2).mean().sqrt(), self._written[1] + 1]
                if self.options.bptt_segments and since >= self.options.bptt_segments:
                    memory, since = memory.detach(), 0
        return torch.cat(logits, 1), RMTState(memory, layers, since)
