"""Invariants every per-layer mechanism keeps, run over the registry (`mechanisms.names()`, installed plugins included)
so that a new mechanism is tested without this file being edited: chunking never changes the outputs, a state
repeated from batch 1 continues every row as the batched stream does, no output sees a later token, the state stays
bounded exactly when the class declares it, a `reference_mask` is what the layer computes, and unknown options are
refused by name. Each mechanism runs with small options derived from its own memory unit
(tests/helpers/mechanism_cases.py), plus a few edge cases of the built-in ones."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mechanisms
from bench.core.errors import ConfigError
from mechanisms.full import merge_heads, split_heads
from mechanisms.rope import apply_rope
from tests.helpers.mechanism_cases import build, cases, memory_unit, params, per_layer_names, with_reference_mask
from tests.helpers.streaming import stream

D, H = 32, 4
CASES = cases()


def make(name, opts, dtype=torch.float32, seed=0):
    return build(name, opts, D, H, dtype, seed)


def length_for(name, opts, at_least=45):
    """`at_least` tokens, or enough to cross three memory units of a mechanism whose unit is longer."""
    return max(at_least, 3 * memory_unit(name, opts) + 7)


def chunk_sizes(pattern, total):
    """Chunk lengths summing to `total`: 9s, an unaligned cycle, or one token at a time."""
    if pattern == "tokens":
        return [1] * total
    cycle, sizes = {"segments": [9], "unaligned": [4, 13, 1, 20, 7]}[pattern], []
    while sum(sizes) < total:
        sizes.append(min(cycle[len(sizes) % len(cycle)], total - sum(sizes)))
    return sizes


def test_every_per_layer_mechanism_is_covered():
    assert {n for n, _ in CASES} == set(per_layer_names()) and "full" in per_layer_names()


@pytest.mark.parametrize("name,opts", params(CASES))
@pytest.mark.parametrize("pattern", ["segments", "unaligned", "tokens"])
def test_chunking_does_not_change_outputs(name, opts, pattern):
    m = make(name, opts)
    total = length_for(name, opts)
    x = torch.randn(2, total, D)
    whole, _ = stream(m, x, [total])
    chunked, _ = stream(m, x, chunk_sizes(pattern, total))
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,opts", params(CASES))
@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 30), min_size=1, max_size=8))
def test_any_chunking_property(name, opts, cuts):
    total = sum(cuts)
    m = make(name, opts)
    x = torch.randn(1, total, D, generator=torch.Generator().manual_seed(total))
    torch.testing.assert_close(stream(m, x, cuts)[0], stream(m, x, [total])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,opts", params(CASES))
def test_a_repeated_batch_1_state_continues_every_row_like_the_batched_stream(name, opts):
    """Prompts that share a prefix read it once (StreamingLM._prefill): the prefix's state at batch 1, repeated to
    every row by `repeat_state`, must carry each row on exactly as streaming all rows from the start does."""
    m = make(name, opts)
    total = length_for(name, opts)
    shared = total // 2 + 1  # not at a unit boundary
    x = torch.randn(3, total, D)
    x[1:, :shared] = x[:1, :shared]
    whole, _ = stream(m, x, [total])
    with torch.no_grad():
        _, state = stream(m, x[:1, :shared], [shared])
        rest, _ = m(x[:, shared:], m.repeat_state(state, 3), torch.arange(shared, total))
    torch.testing.assert_close(rest, whole[:, shared:].detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,opts", params(CASES))
def test_causality_across_chunks(name, opts):
    m = make(name, opts)
    total = length_for(name, opts, at_least=40)
    x = torch.randn(1, total, D)
    t = total * 3 // 7
    x2 = x.clone()
    x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
    for sizes in ([total], [6, 6, 6, 6, total - 24]):  # whole, and >= 3 chunks
        y1, _ = stream(m, x, sizes)
        y2, _ = stream(m, x2, sizes)
        torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], atol=0, rtol=0)
        assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :])


@pytest.mark.parametrize("name", per_layer_names())
def test_state_is_bounded_exactly_when_the_class_declares_it(name):
    """`bounded_state` feeds the report's bounded-state gate: hold the class to it, at its default options."""
    m = make(name, {})
    sizes = []
    for n in (256, 1024):
        with torch.no_grad():
            sizes.append(m.state_nbytes(stream(m, torch.randn(1, n, D), [128] * (n // 128))[1]))
    if mechanisms.get(name).bounded_state:
        assert sizes[0] == sizes[1] > 0
    else:
        assert sizes[1] > sizes[0]


@pytest.mark.parametrize("name,opts", params(with_reference_mask(CASES)))
def test_reference_mask_is_what_the_layer_computes(name, opts):
    """A mechanism that says it is plain masked attention (`reference_mask`) computes exactly softmax attention
    through that (T, T) mask over its own projections, in any chunking: the reference `make perf` times it against."""
    m = make(name, opts, torch.float64)
    total = 37
    x = torch.randn(2, total, D, dtype=torch.float64)
    positions = torch.arange(total)
    q, k, v = split_heads(m.qkv(x), H)
    q, k = apply_rope(q, positions, m.options.rope_base), apply_rope(k, positions, m.options.rope_base)
    mask = mechanisms.get(name).reference_mask(m.options, total, "cpu")
    expected = m.out(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
    for sizes in ([total], [5, 1, 9, 22]):
        torch.testing.assert_close(stream(m, x, sizes)[0], expected, atol=1e-12, rtol=0)


def same_as(name, opts):
    return mechanisms.get(name).same_as(mechanisms.options(name, **opts))


@pytest.mark.parametrize("name,opts", params([(n, o) for n, o in CASES if same_as(n, o)]))
def test_a_mechanism_computes_exactly_what_it_declares_itself_the_same_as(name, opts):
    """`same_as` lets the report take one run for another (FAM with no feedback tokens as BSWA): bit for bit."""
    other, other_opts = same_as(name, opts)
    a, b = make(name, opts, torch.float64), make(other, other_opts, torch.float64)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, length_for(name, opts), D, dtype=torch.float64)
    for pattern in ("segments", "unaligned"):
        sizes = chunk_sizes(pattern, x.shape[1])
        torch.testing.assert_close(stream(a, x, sizes)[0], stream(b, x, sizes)[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", mechanisms.names())
def test_unknown_options_are_refused_with_the_key_named(name):
    with pytest.raises(ConfigError, match="not_an_option"):
        mechanisms.options(name, not_an_option=1)
    with pytest.raises(ConfigError, match="not_an_option"):
        mechanisms.build(name, D, H, not_an_option=1)


def test_bad_options_fail_with_the_key_named():
    with pytest.raises(ConfigError, match="mechanism.window"):
        mechanisms.build("sliding_window", D, H, window=0)
    with pytest.raises(ConfigError, match="nope"):
        mechanisms.build("nope", D, H)
    with pytest.raises(ConfigError, match="windw"):
        mechanisms.build("sliding_window", D, H, windw=4)
