"""Full attention's cached-chunk path: the log-sum-exp merge of two fused calls equals one masked call."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechanisms.full import attend_after_cache, masked_attend_after_cache


def _inputs(past: int, t: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda n: (2, 3, n, 16)  # noqa: E731
    return (torch.randn(shape(t), generator=g, dtype=dtype), torch.randn(shape(past), generator=g, dtype=dtype),
            torch.randn(shape(past), generator=g, dtype=dtype), torch.randn(shape(t), generator=g, dtype=dtype),
            torch.randn(shape(t), generator=g, dtype=dtype))


@settings(max_examples=25, deadline=None)
@given(past=st.integers(1, 300), t=st.integers(1, 70), seed=st.integers(0, 10**6))
def test_merged_equals_masked(past, t, seed):
    args = _inputs(past, t, seed=seed)
    with torch.no_grad():
        torch.testing.assert_close(attend_after_cache(*args), masked_attend_after_cache(*args), atol=2e-6, rtol=1e-5)


def test_merged_matches_float64_softmax():
    """Against the definition: softmax over [cache; chunk] with the chunk's causal mask, in float64."""
    q, kp, vp, kn, vn = _inputs(37, 11)
    with torch.no_grad():
        got = attend_after_cache(q, kp, vp, kn, vn).double()
    k, v = torch.cat([kp, kn], 2).double(), torch.cat([vp, vn], 2).double()
    scores = q.double() @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    allowed = torch.ones(11, 48, dtype=torch.bool).tril(diagonal=37)
    want = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_extreme_scores_do_not_overflow():
    """A cache whose scores dwarf the chunk's (and the reverse) must merge without inf/NaN."""
    q, kp, vp, kn, vn = _inputs(20, 5)
    for scale_past, scale_new in ((300.0, 1.0), (1.0, 300.0)):
        with torch.no_grad():
            got = attend_after_cache(q, kp * scale_past, vp, kn * scale_new, vn)
            want = masked_attend_after_cache(q, kp * scale_past, vp, kn * scale_new, vn)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_with_gradients_the_masked_call_is_used():
    """Training differentiates through the one masked SDPA call (the fused entry points' log-sum-exp has no
    gradient path here); the gradient must reach the cache."""
    q, kp, vp, kn, vn = _inputs(9, 4)
    kp.requires_grad_(True)
    out = attend_after_cache(q, kp, vp, kn, vn)
    out.sum().backward()
    assert kp.grad is not None and kp.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_merged_equals_masked_on_cuda():
    args = [a.cuda() for a in _inputs(200, 33)]
    with torch.no_grad():
        torch.testing.assert_close(attend_after_cache(*args), masked_attend_after_cache(*args), atol=2e-6, rtol=1e-5)
