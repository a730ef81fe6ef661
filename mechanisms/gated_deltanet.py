"""Gated DeltaNet (Yang, Kautz and Hatamizadeh 2024, arXiv 2412.06464): a fast-weight memory written by the delta
rule with a data-dependent decay, the recurrent family that replaced Infini-attention's additive update.

Per head, with q, k L2-normalised (after a short causal convolution and SiLU) and the state S (Dk x Dv):
    S_t = alpha_t S_{t-1} + beta_t k_t (v_t - alpha_t S_{t-1}^T k_t)^T      (alpha_t S_{t-1} is decayed, then
    o_t = S_t^T q_t / sqrt(Dk)                                                 corrected towards v_t at key k_t)
alpha_t = exp(-exp(A) softplus(x W_a + dt_bias)) in (0, 1) (Mamba-2's decay), beta_t = sigmoid(x W_b); the output
is RMS-normalised per head and gated by SiLU(x W_g) before the output projection, as in the paper's block.

Two forms, held equal in tests to the literal recurrence above in float64 (and to flash-linear-attention's naive
reference): `recurrent` steps token by token (the definition); `chunked` (the training form, and streaming of
long chunks) solves each block of `chunk` tokens at once with the WY / UT representation of the paper's section 3:
within a block, with G the cumulative log-decay and Gamma_ij = exp(G_i - G_j) for i >= j,
    T = (I + strictly_lower(diag(beta) K K^T * Gamma))^-1              (a unit lower-triangular solve)
    U = T diag(beta) V,   W = T diag(beta) diag(exp(G)) K
    V' = U - W S_0,  O = diag(exp(G)) Q S_0 + (Q K^T * Gamma, lower incl. diagonal) V'
    S_C = exp(G_C) S_0 + (K * exp(G_C - G))^T V'
Blocks are cut from wherever the call starts: the recurrence does not care where a block begins, so no buffer is
needed and the state is (S, the convolution's last `conv - 1` inputs): the same bytes at any length.

Conventions the paper leaves open: the state S is kept in at least float32; the short convolution is depthwise over
the q, k, v projections (kernel `conv`, 0 to drop it); no positional encoding (the decay orders the tokens).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions
from mechanisms.full import merge_heads, split_heads
from mechanisms.registry import register


@dataclasses.dataclass
class DeltaState:
    memory: Tensor  # (B, H, Dk, Dv), >= float32
    conv: Tensor  # (B, conv - 1, 3 * D): the last inputs of the short convolution


@dataclasses.dataclass
class ChunkedRecurrenceOptions(MechanismOptions):
    """Options of the recurrences with a chunked training form (Gated DeltaNet, Mamba-2)."""

    chunk: int = 64  # block of the chunked form (a compute choice: the outputs do not depend on it)
    conv: int = 4  # short causal convolution kernel over the q, k, v projections (both papers' 4); 0: none
    form: str = "chunked"  # chunked | recurrent (the token loop; slow, kept as the definition)

    def validate(self) -> None:
        if self.chunk < 1:
            raise ConfigError(f"mechanism.chunk must be >= 1, got {self.chunk}")
        if self.conv < 0:
            raise ConfigError(f"mechanism.conv must be >= 0, got {self.conv}")
        if self.form not in ("chunked", "recurrent"):
            raise ConfigError(f"mechanism.form must be 'chunked' or 'recurrent', got {self.form!r}")


def recurrent_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor, memory: Tensor,
                         delta: bool = True) -> tuple[Tensor, Tensor]:
    """The definition, one token at a time: q, k (B, H, T, Dk) (q already scaled), v (B, H, T, Dv), beta and
    log_alpha (B, H, T), memory (B, H, Dk, Dv). Returns outputs (B, H, T, Dv) and the final memory. `delta=False`
    drops the correction: S_t = alpha_t S_{t-1} + beta_t k_t v_t^T, the scalar-decay state space of Mamba-2 (SSD)."""
    outputs = []
    for t in range(q.shape[2]):
        memory = memory * log_alpha[:, :, t].exp()[..., None, None]
        kt = k[:, :, t]
        correction = v[:, :, t] - (kt.unsqueeze(-1) * memory).sum(-2) if delta else v[:, :, t]
        memory = memory + beta[:, :, t, None, None] * kt.unsqueeze(-1) * correction.unsqueeze(-2)
        outputs.append((q[:, :, t].unsqueeze(-1) * memory).sum(-2))
    return torch.stack(outputs, dim=2), memory


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor, memory: Tensor,
                       chunk: int, delta: bool = True) -> tuple[Tensor, Tensor]:
    """The same map, `chunk` tokens at a time (module docstring). Padding tokens have beta = 0 and no decay, so
    they leave the memory as it is. Without the delta correction T is the identity and W = 0 (SSD's chunked form)."""
    b, h, t, dk = q.shape
    pad = (-t) % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta, log_alpha = F.pad(beta, (0, pad)), F.pad(log_alpha, (0, pad))
    n = (t + pad) // chunk
    q, k, v = (x.reshape(b, h, n, chunk, x.shape[-1]) for x in (q, k, v))
    beta, g = beta.reshape(b, h, n, chunk), log_alpha.reshape(b, h, n, chunk).cumsum(-1)
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    gamma = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~lower, -math.inf).exp()  # exp(G_i - G_j), i >= j
    k_beta = k * beta.unsqueeze(-1)
    if delta:
        below = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril(-1)
        strict = (k_beta @ k.transpose(-1, -2) * gamma).masked_fill(~below, 0.0)  # strictly lower part
        eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
        solve = torch.linalg.solve_triangular(eye + strict, eye.expand_as(strict), upper=False, unitriangular=True)
        u, w = solve @ (v * beta.unsqueeze(-1)), solve @ (k_beta * g.exp().unsqueeze(-1))
    else:
        u, w = v * beta.unsqueeze(-1), None
    within = (q @ k.transpose(-1, -2) * gamma).masked_fill(~lower, 0.0)
    outputs = []
    for i in range(n):
        corrected = u[:, :, i] - w[:, :, i] @ memory if delta else u[:, :, i]
        outputs.append((q[:, :, i] * g[:, :, i].exp().unsqueeze(-1)) @ memory + within[:, :, i] @ corrected)
        g_end = g[:, :, i, -1:]
        memory = memory * g_end.exp().unsqueeze(-1) + (k[:, :, i] * (g_end - g[:, :, i]).exp().unsqueeze(-1)
                                                       ).transpose(-1, -2) @ corrected
    return torch.cat(outputs, dim=2)[:, :, :t], memory


