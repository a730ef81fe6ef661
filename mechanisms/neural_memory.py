"""Neural memory (Titans, Behrouz et al. 2024, arXiv 2501.00663; TTT layers, Sun et al. 2024, arXiv 2407.04620): a
memory whose state is the weights of a small network, trained at test time by gradient steps on an associative loss,
read by a gated branch next to sliding-window attention (Titans' "memory as a gate", MAG).

Per head, with keys and queries L2-normalised after SiLU and values after SiLU (Titans §4.4), the memory M_W maps a
key to a value and learns from every token x_t:
    loss     l_t(W) = 1/2 ||M_W(k_t) - v_t||^2
    surprise S_t = eta_t S_{t-1} - (1 - eta_t) theta_t grad l_t(W)   momentum, eta_t in (0, 1)
    memory   W_t = (1 - alpha_t) W_{t-1} + S_t                         forgetting gate alpha_t in (0, 1)
    read     y_t = M_W(q_t)                                            no weight update on the read
theta_t = inner_lr * sigmoid(.) / chunk and eta_t, alpha_t = sigmoid(.) come from x_t by a linear map (one each
per head). Two deviations from Titans' formulas keep the inner optimisation stable, both found by divergence:
- The 1 / chunk is TTT's mini-batch mean: every gradient of a chunk is taken at the same weights (below), so in
  Titans' per-token sum a chunk's steps add up C-fold, and with SiLU keys (all in one orthant, so strongly
  correlated) the memory diverged within a few chunks at any theta that learns in one.
- The momentum is an exponential moving average (the surprise enters with weight 1 - eta_t, as in Adam's first
  moment): Titans' S_t = eta_t S_{t-1} - theta_t grad moves W by up to theta / (1 - eta) per gradient, 4x the
  bound at eta = 0.9 and unbounded as the learned eta nears 1, and the linear memory's weights reached 1e8 within
  2K tokens of correlated inputs. With the average a chunk moves W by at most inner_lr x its mean gradient.
`memory=linear` is M_W(k) = k W (TTT-Linear; with eta = alpha = 0 it is the delta rule), `memory=mlp` is
M(k) = gelu(k W1) W2 (Titans' deep memory with L_M = 2, hidden `hidden_mult` x head_dim; GELU as in TTT-MLP and
titans-pytorch's MemoryMLP).

Chunked, as Titans and TTT train it (mini-batch gradient descent): within a chunk of `chunk` tokens every gradient
is taken at the chunk's starting weights W_0, and the token-level recurrence above is then exact in closed form:
    S_C = P_C S_0 - sum_i c_i (P_C / P_i) grad l_i(W_0)
    W_C = A_C W_0 + (sum_t (A_C / A_t) P_t) S_0 - sum_i c_i (sum_{t >= i} (A_C / A_t)(P_t / P_i)) grad l_i(W_0)
with c_i = (1 - eta_i) theta_i, A_t = prod_{j <= t} (1 - alpha_j), P_t = prod_{j <= t} eta_j, so a chunk costs two
weighted gradients of the
batch loss (hand-derived below; autograd differentiates through them, so the outer parameters learn through the
inner updates). Tests hold this to the literal token loop in float64.

Conventions the papers leave open, as implemented:
- Chunks are aligned to absolute positions (chunk s holds [s*C, (s+1)*C)), like Infini's segments, so any chunking
  of the input gives the same outputs.
- Tokens of chunk s read the memory written by chunks < s only, as titans-pytorch retrieves; in the papers (TTT's
  dual form, Titans section 3.2) token t reads the weights after the updates of its chunk's tokens up to t. Their
  own chunk reaches them here through the sliding window instead (window >= chunk covers it).
- The initial weights W_0 are learned parameters (TTT's learned initialisation; Titans' meta-learned memory); the
  momentum starts at 0. The memory is kept in at least float32.
- MAG's combination ("normalise both branches with learnable vector-valued weights, then a non-linearity") is
  realised as a convex mix per head, (1 - g) * attention + g * RMSNorm(read) * scale, g = sigmoid(gate), with the
  gate started near 0 so that a continued base model keeps its attention (Infini's lesson, `gate_init`).
- Left out: Titans' persistent memory tokens and the short depthwise convolution after the projections (the
  sliding window supplies the token shift a recurrent-only model needs that convolution for).
Streaming state: the window's K/V, the memory weights and momentum, and the partial chunk's keys, values and gate
logits in a pre-allocated `chunk`-slot buffer, so `state_nbytes` is the same at any length.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions, gate_stats, unit_pieces
from mechanisms.full import merge_heads, split_heads
from mechanisms.registry import register
from mechanisms.rope import apply_rope
from mechanisms.sliding_window import WindowState, windowed_attention

KINDS = ("linear", "mlp")
SQRT_HALF, INV_SQRT_2PI = math.sqrt(0.5), 1 / math.sqrt(2 * math.pi)


@dataclasses.dataclass
class NeuralMemoryState:
    window: WindowState
    weights: tuple[Tensor, ...]  # (B, H, ...) the memory's weights after the last complete chunk, >= float32
    momentum: tuple[Tensor, ...]  # S, same shapes
    k: Tensor  # (B, H, C, Dh) normalised keys of the current partial chunk (slots past its length unused)
    v: Tensor  # (B, H, C, Dh)
    gates: Tensor  # (B, H, C, 3) logits of theta, eta, alpha of the partial chunk


@dataclasses.dataclass
class NeuralMemoryOptions(MechanismOptions):
    chunk: int = 64  # tokens per memory update (Titans/TTT mini-batch); as Infini's segment, >= 8 per training row
    window: int = 64  # sliding-window attention span; >= chunk so a token sees its own chunk without the memory
    memory: str = "mlp"  # mlp (Titans, L_M = 2) | linear (TTT-Linear)
    hidden_mult: int = 2  # mlp memory hidden width, in multiples of the head dimension
    # theta_t's bound, per chunk (theta = inner_lr * sigmoid(.) / chunk). None: TTT's base rates, 1.0 for the linear
    # memory (with unit keys the chunk's mean step is then at most a delta-rule step) and 0.1 for the mlp, whose
    # output layer sees hidden activations of squared norm ~ hidden_mult * head_dim / 3, not 1.
    inner_lr: float | None = None
    theta_init: float = 0.5  # sigmoid(.) of theta at initialisation
    momentum_init: float = 0.9  # eta at initialisation, per token (0.9 ** 64 = 0.001 of S carries across a chunk)
    decay_init: float = 0.001  # alpha at initialisation: 0.6 of a write survives 500 tokens
    gate_init: float = -3.0  # the read's share sigmoid(-3) = 0.05 at the first step, as Infini's gate
    gate_lr_mult: float = 20.0
    rope_base: float = 10000.0

    def validate(self) -> None:
        for key in ("chunk", "window", "hidden_mult"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mechanism.{key} must be >= 1, got {getattr(self, key)}")
        if self.window < self.chunk:
            raise ConfigError(f"mechanism.window={self.window} must be >= mechanism.chunk={self.chunk}: a token reads "
                              "only earlier chunks from the memory, so the window has to cover its own chunk")
        if self.memory not in KINDS:
            raise ConfigError(f"mechanism.memory must be one of {', '.join(KINDS)}, got {self.memory!r}")
        if (self.inner_lr is not None and self.inner_lr <= 0) or self.gate_lr_mult <= 0:
            raise ConfigError("mechanism.inner_lr and mechanism.gate_lr_mult must be > 0")
        for key in ("theta_init", "momentum_init", "decay_init"):
            if not 0 < getattr(self, key) < 1:
                raise ConfigError(f"mechanism.{key} must be in (0, 1), got {getattr(self, key)}")

    def memory_unit(self) -> int:
        return self.chunk

    def step_bound(self) -> float:
        """theta's upper bound per token: the inner learning rate over the chunk (a mini-batch mean)."""
        base = self.inner_lr if self.inner_lr is not None else (1.0 if self.memory == "linear" else 0.1)
        return base / self.chunk


