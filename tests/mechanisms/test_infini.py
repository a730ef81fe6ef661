"""Infini-attention against brute-force float64 references and the paper's invariants (docs/design.md, "Mechanisms")."""

import math

import pytest
import torch

import mechanisms
from mechanisms.full import merge_heads, split_heads
from mechanisms.infini import sigma
from mechanisms.rope import apply_rope
from tests.helpers.streaming import stream

D, H, N = 32, 4, 8
DH = D // H


def make(update="linear", gate=0.3, segment=N, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    m = mechanisms.build("infini", D, H, segment=segment, update=update).to(dtype)
    with torch.no_grad():
        m.gate.fill_(gate)
    return m


def reference(m, x, update):
    """Literal per-query / per-segment loops of the paper's equations (float64)."""
    q, k, v = split_heads(m.qkv(x), H)
    b, h, t, dh = q.shape
    weight = torch.sigmoid(m.gate).view(1, h, 1)
    memory = torch.zeros(b, h, dh, dh, dtype=x.dtype)
    norm = torch.zeros(b, h, dh, dtype=x.dtype)
    out = torch.zeros_like(q)
    for s0 in range(0, t, N):
        seg = range(s0, min(t, s0 + N))
        for i in seg:
            keys = list(range(s0, i + 1))
            qi = apply_rope(q[:, :, i : i + 1], torch.tensor([i]))
            ks = torch.cat([apply_rope(k[:, :, j : j + 1], torch.tensor([j])) for j in keys], dim=2)
            probs = ((qi * ks).sum(-1) / math.sqrt(dh)).softmax(-1)
            local = (probs[..., None] * v[:, :, keys]).sum(2)
            if s0 == 0:
                out[:, :, i] = local
            else:
                sq = sigma(q[:, :, i])
                read = torch.einsum("bhk,bhkv->bhv", sq, memory) / torch.einsum("bhk,bhk->bh", sq, norm)[..., None]
                out[:, :, i] = weight * read + (1 - weight) * local
        if len(seg) == N:  # write the completed segment
            sk, vs = sigma(k[:, :, s0 : s0 + N]), v[:, :, s0 : s0 + N]
            if update == "delta" and s0 > 0:
                vs = vs - (sk @ memory) / (sk @ norm[..., None])
            memory = memory + sk.transpose(-1, -2) @ vs
            norm = norm + sk.sum(2)
    return m.out(merge_heads(out)), memory, norm


@pytest.mark.parametrize("update", ["linear", "delta"])
@pytest.mark.parametrize("sizes", [[37], [N] * 4 + [5], [1] * 37, [3, 14, 1, 19]])
def test_matches_bruteforce_reference_in_any_chunking(update, sizes):
    m = make(update)
    x = torch.randn(2, 37, D, dtype=torch.float64)
    expected, memory, norm = reference(m, x, update)
    y, state = stream(m, x, sizes)
    torch.testing.assert_close(y, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.memory, memory, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.norm, norm, atol=1e-10, rtol=0)


def test_memory_read_is_the_sum_over_all_earlier_segments():
    """sigma(q) M / sigma(q) z == sum_{j<s} sigma(q).sigma(k_j) v_j / sum_{j<s} sigma(q).sigma(k_j)."""
    m = make("linear")
    x = torch.randn(1, 5 * N, D, dtype=torch.float64)
    _, state = stream(m, x[:, : 4 * N], [4 * N])
    q, k, v = split_heads(m.qkv(x), H)
    query = q[:, :, 4 * N]
    scores = torch.einsum("bhd,bhjd->bhj", sigma(query), sigma(k[:, :, : 4 * N]))
    brute = torch.einsum("bhj,bhjd->bhd", scores, v[:, :, : 4 * N]) / scores.sum(-1, keepdim=True)
    torch.testing.assert_close(m._read(query[:, :, None], state.memory, state.norm)[:, :, 0], brute)


def test_delta_equals_linear_on_the_first_update_and_z_is_shared():
    x = torch.randn(2, 4 * N, D, dtype=torch.float64)
    lin, delta = make("linear"), make("delta")
    _, s_lin = stream(lin, x[:, :N], [N])
    _, s_delta = stream(delta, x[:, :N], [N])
    torch.testing.assert_close(s_lin.memory, s_delta.memory, atol=0, rtol=0)
    y_lin, s_lin = stream(lin, x, [4 * N])
    y_delta, s_delta = stream(delta, x, [4 * N])
    torch.testing.assert_close(y_lin[:, : 2 * N], y_delta[:, : 2 * N])  # segment 1 reads the same memory
    torch.testing.assert_close(s_lin.norm, s_delta.norm, atol=0, rtol=0)
    assert not torch.allclose(s_lin.memory, s_delta.memory)


def segment_local(m, x):
    """Causal attention restricted to each segment, built from the full-attention mechanism's code."""
    full = mechanisms.build("full", D, H).to(x.dtype)
    full.qkv.load_state_dict(m.qkv.state_dict())
    full.out.load_state_dict(m.out.state_dict())
    outs = []
    for s0 in range(0, x.shape[1], N):
        seg = x[:, s0 : s0 + N]
        outs.append(full(seg, full.init_state(x.shape[0], "cpu", x.dtype), torch.arange(s0, s0 + seg.shape[1]))[0])
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_gate_forced_to_zero_is_segment_local_attention(update):
    m = make(update, gate=-float("inf"))
    x = torch.randn(2, 5 * N + 3, D, dtype=torch.float64)
    torch.testing.assert_close(stream(m, x, [x.shape[1]])[0], segment_local(m, x), atol=1e-12, rtol=0)


def test_one_segment_is_local_causal_attention():
    m = make(gate=0.7)
    x = torch.randn(2, N, D, dtype=torch.float64)
    torch.testing.assert_close(stream(m, x, [N])[0], segment_local(m, x), atol=1e-12, rtol=0)


def test_memory_path_ignores_position_offsets():
    m = make()
    x = torch.randn(1, 4 * N, D, dtype=torch.float64)
    base, s_base = stream(m, x, [4 * N])
    shifted, s_shift = stream(m, x, [4 * N], start=100 * N)
    torch.testing.assert_close(s_shift.memory, s_base.memory, atol=0, rtol=0)
    torch.testing.assert_close(shifted, base, atol=1e-9, rtol=0)  # local path: RoPE is relative


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_finite_after_500_segments(update):
    m = make(update, segment=4, dtype=torch.float32)
    x = torch.randn(1, 2000, D)
    with torch.no_grad():
        y, state = stream(m, x, [2000] if update == "linear" else [400] * 5)
    assert torch.isfinite(y).all() and torch.isfinite(state.memory).all() and state.memory.dtype == torch.float32


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_gradients_flow_through_memory_and_reach_the_gate(update):
    m = make(update, gate=0.0, dtype=torch.float32)
    x = torch.randn(1, 4 * N, D, requires_grad=True)
    y, _ = stream(m, x, [4 * N])
    y[:, 3 * N :].pow(2).sum().backward()  # loss on segment 3 only
    assert x.grad[:, 2 * N : 3 * N].abs().sum() > 0  # ... reaches segment 2 through the memory
    assert x.grad[:, :N].abs().sum() > 0
    assert (m.gate.grad.abs() > 0).all()  # d loss / d beta != 0 at initialisation


@pytest.mark.parametrize("update", ["linear", "delta"])
def test_causal_across_segments(update):
    m = make(update)
    x = torch.randn(1, 5 * N, D, dtype=torch.float64)
    t = 2 * N + 3
    x2 = x.clone()
    x2[:, t + 1 :] += 1.0
    for sizes in ([5 * N], [N] * 5, [7, 7, 7, 19]):
        y1, y2 = stream(m, x, sizes)[0], stream(m, x2, sizes)[0]
        torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], atol=0, rtol=0)


def test_state_is_bounded():
    m = make(segment=64, dtype=torch.float32)
    sizes = []
    for n in (1024, 16384):
        with torch.no_grad():
            sizes.append(m.state_nbytes(stream(m, torch.randn(1, n, D), [1000, n - 1000])[1]))
    assert sizes[0] == sizes[1] == 4 * H * (DH * (DH + 1) + 2 * 64 * DH)


def test_stats_report_the_gate_mix():
    m = make(gate=0.0)
    assert m.stats() == {"gate_memory_weight": 0.5, "gate_memory_weight_std": 0.0}


def test_parallel_linear_path_equals_the_segment_loop():
    m = make("linear", dtype=torch.float32)
    x = torch.randn(2, 6 * N + 3, D)
    torch.testing.assert_close(stream(m, x, [x.shape[1]])[0], stream(m, x, [N] * 6 + [3])[0], atol=1e-5, rtol=0)

