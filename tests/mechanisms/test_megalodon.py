"""Megalodon: the CEMA equals its literal complex recurrence in float64 (and the reference's FFT-convolution
formula), the timestep norm equals statistics recomputed from scratch at every step, attention never crosses a
chunk boundary, and gradients reach every parameter. Chunking invariance, causality and bounded state:
test_invariants.py."""

import math

import pytest
import torch

from mechanisms.megalodon import Megalodon, cema, cema_coefficients, timestep_norm
from mechanisms.rope import apply_rope

D, N = 6, 4


def parameters(seed=0):
    g = torch.Generator().manual_seed(seed)
    alpha, delta = (torch.randn(D, N, generator=g, dtype=torch.float64) for _ in range(2))
    theta = torch.randn(D, generator=g, dtype=torch.float64)
    gamma = torch.randn(D, N, 2, generator=g, dtype=torch.float64)
    omega = torch.randn(D, generator=g, dtype=torch.float64)
    return alpha, delta, theta, gamma, omega


def literal_cema(x, alpha, delta, theta, gamma, omega, h):
    """The reference's recurrence written out: h_t = p x_t + q h_{t-1}, y_t = Re(Σ_n η_n h_t,n) + ω x_t, with
    p = σ(α), q = (1 - σ(α) σ(δ)) (cos φ + i sin φ), φ_n = n σ(θ) 2π / N, η = (γ_re + i γ_im) / sqrt(N)."""
    sig, n_states = torch.sigmoid, alpha.shape[-1]
    phi = torch.stack([n * sig(theta) * 2 * math.pi / n_states for n in range(1, n_states + 1)], -1)
    q = (1 - sig(alpha) * sig(delta)) * torch.complex(torch.cos(phi), torch.sin(phi))
    eta = torch.complex(gamma[..., 0], gamma[..., 1]) / math.sqrt(n_states)
    ys = []
    for t in range(x.shape[-1]):
        h = sig(alpha) * x[..., t, None] + q * h
        ys.append((eta * h).sum(-1).real + omega * x[..., t])
    return torch.stack(ys, -1), h


@pytest.mark.parametrize("block", [1, 4, 7, 32])
def test_cema_equals_the_literal_recurrence(block):
    alpha, delta, theta, gamma, omega = parameters()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, D, 19, generator=g, dtype=torch.float64)
    h0 = torch.complex(*(torch.randn(2, D, N, generator=g, dtype=torch.float64) for _ in range(2)))
    expected, expected_h = literal_cema(x, alpha, delta, theta, gamma, omega, h0)
    p, q, eta = cema_coefficients(alpha, delta, theta, gamma)
    got, h = cema(x, p, q, eta, omega, h0, block)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(h, expected_h, atol=1e-12, rtol=0)


def test_cema_is_the_reference_fft_convolution_from_a_zero_state():
    """The reference's fftconv path: y = irfft(rfft(x, 2L) rfft(k, 2L))[:L] + ω x with k_j = Re(Σ_n η_n p_n q_n^j)."""
    alpha, delta, theta, gamma, omega = parameters(2)
    x = torch.randn(3, D, 40, dtype=torch.float64)
    p, q, eta = cema_coefficients(alpha, delta, theta, gamma)
    j = torch.arange(40, dtype=torch.float64)
    k = (eta[..., None] * p[..., None] * q[..., None] ** j).real.sum(1)
    fft = torch.fft.irfft(torch.fft.rfft(x, n=80) * torch.fft.rfft(k, n=80), n=80)[..., :40] + omega[:, None] * x
    got, _ = cema(x, p, q, eta, omega, torch.zeros(3, D, N, dtype=torch.complex128), 16)
    torch.testing.assert_close(got, fft, atol=1e-10, rtol=0)


def test_timestep_norm_uses_every_step_so_far_and_carries_across_calls():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 17, 8, generator=g, dtype=torch.float64) * 3 + 1
    groups, eps = 4, 1e-5
    expected = torch.empty_like(x)
    for t in range(17):
        seen = x[:, : t + 1].reshape(2, t + 1, groups, 2)
        mean, var = seen.mean((1, 3)), seen.var((1, 3), unbiased=False)
        expected[:, t] = ((x[:, t].view(2, groups, 2) - mean[..., None]) / torch.sqrt(var[..., None] + eps)).view(2, 8)
    zeros = torch.zeros(2, groups, dtype=torch.float64)
    first, count, mean, var = timestep_norm(x[:, :5], groups, torch.zeros(2, dtype=torch.float64), zeros, zeros, eps)
    rest, count, _, _ = timestep_norm(x[:, 5:], groups, count, mean, var, eps)
    torch.testing.assert_close(torch.cat([first, rest], 1), expected, atol=1e-10, rtol=0)
    assert count.tolist() == [17.0, 17.0]