def memory_read(weights: tuple[Tensor, ...], q: Tensor) -> Tensor:
    """M_W(q): q (B, H, T, Dk) -> (B, H, T, Dv); one weight tensor is the linear memory, two the MLP."""
    if len(weights) == 1:
        return q @ weights[0]
    return F.gelu(q @ weights[0]) @ weights[1]


def weighted_gradients(weights: tuple[Tensor, ...], k: Tensor, v: Tensor, coefficients: list[Tensor]
                       ) -> tuple[list[tuple[Tensor, ...]], Tensor]:
    """For each c in `coefficients` (B, H, C): sum_i c_i grad l_i(W) with l_i = 1/2 ||M_W(k_i) - v_i||^2, derived by
    hand (one forward for all weightings); and the per-token losses (B, H, C)."""
    if len(weights) == 1:
        residual = k @ weights[0] - v
        grads = [(k.transpose(-1, -2) @ (c.unsqueeze(-1) * residual),) for c in coefficients]
    else:
        w1, w2 = weights
        pre = k @ w1
        hidden = F.gelu(pre)
        residual = hidden @ w2 - v
        gelu_slope = 0.5 * (1 + torch.erf(pre * SQRT_HALF)) + pre * torch.exp(-0.5 * pre * pre) * INV_SQRT_2PI
        back = (residual @ w2.transpose(-1, -2)) * gelu_slope
        grads = [(k.transpose(-1, -2) @ (c.unsqueeze(-1) * back),
                  hidden.transpose(-1, -2) @ (c.unsqueeze(-1) * residual)) for c in coefficients]
    return grads, 0.5 * residual.pow(2).sum(-1)


