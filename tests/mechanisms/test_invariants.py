"""Mechanism invariants: chunking invariance, causality, exact window semantics, bounded state — each against a
brute-force float64 reference where one exists."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from streaming import stream

import mechanisms
from bench.model import RMSNorm, SwiGLU
from mechanisms.base import ConfigError
from mechanisms.full import merge_heads, split_heads
from mechanisms.rope import apply_rope
from mechanisms.sliding_window import windowed_attention

D, H = 32, 4
CASES = [
    ("full", {}),
    ("sliding_window", {"window": 7}),
    ("sliding_window", {"window": 1}),
    ("sliding_window", {"window": 5, "sinks": 3}),
    ("infini", {"segment": 6}),
    ("infini", {"segment": 5, "update": "delta"}),
    ("bswa", {"block": 6, "mem_blocks": 1}),
    ("fam", {"block": 6, "mem_blocks": 1, "fam_tokens": 2}),
    ("fam", {"block": 4, "mem_blocks": 0, "fam_tokens": 4}),
]


def make(name, opts, dtype=torch.float32, seed=0):
    """The mechanism, bound to a random block norm and feed-forward as the backbone would (FAM uses them)."""
    torch.manual_seed(seed)
    m = mechanisms.build(name, D, H, **opts).to(dtype)
    m.block_parts = torch.nn.ModuleList([RMSNorm(D, 1e-6), RMSNorm(D, 1e-6), SwiGLU(D, 48)]).to(dtype)
    norm1, norm2, mlp = m.block_parts
    m.bind_block(norm1, lambda a: mlp(norm2(a)))
    return m



@pytest.mark.parametrize("name,opts", CASES)
@pytest.mark.parametrize("pattern", ["segments", "unaligned", "tokens"])
def test_chunking_does_not_change_outputs(name, opts, pattern):
    m = make(name, opts)
    x = torch.randn(2, 45, D)
    whole, _ = stream(m, x, [45])
    sizes = {"segments": [9] * 5, "unaligned": [4, 13, 1, 20, 7], "tokens": [1] * 45}[pattern]
    chunked, _ = stream(m, x, sizes)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 30), min_size=1, max_size=8), case=st.sampled_from(CASES))
def test_any_chunking_property(cuts, case):
    total = sum(cuts)
    m = make(*case)
    x = torch.randn(1, total, D, generator=torch.Generator().manual_seed(total))
    torch.testing.assert_close(stream(m, x, cuts)[0], stream(m, x, [total])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,opts", CASES)
def test_causality_across_chunks(name, opts):
    m = make(name, opts)
    x = torch.randn(1, 40, D)
    t = 17
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    for sizes in ([40], [6, 6, 6, 6, 16]):  # whole, and >= 3 chunks
        y1, _ = stream(m, x, sizes)
        y2, _ = stream(m, x2, sizes)
        torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], atol=0, rtol=0)
        assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :])


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


def test_bad_options_fail_with_the_key_named():
    with pytest.raises(ConfigError, match="mechanism.window"):
        mechanisms.build("sliding_window", D, H, window=0)
    with pytest.raises(ConfigError, match="nope"):
        mechanisms.build("nope", D, H)
    with pytest.raises(ConfigError, match="windw"):
        mechanisms.build("sliding_window", D, H, windw=4)