def test_attention_never_crosses_a_chunk_boundary():
    torch.manual_seed(0)
    layer = Megalodon(16, 2, chunk=5, norm_groups=4)
    state = layer.init_state(1, "cpu", torch.float32)
    q, k, v = (torch.randn(1, 2, 12, n) for n in (layer.z_dim // 2, layer.z_dim // 2, layer.v_dim // 2))
    positions = torch.arange(3, 15)  # chunks [0, 5) partly, [5, 10), [10, 15)
    out, _, _ = layer._chunk_attention(q, k, v, state, positions)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :2], v2[:, :, :2] = torch.randn(1, 2, 2, k.shape[-1]), torch.randn(1, 2, 2, v.shape[-1])  # chunk 0
    out2, _, _ = layer._chunk_attention(q, k2, v2, state, positions)
    torch.testing.assert_close(out2[:, :, 2:], out[:, :, 2:])
    assert not torch.allclose(out2[:, :, :2], out[:, :, :2])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    layer = Megalodon(16, 2, chunk=4, norm_groups=4)
    x = torch.randn(2, 11, 16)
    y, _ = layer(x, layer.init_state(2, "cpu", torch.float32), torch.arange(11))
    y.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def literal_layer(layer: Megalodon, x: torch.Tensor) -> torch.Tensor:
    """The layer's formulas written out over a whole sequence from a zero state, step by step and chunk by chunk."""
    o, (b, t, d) = layer.options, x.shape
    g, h = o.norm_groups, layer.n_heads
    xn = torch.empty_like(x)
    for i in range(t):  # timestep norm: every group element of every step so far
        seen = x[:, : i + 1].reshape(b, i + 1, g, d // g)
        mean, var = seen.mean((1, 3)), seen.var((1, 3), unbiased=False)
        xn[:, i] = ((x[:, i].view(b, g, -1) - mean[..., None]) / torch.sqrt(var[..., None] + o.norm_eps)).view(b, d)
    xn = xn * (1 + layer.norm_weight) + layer.norm_bias
    zero = torch.zeros(b, d, o.ema_dim, dtype=torch.complex128)
    c, _ = literal_cema(xn.transpose(1, 2), layer.alpha, layer.delta, layer.theta, layer.gamma, layer.omega, zero)
    c = c.transpose(1, 2)
    m = c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + o.norm_eps) * (1 + layer.m_weight)
    z = layer.z(m).view(b, t, h, -1).transpose(1, 2)
    z = z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + o.norm_eps)
    dz = z.shape[-1]
    q = z * (1 + layer.qk_scale[0].view(h, 1, dz)) / math.sqrt(dz) + layer.qk_shift[0].view(h, 1, dz)
    k = z * (1 + layer.qk_scale[1].view(h, 1, dz)) / math.sqrt(dz) + layer.qk_shift[1].view(h, 1, dz)
    v = torch.nn.functional.silu(layer.v(xn)).view(b, t, h, -1).transpose(1, 2)
    out = torch.empty(b, h, t, v.shape[-1], dtype=x.dtype)
    for start in range(0, t, o.chunk):  # attention inside each chunk only, positions from 0 in each
        stop = min(t, start + o.chunk)
        local = torch.arange(stop - start)
        qc, kc = apply_rope(q[:, :, start:stop], local), apply_rope(k[:, :, start:stop], local)
        scores = qc @ kc.transpose(-1, -2)  # softmax scale 1
        scores = scores.masked_fill(local[None, :] > local[:, None], float("-inf"))
        out[:, :, start:stop] = scores.softmax(-1) @ v[:, :, start:stop]
    r = torch.nn.functional.silu(layer.r(m))
    return layer.h(m) + layer.value_out(out.transpose(1, 2).reshape(b, t, -1) * r)


def test_the_layer_equals_its_formulas_written_out_in_float64():
    torch.manual_seed(0)
    layer = Megalodon(16, 2, chunk=5, norm_groups=4, ema_dim=3).double()
    with torch.no_grad():  # move the zero-initialised affines off zero, so a dropped term shows
        for p in (layer.norm_weight, layer.norm_bias, layer.m_weight, layer.qk_scale, layer.qk_shift):
            p.normal_(0, 0.3)
        for lin in (layer.z, layer.v, layer.r, layer.h):
            lin.bias.normal_(0, 0.3)
    x = torch.randn(2, 17, 16, dtype=torch.float64)
    got, _ = layer(x, layer.init_state(2, "cpu", torch.float64), torch.arange(17))
    torch.testing.assert_close(got, literal_layer(layer, x), atol=1e-10, rtol=0)