class ConvRecurrence(Mechanism):
    """What Gated DeltaNet and Mamba-2 share: a q/k/v-shaped projection (`qkv`, which a continued base model fills)
    through a short causal convolution whose last inputs are carried, a (Dk x Dv) state per head, and the choice
    of the chunked or the recurrent form."""

    Options = ChunkedRecurrenceOptions

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        kernel = self.options.conv
        self.conv = nn.Conv1d(3 * d_model, 3 * d_model, kernel, groups=3 * d_model, bias=False) if kernel else None

    def init_state(self, batch_size, device, dtype) -> DeltaState:
        d, h = self.head_dim, self.n_heads
        acc = torch.promote_types(dtype, torch.float32)
        return DeltaState(torch.zeros(batch_size, h, d, d, device=device, dtype=acc),
                          torch.zeros(batch_size, max(self.options.conv - 1, 0), 3 * self.d_model, device=device,
                                      dtype=dtype))

    def convolved_heads(self, x: Tensor, state: DeltaState) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
        """SiLU(conv(x W_qkv)) split into three (B, H, T, Dh) tensors, and the convolution's new carried inputs."""
        projected, conv_state = self.qkv(x), state.conv
        if self.conv is not None:
            window = torch.cat([state.conv, projected], dim=1)  # (B, K - 1 + T, 3D)
            projected = self.conv(window.transpose(1, 2)).transpose(1, 2)
            conv_state = window[:, window.shape[1] - state.conv.shape[1] :]
        return split_heads(F.silu(projected), self.n_heads), conv_state

    def recurrence(self, q, k, v, beta, log_alpha, memory, delta: bool) -> tuple[Tensor, Tensor]:
        if self.options.form == "recurrent":
            return recurrent_delta_rule(q, k, v, beta, log_alpha, memory, delta)
        return chunked_delta_rule(q, k, v, beta, log_alpha, memory, self.options.chunk, delta)


@register
class GatedDeltaNet(ConvRecurrence):
    name = "gated_deltanet"
    display_order = 9

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        self.decay_beta = nn.Linear(d_model, 2 * n_heads)  # per head: the decay's softplus input, beta's logit
        self.output_gate = nn.Linear(d_model, d_model, bias=False)
        self.output_norm = nn.Parameter(torch.ones(self.head_dim))
        # Mamba-2's decay initialisation: A in [1, 16]; dt in [1e-3, 1e-1] log-uniform, as the bias softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(n_heads).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(n_heads).uniform_(math.log(1e-3), math.log(1e-1)))
        with torch.no_grad():
            self.decay_beta.bias[:n_heads] = dt + torch.log(-torch.expm1(-dt))
            self.decay_beta.bias[n_heads:] = 0.0

    def forward(self, x: Tensor, state: DeltaState, positions: Tensor) -> tuple[Tensor, DeltaState]:
        (q, k, v), conv_state = self.convolved_heads(x, state)
        acc = state.memory.dtype
        q = F.normalize(q.to(acc), dim=-1) / math.sqrt(self.head_dim)
        k = F.normalize(k.to(acc), dim=-1)
        decay_in, beta_in = self.decay_beta(x).to(acc).transpose(1, 2).chunk(2, dim=1)  # (B, H, T) each
        log_alpha = -self.A_log.to(acc).exp()[None, :, None] * F.softplus(decay_in)
        y, memory = self.recurrence(q, k, v.to(acc), torch.sigmoid(beta_in), log_alpha, state.memory, delta=True)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * self.output_norm.to(acc)
        y = merge_heads(y.to(x.dtype)) * F.silu(self.output_gate(x))
        return self.out(y), DeltaState(memory, conv_state)
