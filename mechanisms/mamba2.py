"""Mamba-2 (Dao and Gu 2024, arXiv 2405.21060): the SSD layer, a selective state space with one scalar decay per
head and token, i.e. linear attention with a data-dependent decay (the paper's "state space duality").

Per head, with the input x_t (the "value", head_dim P), B_t and C_t (the "key" and "query", d_state N) after a
short causal convolution and SiLU, dt_t = softplus(x W_dt + dt_bias) and A = -exp(A_log) < 0:
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T        (h: N x P)
    y_t = h_t^T C_t + D x_t
then y is gated by SiLU(z) (z = x W_z) and RMS-normalised per head (mamba_ssm's gated norm, gate before norm), and
projected out, as the paper's block does. Streaming is
the recurrence; training uses the chunked form (SSD's block decomposition), shared with Gated DeltaNet
(`gated_deltanet.chunked_delta_rule` without the delta correction, beta = dt): both are held to the token loop in
float64 in tests and to flash-linear-attention's naive simple-GLA recurrence, which SSD is.

Conventions the paper leaves open, as implemented: expansion 1 (the inner width is d_model) and one B/C group per
head with N = P = head_dim, so C, B, x come from one projection shaped as attention's q, k, v (`qkv`, which a
continued base model fills); the state is kept in at least float32; no positional encoding (the decay orders).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechanisms.full import merge_heads
from mechanisms.gated_deltanet import ConvRecurrence, DeltaState
from mechanisms.registry import register


@register
class Mamba2(ConvRecurrence):
    name = "mamba2"
    display_order = 10

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)  # qkv: C, B, x per head
        self.gate = nn.Linear(d_model, d_model, bias=False)  # z
        self.dt = nn.Linear(d_model, n_heads)
        self.output_norm = nn.Parameter(torch.ones(self.head_dim))
        self.D = nn.Parameter(torch.ones(n_heads))
        # the paper's initialisation: A in [1, 16]; dt in [1e-3, 1e-1] log-uniform, as the bias softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(n_heads).uniform_(math.log(1e-3), math.log(1e-1)))
        with torch.no_grad():
            self.dt.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: Tensor, state: DeltaState, positions: Tensor) -> tuple[Tensor, DeltaState]:
        heads, conv_state = self.convolved_heads(x, state)
        acc = state.memory.dtype
        c, b, xs = (t.to(acc) for t in heads)
        dt = F.softplus(self.dt(x).to(acc)).transpose(1, 2)  # (B, H, T)
        log_decay = -self.A_log.to(acc).exp()[None, :, None] * dt
        y, memory = self.recurrence(c, b, xs, dt, log_decay, state.memory, delta=False)
        z = self.gate(x).view(*x.shape[:2], self.n_heads, self.head_dim).transpose(1, 2).to(acc)
        y = (y + self.D.to(acc)[None, :, None, None] * xs) * F.silu(z)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * self.output_norm.to(acc)
        return self.out(merge_heads(y.to(x.dtype))), DeltaState(memory, conv_state)