def chunk_update(weights: tuple[Tensor, ...], momentum: tuple[Tensor, ...], k: Tensor, v: Tensor, gates: Tensor,
                 step_bound: float) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor]:
    """One chunk's closed-form update (module docstring): k, v (B, H, C, D), gate logits (B, H, C, 3). Returns the new
    weights and momentum and the chunk's per-token losses at its starting weights."""
    log_eta = F.logsigmoid(gates[..., 1])  # log eta
    theta = step_bound * torch.sigmoid(gates[..., 0]) * torch.sigmoid(-gates[..., 1])  # c_i = (1 - eta_i) theta_i
    log_keep = F.logsigmoid(-gates[..., 2])  # log (1 - alpha)
    la, lp = log_keep.cumsum(-1), log_eta.cumsum(-1)  # log A_t, log P_t
    la_end, lp_end = la[..., -1:], lp[..., -1:]
    n = gates.shape[-2]
    later = torch.ones(n, n, dtype=torch.bool, device=gates.device).tril()  # [t, i]: t >= i
    exponent = (la_end - la + lp).unsqueeze(-1) - lp.unsqueeze(-2)  # [t, i] = log (A_C/A_t)(P_t/P_i)
    memory_coef = theta * exponent.masked_fill(~later, -math.inf).exp().sum(-2)
    momentum_coef = theta * (lp_end - lp).exp()
    carry = (la_end - la + lp).exp().sum(-1)  # sum_t (A_C/A_t) P_t, the weight of S_0 in W_C
    (g_memory, g_momentum), losses = weighted_gradients(weights, k, v, [memory_coef, momentum_coef])

    def scalar(x: Tensor) -> Tensor:  # (B, H) -> broadcast over a weight matrix
        return x.reshape(*x.shape[:2], 1, 1)

    a_end, p_end = scalar(la_end.exp()), scalar(lp_end.exp())
    new_momentum = tuple(p_end * s - g for s, g in zip(momentum, g_momentum, strict=True))
    new_weights = tuple(a_end * w + scalar(carry) * s - g for w, s, g in zip(weights, momentum, g_memory, strict=True))
    return new_weights, new_momentum, losses


def logit(p: float) -> float:
    return math.log(p / (1 - p))


