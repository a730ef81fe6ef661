"""Megalodon (Ma et al. 2024, arXiv 2404.08801): a complex exponential moving average (CEMA) carries memory across
chunks, and softmax attention works only inside each chunk. Written from the paper and its reference code
(XuezheMax/megalodon, whose CEMA and timestep norm run as CUDA kernels); where the two differ the code is
followed, and each such convention is named below.

Per layer, on the block's normalised input x (B, T, D):
    x̂  = TimestepNorm(x)         cumulative mean and variance per feature group over every step so far (each step
                                  counts once; running sums in float64), affine (1 + w) and b
    c  = CEMA(x̂)                h_t = p ⊙ x̂_t + q ⊙ h_{t-1} with h complex (D, N), p = σ(α),
                                  q = (1 - σ(α) σ(δ)) e^{iφ}, φ_n = n σ(θ) 2π / N (n = 1..N);
                                  c_t = Re(Σ_n η_n h_{t,n}) + ω ⊙ x̂_t, η = γ / sqrt(N) (code: no input phase, no β)
    m  = RMSNorm(c)
    z  = W_z m + b_z, RMS-normalised per head; Q = z (1 + γ_q) / sqrt(d_z) + β_q, K likewise (normalised attention)
    V  = SiLU(W_v x̂ + b_v),  r = SiLU(W_r m + b_r)
    O  = softmax(Q K^T) V, causal within each chunk of `chunk` tokens at absolute chunk boundaries (none across),
         RoPE on Q, K with positions restarting at 0 in every chunk, softmax scale 1 (Q and K are scaled already)
    H  = W_h m + b_h + W_o (O ⊙ r)                (the layer's output; the block adds the residual)

Conventions of this benchmark, as deviations from Megalodon's block, because the block around every mixer is held
fixed in a controlled comparison: the block's RMSNorm stays in front of the layer (the timestep norm then follows
it inside the layer), the block's residual is the usual one (x + H, then + FF(norm(x + H))) instead of the two-hop
residual (x + FF(norm(x + H))), and the model's final norm is the backbone's RMSNorm, not a timestep norm. RoPE is
rotate-half rather than interleaved pairs (a fixed permutation of learned projections). The CEMA runs as the
convolution with its kernel k_j = Re(Σ_n η_n p_n q_n^j) plus the carried state's decay, as the reference's fftconv
path does, but blockwise as a triangular matmul instead of an FFT (`cema`); tests hold it to the literal recurrence
in float64.
Streaming state, bounded: the CEMA state (B, D, N) complex, the timestep norm's count, mean and variance per group,
and the partial chunk's keys and values.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions, unit_pieces
from mechanisms.registry import register
from mechanisms.rope import apply_rope

CEMA_BLOCK = 64  # steps per block of the CEMA's triangular matmul (any size gives the same outputs)


@dataclasses.dataclass
class MegalodonState:
    ema: Tensor  # (B, D, N) complex CEMA state
    count: Tensor  # (B,) steps the timestep norm has seen, float64 like its statistics
    mean: Tensor  # (B, G) cumulative mean per group
    var: Tensor  # (B, G) cumulative (population) variance per group
    k: Tensor  # (B, H, chunk, d_z) rotated keys of the current partial chunk (slots past its length unused)
    v: Tensor  # (B, H, chunk, d_v)


@dataclasses.dataclass
class MegalodonOptions(MechanismOptions):
    # Tokens per attention chunk. The paper trains with 2048-32K-token chunks; here 64, like Infini's segment, so
    # that what the model recalls from before the chunk comes through the CEMA alone at the benchmark's lengths.
    chunk: int = 64
    ema_dim: int = 16  # N, the CEMA's complex states per feature (reference default)
    z_ratio: float = 0.25  # shared Q/K width z = D / 4 (reference presets)
    v_ratio: float = 2.0  # value width 2 D (reference presets)
    norm_groups: int = 32  # timestep norm groups (reference default)
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    def validate(self) -> None:
        for key in ("chunk", "ema_dim", "norm_groups"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mechanism.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("z_ratio", "v_ratio", "norm_eps"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"mechanism.{key} must be > 0, got {getattr(self, key)}")

    def memory_unit(self) -> int:
        return self.chunk


def cema_coefficients(alpha: Tensor, delta: Tensor, theta: Tensor, gamma: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """(p (D, N) real, q (D, N) complex, η (D, N) complex) from the raw parameters, as the reference computes them."""
    n = alpha.shape[-1]
    p = torch.sigmoid(alpha)
    phase = torch.arange(1, n + 1, dtype=alpha.dtype, device=alpha.device) * torch.sigmoid(theta)[:, None] \
        * (2 * math.pi / n)
    q = torch.polar(1 - p * torch.sigmoid(delta), phase)
    eta = torch.complex(gamma[..., 0], gamma[..., 1]) * math.sqrt(1 / n)
    return p, q, eta


def cema(x: Tensor, p: Tensor, q: Tensor, eta: Tensor, omega: Tensor, h0: Tensor, block: int
         ) -> tuple[Tensor, Tensor]:
    """CEMA over x (B, D, T) from state h0 (B, D, N): (outputs (B, D, T), final state), in blocks of `block` steps.
    Within a block the output is the causal convolution with k_j = Re(Σ_n η_n p_n q_n^j) as a lower-triangular
    (Toeplitz) matmul, so an output never picks up rounding from later inputs (an FFT convolution does, and the
    timestep norm in front can make early inputs exactly 0); the state entering each block adds
    Re(Σ_n η_n q_n^{j+1} h_n), and block states chain as h <- q^block h + p Σ_j q^{block-1-j} x_j."""
    b, d, t = x.shape
    nb = -(-t // block)
    xb = F.pad(x, (0, nb * block - t)).view(b, d, nb, block)
    j = torch.arange(block + 1, dtype=p.dtype, device=x.device)
    powers = torch.polar(q.abs()[..., None] ** j, q.angle()[..., None] * j)  # q^j, (D, N, block + 1)
    kernel = (eta[..., None] * p[..., None] * powers[..., :block]).real.sum(1)  # (D, block)
    lag = torch.arange(block, device=x.device)
    lag = lag[:, None] - lag[None, :]
    toeplitz = kernel[:, lag.clamp(min=0)] * (lag >= 0)  # (D, block, block): [t, s] = k_{t-s}
    local = torch.einsum("dts,bdcs->bdct", toeplitz, xb)
    xc = torch.complex(xb, torch.zeros_like(xb))
    written = p[..., None] * torch.einsum("dns,bdcs->bdnc", powers[..., :block].flip(-1), xc)  # (B, D, N, nb)
    h, entering = h0.to(powers.dtype), []
    for c in range(nb):  # one step per block: the blocks' own sums are computed above in parallel
        entering.append(h)
        h = powers[..., block] * h + written[..., c]
    carried = torch.einsum("dnj,bdnc->bdcj", eta[..., None] * powers[..., 1:], torch.stack(entering, -1)).real
    y = (local + carried).reshape(b, d, nb * block)[..., :t] + omega[:, None] * x
    if t % block:  # the state after the last real step, not after the padding
        last = entering[-1]
        r = t - (nb - 1) * block
        tail = xc[..., -1, :r]
        h = powers[..., r] * last + p * torch.einsum("dns,bds->bdn", powers[..., :r].flip(-1), tail)
    return y, h


def timestep_norm(x: Tensor, groups: int, count: Tensor, mean: Tensor, var: Tensor, eps: float
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, T, D) normalised by the mean and population variance of its feature group over every step so far
    (this one included); returns (normalised x without affine, count, mean, var) after the last step. The running
    statistics are float64 (count, mean, var), so that sums over 64K steps neither drift nor cancel."""
    b, t, d = x.shape
    xg = x.view(b, t, groups, d // groups)
    step_mean, step_sq = xg.double().mean(-1), xg.double().pow(2).mean(-1)  # (B, T, G)
    seen = count[:, None] + torch.arange(1, t + 1, device=x.device, dtype=count.dtype)  # (B, T)
    prior = count[:, None, None]
    cum_mean = (prior * mean[:, None] + step_mean.cumsum(1)) / seen[..., None]
    cum_sq = (prior * (var + mean.pow(2))[:, None] + step_sq.cumsum(1)) / seen[..., None]
    cum_var = (cum_sq - cum_mean.pow(2)).clamp_min(0)
    shift, scale = cum_mean.to(x.dtype), torch.rsqrt(cum_var + eps).to(x.dtype)
    y = (xg - shift[..., None]) * scale[..., None]
    return y.view(b, t, d), seen[:, -1], cum_mean[:, -1], cum_var[:, -1]


@register
class Megalodon(Mechanism):
    name = "megalodon"
    Options = MegalodonOptions
    display_order = 11
    continues_base_attention = False  # no projection of its layer has a counterpart in attention's qkv / out

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        o = self.options
        if d_model % o.norm_groups:
            raise ConfigError(f"mechanism.norm_groups={o.norm_groups} must divide model.d_model={d_model}")
        self.z_dim = n_heads * max(2, 2 * round(d_model * o.z_ratio / n_heads / 2))  # even head size for RoPE
        self.v_dim = n_heads * max(1, round(d_model * o.v_ratio / n_heads))
        d, n = d_model, o.ema_dim
        # the reference's initialisation (complex_exponential_moving_average.py, _reset_parameters)
        self.alpha = nn.Parameter(torch.randn(d, n) * 0.2)
        self.delta = nn.Parameter(torch.randn(d, n) * 0.2)
        f = torch.exp(-torch.arange(1, d + 1) * math.log(d) / d)[torch.randperm(d)]
        self.theta = nn.Parameter(torch.log(f / (1 - f)).clamp(-20, 20))
        self.gamma = nn.Parameter(torch.stack([torch.randn(d, n), torch.zeros(d, n)], -1))
        self.omega = nn.Parameter(nn.init.trunc_normal_(torch.empty(d), std=0.25, a=-1, b=1))
        self.norm_weight, self.norm_bias = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.m_weight = nn.Parameter(torch.zeros(d))  # RMSNorm of the CEMA output, stored as w + 1
        self.z = nn.Linear(d, self.z_dim)
        self.qk_scale = nn.Parameter(torch.zeros(2, self.z_dim))  # Q and K: (1 + scale) / sqrt(d_z), + shift
        self.qk_shift = nn.Parameter(torch.zeros(2, self.z_dim))
        self.v = nn.Linear(d, self.v_dim)
        self.r = nn.Linear(d, self.v_dim)
        self.h = nn.Linear(d, d)
        self.value_out = nn.Linear(self.v_dim, d, bias=False)  # not `out`: attention's (D, D) one is a base weight
        for layer in (self.z, self.v, self.r, self.h):  # the reference zeroes biases
            nn.init.zeros_(layer.bias)

    def init_state(self, batch_size, device, dtype) -> MegalodonState:
        o, h = self.options, self.n_heads
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        ema = torch.zeros(batch_size, self.d_model, o.ema_dim, dtype=acc, device=device)
        stats = torch.zeros(batch_size, o.norm_groups, dtype=torch.float64, device=device)
        return MegalodonState(
            torch.complex(ema, ema), torch.zeros(batch_size, dtype=torch.float64, device=device), stats, stats.clone(),
            torch.zeros(batch_size, h, o.chunk, self.z_dim // h, device=device, dtype=dtype),
            torch.zeros(batch_size, h, o.chunk, self.v_dim // h, device=device, dtype=dtype))

    def forward(self, x: Tensor, state: MegalodonState, positions: Tensor) -> tuple[Tensor, MegalodonState]:
        o, (b, t, _) = self.options, x.shape
        acc = state.ema.real.dtype
        with torch.autocast(x.device.type, enabled=False):  # the recurrence keeps at least float32 under autocast
            xn, count, mean, var = timestep_norm(x.to(acc), o.norm_groups, state.count, state.mean, state.var,
                                                 o.norm_eps)
            xn = xn * (1 + self.norm_weight.to(acc)) + self.norm_bias.to(acc)
            p, q, eta = cema_coefficients(*(w.to(acc) for w in (self.alpha, self.delta, self.theta, self.gamma)))
            c, ema = cema(xn.transpose(1, 2), p, q, eta, self.omega.to(acc), state.ema, min(CEMA_BLOCK, t))
            c = c.transpose(1, 2)
            m = c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + o.norm_eps) * (1 + self.m_weight.to(acc))
        m, xn = m.to(x.dtype), xn.to(x.dtype)
        heads = self.n_heads
        z = self.z(m).view(b, t, heads, -1).transpose(1, 2)
        z = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + o.norm_eps)
        scale = (1 + self.qk_scale).view(2, heads, 1, -1) / math.sqrt(z.shape[-1])
        shift = self.qk_shift.view(2, heads, 1, -1)
        queries, keys = z * scale[0] + shift[0], z * scale[1] + shift[1]
        values = F.silu(self.v(xn)).view(b, t, heads, -1).transpose(1, 2)
        attn, k_buf, v_buf = self._chunk_attention(queries, keys, values, state, positions)
        r = F.silu(self.r(m))
        y = self.h(m) + self.value_out(attn.transpose(1, 2).reshape(b, t, -1) * r)
        return y, MegalodonState(ema, count, mean, var, k_buf, v_buf)

    def _chunk_attention(self, q: Tensor, k: Tensor, v: Tensor, state: MegalodonState, positions: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Causal attention within each chunk, cut at absolute chunk boundaries; the partial chunk's rotated keys
        and values carry over in fixed-size buffers (positions restart at 0 in every chunk)."""
        c, o = self.options.chunk, self.options
        p0, t = int(positions[0]), q.shape[2]
        k_buf, v_buf, outputs = state.k, state.v, []
        for start, stop, filled in unit_pieces(p0, t, c):
            local = torch.arange(filled, filled + stop - start, device=q.device)
            q_rot, k_rot = apply_rope(q[:, :, start:stop], local, o.rope_base), apply_rope(k[:, :, start:stop], local,
                                                                                           o.rope_base)
            keys = torch.cat([k_buf[:, :, :filled], k_rot], 2)
            values = torch.cat([v_buf[:, :, :filled], v[:, :, start:stop]], 2)
            mask = torch.ones(stop - start, keys.shape[2], dtype=torch.bool, device=q.device).tril(diagonal=filled)
            outputs.append(F.scaled_dot_product_attention(q_rot, keys, values, attn_mask=mask, scale=1.0))
            if filled + stop - start == c:  # chunk complete: nothing carries
                k_buf, v_buf = torch.zeros_like(k_buf), torch.zeros_like(v_buf)
            else:
                pad = c - keys.shape[2]
                k_buf, v_buf = F.pad(keys, (0, 0, 0, pad)), F.pad(values, (0, 0, 0, pad))
        return torch.cat(outputs, 2), k_buf, v_buf
