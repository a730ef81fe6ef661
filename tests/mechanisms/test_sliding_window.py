"""Sliding-window attention: exact window semantics against a brute-force float64 reference (sinks included), the
batched fast path against the exact path, full attention when the window covers everything, and its state size."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mechanisms
from mechanisms.full import merge_heads, split_heads
from mechanisms.rope import apply_rope
from mechanisms.sliding_window import windowed_attention
from tests.helpers.mechanism_cases import build
from tests.helpers.streaming import stream

D, H = 32, 4


def make(name, opts, dtype=torch.float32, seed=0):
    return build(name, opts, D, H, dtype, seed)


def test_window_at_least_length_equals_full_attention():
    full = make("full", {}, torch.float64)
    for window in (50, 64):
        sw = make("sliding_window", {"window": window}, torch.float64)
        sw.load_state_dict(full.state_dict())
        x = torch.randn(2, 50, D, dtype=torch.float64)
        torch.testing.assert_close(stream(sw, x, [50])[0], stream(full, x, [50])[0], atol=1e-12, rtol=0)


def reference_window_attention(q, k, v, window, sinks):
    """Brute force, one query at a time, float64: the documented convention written out literally."""
    b, h, t, dh = q.shape
    out = torch.zeros_like(q)
    for i in range(t):
        scores, values = [], []
        for j in range(max(0, i - window + 1), i + 1):
            scores.append((apply_rope(q[:, :, i : i + 1], torch.tensor([i])) *
                           apply_rope(k[:, :, j : j + 1], torch.tensor([j]))).sum(-1))
            values.append(v[:, :, j])
        for j in range(min(sinks, max(0, i - window + 1))):  # sinks that left the window
            q_pos = min(i, sinks + window - 1)
            scores.append((apply_rope(q[:, :, i : i + 1], torch.tensor([q_pos])) *
                           apply_rope(k[:, :, j : j + 1], torch.tensor([j]))).sum(-1))
            values.append(v[:, :, j])
        probs = (torch.cat(scores, -1) / math.sqrt(dh)).softmax(-1)
        out[:, :, i] = (probs[..., None] * torch.stack(values, 2)).sum(2)
    return out


@pytest.mark.parametrize("window,sinks", [(1, 0), (4, 0), (6, 2), (3, 5)])
def test_sliding_window_matches_bruteforce_reference(window, sinks):
    m = make("sliding_window", {"window": window, "sinks": sinks}, torch.float64)
    x = torch.randn(1, 23, D, dtype=torch.float64)
    q, k, v = split_heads(m.qkv(x), H)
    expected = m.out(merge_heads(reference_window_attention(q, k, v, window, sinks)))
    for sizes in ([23], [5, 1, 9, 8]):
        torch.testing.assert_close(stream(m, x, sizes)[0], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("window", [1, 3, 8, 40])
def test_each_row_sees_exactly_min_t_plus_1_window_keys(window):
    """Zero queries give uniform attention over the visible keys; one-hot values reveal which keys those are."""
    t = 30
    q = torch.zeros(1, 1, t, t, dtype=torch.float64)
    k = torch.randn(1, 1, t, t, dtype=torch.float64)
    v = torch.eye(t, dtype=torch.float64)[None, None]
    state = mechanisms.get("sliding_window")(t, 1, window=window).double().init_state(1, "cpu", torch.float64)
    state.k = state.v = torch.zeros(1, 1, window, t, dtype=torch.float64)
    y, _ = windowed_attention(q, None, k, v, state, torch.arange(t), window, 0)
    visible = y[0, 0] > 0
    for i in range(t):
        expected = set(range(max(0, i - window + 1), i + 1))
        assert set(visible[i].nonzero().flatten().tolist()) == expected
        assert len(expected) == min(i + 1, window)


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 400), window=st.integers(1, 300), seen=st.integers(0, 700), batch=st.integers(1, 2))
def test_sliding_window_fast_path_equals_the_exact_path(t, window, seen, batch):
    """The batched-SDPA fast path against the eager einsum path, outputs, carried state and gradients, in float64,
    with a chunk that starts `seen` tokens into the stream (buffer partly or wholly filled)."""
    g = torch.Generator().manual_seed(t * 1000 + window)
    q, k, v = (torch.randn(batch, 2, t, 8, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    state = mechanisms.get("sliding_window")(16, 2, window=window).double().init_state(batch, "cpu", torch.float64)
    filled = min(seen, window)  # slots of positions before 0 stay zero, as a real stream leaves them
    state.k[:, :, window - filled:] = torch.randn(batch, 2, filled, 8, dtype=torch.float64, generator=g)
    state.v[:, :, window - filled:] = torch.randn(batch, 2, filled, 8, dtype=torch.float64, generator=g)
    positions = torch.arange(seen, seen + t)
    fast, fast_state = windowed_attention(q, None, k, v, state, positions, window, 0)
    exact, exact_state = windowed_attention(q, None, k, v, state, positions, window, 0, exact=True)
    torch.testing.assert_close(fast, exact, atol=1e-12, rtol=0)
    torch.testing.assert_close(fast_state.k, exact_state.k, atol=0, rtol=0)
    weights = torch.randn(fast.shape, dtype=torch.float64, generator=g)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (q, k, v))
    grads_exact = torch.autograd.grad((exact * weights).sum(), (q, k, v))
    for a, b in zip(grads_fast, grads_exact, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_sliding_window_state_is_bounded_and_full_state_grows():
    sw, full = make("sliding_window", {"window": 64, "sinks": 4}), make("full", {})
    sizes = {}
    for n in (1024, 8192):
        x = torch.randn(1, n, D)
        with torch.no_grad():
            sizes[n] = (sw.state_nbytes(stream(sw, x, [512] * (n // 512))[1]),
                        full.state_nbytes(stream(full, x, [512] * (n // 512))[1]))
    assert sizes[1024][0] == sizes[8192][0] == 2 * (64 + 4) * D * 4
    assert sizes[8192][1] == 8 * sizes[1024][1]
