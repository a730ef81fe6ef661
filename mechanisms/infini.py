"""Infini-attention (Munkhdalai et al. 2024, arXiv 2404.07143): local softmax attention inside segments of N
tokens plus a compressive memory of all earlier segments, mixed by a learned gate per head.

Per head, with sigma = ELU + 1 and Q, K *without* RoPE on the memory path:
    A_mem = sigma(Q) M / (sigma(Q) z)                       memory read (before this segment's update)
    A     = sigmoid(beta) * A_mem + (1 - sigmoid(beta)) * A_dot
    linear: M += sigma(K)^T V,                               z += sum_t sigma(K_t)
    delta:  M += sigma(K)^T (V - sigma(K) M / (sigma(K) z)), z as linear
M and z are kept in float32 whatever the input dtype (an fp16 sum overflows after a few thousand tokens).

Conventions the paper leaves open:
- Segments are aligned to absolute positions: segment s holds positions [s*N, (s+1)*N). Local attention is causal
  within the segment, with RoPE at absolute positions.
- Empty memory (before the first segment is written; M0 = 0, z0 = 0): retrieval is skipped, A = A_dot, and the
  first delta update subtracts nothing (so it equals the linear update). Emptiness is read off z, not positions.
Streaming state: (M, z, raw K and V of the current partial segment in a pre-allocated N-slot buffer), so
`state_nbytes` is the same at any length: memory per layer is H * d_key * (d_value + 1) floats plus the buffer.

Training computes all segments' memory reads at once for the linear rule (exclusive cumulative sum of the
per-segment updates); the delta rule has to loop over segments. Gradients flow through the memory within a
sequence (nothing is detached).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions, gate_stats, unit_pieces
from mechanisms.full import merge_heads, split_heads
from mechanisms.registry import register
from mechanisms.rope import apply_rope


@dataclasses.dataclass
class InfiniState:
    memory: Tensor  # (B, H, Dk, Dv) float32
    norm: Tensor  # (B, H, Dk) float32, z
    k: Tensor  # (B, H, N, Dk) raw keys of the current partial segment (slots past its length unused)
    v: Tensor  # (B, H, N, Dv)


@dataclasses.dataclass
class InfiniOptions(MechanismOptions):
    # 64: the whole passkey needle, question and answer fit in the answer's segment at every eval length (at 32
    # they cannot: 25 + 11 + 6 tokens), so the depth-1 cells test the local path. The recipe's >= 8 segments per
    # training row then means 512-token rows (bench/training/mixture.py raises the length and halves the batch).
    segment: int = 64
    update: str = "linear"  # linear | delta
    # beta at initialisation: sigmoid(-3) = 0.05 keeps the base model's local attention nearly whole at the first
    # step; at 0 (sigmoid 0.5) the local output is halved and 150 steps did not recover it (depth-1 passkey
    # 0.80 / 0.90 / 0.55 against 1.00 / 1.00 / 0.90; results/infini_local_path).
    gate_init: float = -3.0
    gate_lr_mult: float = 20.0  # beta's own optimizer group (no weight decay): at the global LR gates stay near 0.5
    rope_base: float = 10000.0

    def validate(self) -> None:
        if self.segment < 1:
            raise ConfigError(f"mechanism.segment must be >= 1, got {self.segment}")
        if self.update not in ("linear", "delta"):
            raise ConfigError(f"mechanism.update must be 'linear' or 'delta', got {self.update!r}")
        if self.gate_lr_mult <= 0:
            raise ConfigError(f"mechanism.gate_lr_mult must be > 0, got {self.gate_lr_mult}")

    def memory_unit(self) -> int:
        return self.segment


def segments_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention within each segment, (B, H, S, N, D) -> (B, H, S, N, D). SDPA's fused kernels take 4-D
    inputs only (a 5-D call falls back to the unfused math path: 7.7x slower measured on CPU), so the segments
    become extra heads."""
    b, h, s, n, d = q.shape
    y = F.scaled_dot_product_attention(*(t.reshape(b, h * s, n, t.shape[-1]) for t in (q, k, v)), is_causal=True)
    return y.view(b, h, s, n, v.shape[-1])