@register
class NeuralMemory(Mechanism):
    name = "neural_memory"
    Options = NeuralMemoryOptions
    display_order = 7
    perf_options = {"chunk": 512, "window": 512}

    @classmethod
    def span_baseline(cls, options):
        return "sliding_window", {"window": options.window}

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        o, d = self.options, self.head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # attention branch: the base model's projections
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.memory_qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.memory_gates = nn.Linear(d_model, 3 * n_heads)  # theta, eta, alpha logits per head
        with torch.no_grad():
            self.memory_gates.weight.mul_(0.1)
            bias = torch.tensor([logit(o.theta_init), logit(o.momentum_init), logit(o.decay_init)])
            self.memory_gates.bias.copy_(bias.repeat(n_heads))
        if o.memory == "linear":
            self.initial_memory = nn.ParameterList([nn.Parameter(torch.zeros(n_heads, d, d))])
        else:
            hidden = o.hidden_mult * d
            self.initial_memory = nn.ParameterList([
                nn.Parameter(torch.randn(n_heads, d, hidden) / math.sqrt(d)),
                nn.Parameter(torch.randn(n_heads, hidden, d) / math.sqrt(hidden)),
            ])
        self.read_scale = nn.Parameter(torch.ones(n_heads, 1, d))
        self.gate = nn.Parameter(torch.full((n_heads,), float(o.gate_init)))
        self._inner = {"loss_before": 0.0, "loss_after": 0.0, "tokens": 0}

    def init_state(self, batch_size, device, dtype) -> NeuralMemoryState:
        h, d, c, w = self.n_heads, self.head_dim, self.options.chunk, self.options.window
        acc = torch.promote_types(dtype, torch.float32)
        weights = tuple(p.to(device=device, dtype=acc).unsqueeze(0).expand(batch_size, *p.shape)
                        for p in self.initial_memory)

        def zeros(*shape):
            return torch.zeros(batch_size, h, *shape, device=device, dtype=dtype)

        return NeuralMemoryState(WindowState(zeros(w, d), zeros(w, d), zeros(0, d), zeros(0, d)), weights,
                                 tuple(torch.zeros_like(x) for x in weights), zeros(c, d), zeros(c, d), zeros(c, 3))

    def lr_multipliers(self) -> dict[str, float]:
        return {"gate": self.options.gate_lr_mult}

    def stats(self) -> dict[str, float]:
        found = gate_stats(self.gate)
        if self._inner["tokens"]:
            found["inner_loss_before"] = float(self._inner["loss_before"]) / self._inner["tokens"]
            found["inner_loss_after"] = float(self._inner["loss_after"]) / self._inner["tokens"]
        return found

    def forward(self, x: Tensor, state: NeuralMemoryState, positions: Tensor) -> tuple[Tensor, NeuralMemoryState]:
        o, h = self.options, self.n_heads
        b, t, _ = x.shape
        q, k, v = split_heads(self.qkv(x), h)
        q, k = apply_rope(q, positions, o.rope_base), apply_rope(k, positions, o.rope_base)
        local, window = windowed_attention(q, None, k, v, state.window, positions, o.window, 0)
        mq, mk, mv = split_heads(self.memory_qkv(x), h)
        mq, mk, mv = F.normalize(F.silu(mq), dim=-1), F.normalize(F.silu(mk), dim=-1), F.silu(mv)
        gates = self.memory_gates(x).view(b, t, h, 3).transpose(1, 2)
        weights, momentum = state.weights, state.momentum
        buf_k, buf_v, buf_g = state.k, state.v, state.gates
        reads, c = [], o.chunk
        for start, stop, filled in unit_pieces(int(positions[0]), t, c):  # cut the input at chunk boundaries
            reads.append(memory_read(weights, mq[:, :, start:stop].to(weights[0].dtype)))
            ck = torch.cat([buf_k[:, :, :filled], mk[:, :, start:stop]], dim=2)
            cv = torch.cat([buf_v[:, :, :filled], mv[:, :, start:stop]], dim=2)
            cg = torch.cat([buf_g[:, :, :filled], gates[:, :, start:stop]], dim=2)
            if ck.shape[2] == c:  # chunk complete: train the memory on it, empty the buffer
                acc = weights[0].dtype
                new_weights, momentum, losses = chunk_update(weights, momentum, ck.to(acc), cv.to(acc), cg.to(acc),
                                                             o.step_bound())
                if not self.training:
                    self._record_inner_loss(losses, new_weights, ck.to(acc), cv.to(acc))
                weights = new_weights
                buf_k, buf_v, buf_g = torch.zeros_like(buf_k), torch.zeros_like(buf_v), torch.zeros_like(buf_g)
            else:
                pad = c - ck.shape[2]
                buf_k, buf_v, buf_g = (F.pad(z, (0, 0, 0, pad)) for z in (ck, cv, cg))
        read = torch.cat(reads, dim=2)
        read = read * torch.rsqrt(read.pow(2).mean(-1, keepdim=True) + 1e-6) * self.read_scale.to(read.dtype)
        g = torch.sigmoid(self.gate).view(1, h, 1, 1).to(read.dtype)
        y = ((1 - g) * local.to(read.dtype) + g * read).to(x.dtype)
        return self.out(merge_heads(y)), NeuralMemoryState(window, weights, momentum, buf_k, buf_v, buf_g)

    @torch.no_grad()
    def _record_inner_loss(self, losses: Tensor, weights: tuple[Tensor, ...], k: Tensor, v: Tensor) -> None:
        """What one update achieved on its own chunk: the associative loss before and after it (stats())."""
        after = 0.5 * (memory_read(weights, k) - v).pow(2).sum(-1)
        self._inner["loss_before"] = self._inner["loss_before"] + losses.mean(1).sum()  # on the device: no sync
        self._inner["loss_after"] = self._inner["loss_after"] + after.mean(1).sum()
        self._inner["tokens"] += losses.shape[0] * losses.shape[2]