def sigma(x: Tensor) -> Tensor:
    return F.elu(x) + 1.0


def is_empty(norm: Tensor) -> bool:
    """No segment written yet: z is a sum of sigma(k) >= 0 (positive unless every key sits below ~-17 in fp32),
    so an all-zero z means nothing was written."""
    return not bool((norm != 0).any())


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Memory precision: at least float32 (fp16 sums overflow), float64 kept for reference tests."""
    return torch.promote_types(dtype, torch.float32)


@register
class InfiniAttention(Mechanism):
    name = "infini"
    hf_support = "lora"
    display_order = 2
    perf_options = {"segment": 512}

    @classmethod
    def span_baseline(cls, options):
        return "sliding_window", {"window": options.segment}
    Options = InfiniOptions

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.gate = nn.Parameter(torch.full((n_heads,), float(self.options.gate_init)))

    def init_state(self, batch_size, device, dtype) -> InfiniState:
        h, d, n = self.n_heads, self.head_dim, self.options.segment
        return InfiniState(
            torch.zeros(batch_size, h, d, d, device=device, dtype=accumulate_dtype(dtype)),
            torch.zeros(batch_size, h, d, device=device, dtype=accumulate_dtype(dtype)),
            torch.zeros(batch_size, h, n, d, device=device, dtype=dtype),
            torch.zeros(batch_size, h, n, d, device=device, dtype=dtype),
        )

    def lr_multipliers(self) -> dict[str, float]:
        return {"gate": self.options.gate_lr_mult}

    def stats(self) -> dict[str, float]:
        return gate_stats(self.gate)

    def forward(self, x: Tensor, state: InfiniState, positions: Tensor) -> tuple[Tensor, InfiniState]:
        q, k, v = split_heads(self.qkv(x), self.n_heads)
        n, p0, t = self.options.segment, int(positions[0]), x.shape[1]
        pieces, outputs = unit_pieces(p0, t, n), []
        aligned = [pc for pc in pieces if pc[2] == 0 and pc[1] - pc[0] == n]
        if self.options.update == "linear" and len(aligned) > 1:
            return self._forward_parallel(q, k, v, state, positions, pieces)
        for start, stop, filled in pieces:
            y, state = self._segment_piece(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop],
                                           state, positions[start:stop], filled)
            outputs.append(y)
        return self.out(merge_heads(torch.cat(outputs, dim=2))), state

    # -- one piece of one segment: the reference path, also used for decoding ---------------------------------
    def _segment_piece(self, q, k, v, state: InfiniState, positions: Tensor, filled: int):
        o, n = self.options, self.options.segment
        seg_start = int(positions[0]) - filled
        k_seg = torch.cat([state.k[:, :, :filled], k], dim=2)  # raw keys of this segment so far
        v_seg = torch.cat([state.v[:, :, :filled], v], dim=2)
        seg_positions = torch.arange(seg_start, seg_start + k_seg.shape[2], device=q.device)
        q_rot = apply_rope(q, positions, o.rope_base)
        k_rot = apply_rope(k_seg, seg_positions, o.rope_base)
        mask = torch.ones(q.shape[2], k_seg.shape[2], dtype=torch.bool, device=q.device).tril(diagonal=filled)
        local = F.scaled_dot_product_attention(q_rot, k_rot, v_seg, attn_mask=mask)
        y = self._mix(local, q, state.memory, state.norm, memory_empty=is_empty(state.norm))
        if filled + q.shape[2] == n:  # segment complete: write it to memory, empty the buffer
            memory, norm = self._update(state.memory, state.norm, k_seg, v_seg)
            return y, InfiniState(memory, norm, torch.zeros_like(state.k), torch.zeros_like(state.v))
        pad = n - k_seg.shape[2]
        return y, InfiniState(state.memory, state.norm, F.pad(k_seg, (0, 0, 0, pad)), F.pad(v_seg, (0, 0, 0, pad)))

    def _read(self, q: Tensor, memory: Tensor, norm: Tensor) -> Tensor:
        """sigma(q) M / (sigma(q) z), float32; q (..., T, Dk), memory (..., Dk, Dv), norm (..., Dk)."""
        sq = sigma(q.to(memory.dtype))
        return (sq @ memory) / (sq @ norm.unsqueeze(-1))

    def _mix(self, local: Tensor, q: Tensor, memory: Tensor, norm: Tensor, memory_empty: bool) -> Tensor:
        if memory_empty:
            return local
        weight = torch.sigmoid(self.gate).view(1, -1, 1, 1)
        return (weight * self._read(q, memory, norm) + (1 - weight) * local.to(memory.dtype)).to(local.dtype)

    def _update(self, memory: Tensor, norm: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        sk, vf = sigma(k.to(memory.dtype)), v.to(memory.dtype)
        if self.options.update == "delta" and not is_empty(norm):
            vf = vf - (sk @ memory) / (sk @ norm.unsqueeze(-1))
        return memory + sk.transpose(-1, -2) @ vf, norm + sk.sum(dim=-2)

    # -- linear rule, many whole segments at once --------------------------------------------------------------
    def _forward_parallel(self, q, k, v, state: InfiniState, positions: Tensor, pieces):
        """Leading partial piece and trailing partial piece go through the reference path; the whole segments
        between them are computed together: local attention batched over segments, memory reads from an
        exclusive cumulative sum of the per-segment updates."""
        outputs = []
        first = 0
        if pieces[0][2] != 0 or pieces[0][1] - pieces[0][0] != self.options.segment:
            s, e, filled = pieces[0]
            y, state = self._segment_piece(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], state, positions[s:e], filled)
            outputs.append(y)
            first = 1
        whole = [pc for pc in pieces[first:] if pc[1] - pc[0] == self.options.segment]
        if whole:
            s, e = whole[0][0], whole[-1][1]
            y, state = self._whole_segments(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], state, positions[s:e])
            outputs.append(y)
        for s, e, filled in pieces[first + len(whole):]:
            y, state = self._segment_piece(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], state, positions[s:e], filled)
            outputs.append(y)
        return self.out(merge_heads(torch.cat(outputs, dim=2))), state

    def _whole_segments(self, q, k, v, state: InfiniState, positions: Tensor):
        b, h, t, d = q.shape
        n, o = self.options.segment, self.options
        s = t // n
        q_rot = apply_rope(q, positions, o.rope_base).view(b, h, s, n, d)
        k_rot = apply_rope(k, positions, o.rope_base).view(b, h, s, n, d)
        local = segments_attention(q_rot, k_rot, v.reshape(b, h, s, n, d))
        acc = state.memory.dtype
        sk, vf = sigma(k.to(acc)).view(b, h, s, n, d), v.to(acc).view(b, h, s, n, d)
        increments = sk.transpose(-1, -2) @ vf  # (B, H, S, Dk, Dv)
        memory_after = state.memory.unsqueeze(2) + increments.cumsum(dim=2)
        norm_after = state.norm.unsqueeze(2) + sk.sum(dim=-2).cumsum(dim=2)
        memory_before = torch.cat([state.memory.unsqueeze(2), memory_after[:, :, :-1]], dim=2)
        norm_before = torch.cat([state.norm.unsqueeze(2), norm_after[:, :, :-1]], dim=2)
        # With nothing written yet the first segment is local only; never compute its 0/0 read, whose NaN would
        # poison the backward pass even if discarded.
        skip = 1 if is_empty(state.norm) else 0
        read = self._read(q.view(b, h, s, n, d)[:, :, skip:], memory_before[:, :, skip:], norm_before[:, :, skip:])
        weight = torch.sigmoid(self.gate).view(1, -1, 1, 1, 1)
        mixed = torch.cat([local[:, :, :skip].to(acc), weight * read + (1 - weight) * local[:, :, skip:].to(acc)], 2)
        y = mixed.to(q.dtype).reshape(b, h, t, d)
        new_state = InfiniState(memory_after[:, :, -1], norm_after[:, :, -1], state.k, state.v)
        return y, new_state
