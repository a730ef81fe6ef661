"""TransformerFAM and its BSWA baseline against a float64 per-block reference and the paper's invariants."""

import math

import pytest
import torch

import mechanisms
from bench.core.errors import ConfigError
from bench.models.backbone import RMSNorm, SwiGLU
from mechanisms.full import merge_heads, split_heads
from mechanisms.rope import apply_rope
from tests.helpers.streaming import stream

D, H, B = 32, 4, 6
DH = D // H


class BlockParts(torch.nn.Module):
    """Stand-ins for the backbone block's pre-attention norm and (norm + feed-forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2, self.mlp = RMSNorm(D, 1e-6), RMSNorm(D, 1e-6), SwiGLU(D, 48)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.3 * torch.randn_like(p))

    def feed_forward(self, x):
        return self.mlp(self.norm2(x))


def make(name="fam", dtype=torch.float64, seed=0, **opts):
    torch.manual_seed(seed)
    opts = {"block": B, "mem_blocks": 1, **opts}
    if name == "fam":
        opts.setdefault("fam_tokens", 3)
    m = mechanisms.build(name, D, H, **opts).to(dtype)
    parts = BlockParts().to(dtype)
    m.bind_block(parts.norm1, parts.feed_forward)
    m.parts = parts  # keep the stand-ins alive with the module
    return m


def attend(q, keys, values, probs_out=None):
    """softmax(q·K/sqrt(d)) V for one query row per head: q (b,h,d), keys/values (b,h,n,d)."""
    probs = (torch.einsum("bhd,bhnd->bhn", q, keys) / math.sqrt(q.shape[-1])).softmax(-1)
    if probs_out is not None:
        probs_out.append(probs)
    return torch.einsum("bhn,bhnd->bhd", probs, values)


def reference(m, x, probs=None):
    """The paper's equations as literal loops over blocks and queries, keys listed explicitly; `probs` collects
    each block token's attention probabilities (FAM keys last)."""
    o = m.options
    b, mb, nf = o.block, o.mem_blocks, o.fam_tokens
    norm, ff = m.parts.norm1, m.parts.feed_forward
    t = x.shape[1]
    pos = torch.arange(t)
    q, k, v = split_heads(m.qkv(x), H)
    q, k = apply_rope(q, pos), apply_rope(k, pos)
    fam = m.fam_init.unsqueeze(0).expand(x.shape[0], -1, -1)
    out, fams = torch.zeros_like(q), []
    for tau in range(-(-t // b)):
        s0 = tau * b
        fq, fk, fv = split_heads(m.qkv(norm(fam)), H)
        read_pos = torch.arange(s0 - nf, s0)
        fq, fk = apply_rope(fq, read_pos + b), apply_rope(fk, read_pos)
        for i in range(s0, min(t, s0 + b)):
            keys = list(range(max(0, s0 - mb * b), i + 1))
            out[:, :, i] = attend(q[:, :, i], torch.cat([k[:, :, keys], fk], 2), torch.cat([v[:, :, keys], fv], 2),
                                  probs)
        if nf and s0 + b <= t:
            blk = slice(s0, s0 + b)
            keys, values = torch.cat([fk, k[:, :, blk]], 2), torch.cat([fv, v[:, :, blk]], 2)
            o_f = torch.stack([attend(fq[:, :, j], keys, values) for j in range(nf)], 2)
            a_f = m.out(merge_heads(o_f)) + (fam if tau > 0 else 0)
            fam = a_f + ff(a_f)
            fams.append(fam)
    return m.out(merge_heads(out)), fams


@pytest.mark.parametrize("opts", [{}, {"mem_blocks": 2, "fam_tokens": 1}, {"mem_blocks": 0, "fam_tokens": B}])
@pytest.mark.parametrize("sizes", [[40], [B] * 6 + [4], [5, 1, 9, 13, 12], [1] * 40])
def test_matches_per_block_reference_in_any_chunking(opts, sizes):
    m = make(**opts)
    x = torch.randn(2, 40, D, dtype=torch.float64)
    expected, fams = reference(m, x)
    got, state = stream(m, x, sizes)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.fam, fams[-1], atol=1e-10, rtol=0)


def test_bswa_matches_reference_and_fam_with_no_tokens_is_bswa():
    x = torch.randn(2, 40, D, dtype=torch.float64)
    bswa, fam0 = make("bswa", mem_blocks=2), make("fam", mem_blocks=2, fam_tokens=0)
    torch.testing.assert_close(stream(bswa, x, [40])[0], reference(bswa, x)[0], atol=1e-10, rtol=0)
    for sizes in ([40], [7, 33]):  # the same layer: bit-identical under the same chunking
        torch.testing.assert_close(stream(fam0, x, sizes)[0], stream(bswa, x, sizes)[0], atol=0, rtol=0)
    torch.testing.assert_close(stream(fam0, x, [7, 33])[0], stream(bswa, x, [40])[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mem_blocks", [7, 12])  # ceil(40 / 6) = 7
def test_bswa_seeing_every_block_is_full_attention(mem_blocks):
    bswa = make("bswa", mem_blocks=mem_blocks)
    full = mechanisms.build("full", D, H).double()
    full.load_state_dict({"qkv.weight": bswa.qkv.weight, "out.weight": bswa.out.weight})
    x = torch.randn(2, 40, D, dtype=torch.float64)
    torch.testing.assert_close(stream(bswa, x, [13, 27])[0], stream(full, x, [40])[0], atol=1e-12, rtol=0)


def test_bswa_rows_see_the_previous_blocks_and_their_own_causally():
    bswa = make("bswa", mem_blocks=1, dtype=torch.float64)
    x = torch.randn(1, 30, D, dtype=torch.float64, requires_grad=True)
    y, _ = stream(bswa, x, [30])
    for i in range(30):
        (grad,) = torch.autograd.grad(y[0, i].sum(), x, retain_graph=True)
        seen = set(grad[0].abs().sum(-1).nonzero().flatten().tolist())
        assert seen == set(range(max(0, (i // B - 1) * B), i + 1))


def capture_fams(m, x):
    """Every FAM the whole-sequence forward computes, keyed by the block it compressed."""
    fams, update = {}, m._fam_update

    def spy(fam, fq, fk, fv, bk, bv, block_idx):
        fams[block_idx] = update(fam, fq, fk, fv, bk, bv, block_idx)
        return fams[block_idx]

    m._fam_update = spy
    y, _ = stream(m, x, [x.shape[1]])
    del m._fam_update
    return y, fams


def test_fam_after_block_tau_ignores_later_blocks():
    m, tau = make(), 2
    x = torch.randn(1, 42, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, (tau + 1) * B :] += torch.randn_like(x2[:, (tau + 1) * B :])
    _, f1 = capture_fams(m, x)
    _, f2 = capture_fams(m, x2)
    for i in range(tau + 1):
        torch.testing.assert_close(f1[i], f2[i], atol=0, rtol=0)
    assert not torch.allclose(f1[tau + 1], f2[tau + 1])


def test_block_tau_reads_the_previous_fam_never_its_own():
    m, tau = make(), 2
    x = torch.randn(1, 42, D, dtype=torch.float64)
    update = m._fam_update
    y, _ = stream(m, x, [42])

    def nudged(fam, fq, fk, fv, bk, bv, block_idx):  # change F_tau only
        new = update(fam, fq, fk, fv, bk, bv, block_idx)
        return new + 1.0 if block_idx == tau else new

    m._fam_update = nudged
    y2, _ = stream(m, x, [42])
    end = (tau + 1) * B
    torch.testing.assert_close(y2[:, :end], y[:, :end], atol=0, rtol=0)  # blocks <= tau never saw F_tau
    assert not torch.allclose(y2[:, end : end + B], y[:, end : end + B])  # block tau + 1 reads it


def test_fam_carries_information_beyond_the_window_and_gradients_flow_through_it():
    """A token in block 0 reaches block 5 only through the FAM (BSWA with m = 1 cannot see that far)."""
    for name, reaches in (("fam", True), ("bswa", False)):
        m = make(name)
        x = torch.randn(1, 36, D, dtype=torch.float64, requires_grad=True)
        y, _ = stream(m, x, [36])
        (grad,) = torch.autograd.grad(y[0, 5 * B :].sum(), x)
        assert bool(grad[0, :B].abs().sum() > 0) is reaches
    m = make()
    y, _ = stream(m, torch.randn(1, 36, D, dtype=torch.float64), [36])
    grads = torch.autograd.grad(y[0, -1].sum(), [m.fam_init, m.parts.mlp.down.weight])
    assert all(g.abs().sum() > 0 for g in grads)  # the initial FAM and the block's FF learn through the FAM


@pytest.mark.parametrize("name", ["fam", "bswa"])
def test_state_is_bounded(name):
    m = make(name, dtype=torch.float32, block=64, fam_tokens=8 if name == "fam" else 0)
    sizes = []
    for n in (1024, 16384):
        with torch.no_grad():
            sizes.append(m.state_nbytes(stream(m, torch.randn(1, n, D), [1000, n - 1000])[1]))
    f = 8 if name == "fam" else 0
    assert sizes[0] == sizes[1] == 4 * (f * D + 2 * H * (64 + 64) * DH)


def test_stats_report_the_attention_share_on_fam_tokens():
    m = make().eval()
    assert m.stats() == {}
    x = torch.randn(2, 30, D, dtype=torch.float64)
    with torch.no_grad():
        stream(m, x, [7, 1, 22])
        probs = []
        reference(m, x, probs)
    expected = torch.stack([p[..., -m.options.fam_tokens :].sum(-1) for p in probs]).mean()
    assert m.stats()["fam_attention_share"] == pytest.approx(float(expected), abs=1e-9)
    assert make("bswa").eval().stats() == {}


def test_a_prefix_read_once_counts_once_per_row_in_the_attention_share():
    """StreamingLM reads a prefix its prompts share once and repeats the state: the share must stay the mean over
    every row's queries, as if each row had streamed the prefix itself."""
    x = torch.randn(3, 30, D, dtype=torch.float64)
    x[1:, :17] = x[:1, :17]
    batched, shared = make().eval(), make().eval()
    with torch.no_grad():
        stream(batched, x, [30])
        _, state = stream(shared, x[:1, :17], [17])
        shared(x[:, 17:], shared.repeat_state(state, 3), torch.arange(17, 30))
    assert shared.stats()["fam_attention_share"] == pytest.approx(batched.stats()["fam_attention_share"], abs=1e-12)
    assert shared._share_count == batched._share_count


def test_bad_options_and_unbound_fam_fail_clearly():
    with pytest.raises(ConfigError, match="mechanism.fam_tokens"):
        mechanisms.build("fam", D, H, block=4, fam_tokens=5)
    with pytest.raises(ConfigError, match="mechanism.block"):
        mechanisms.build("fam", D, H, block=0)
    with pytest.raises(ConfigError, match="bswa"):
        mechanisms.build("bswa", D, H, fam_tokens=2)
    unbound = mechanisms.build("fam", D, H, block=4, fam_tokens=2)
    with pytest.raises(RuntimeError, match="bind_block"):
        unbound(torch.randn(1, 8, D), unbound.init_state(1, "cpu", torch.float32), torch.arange(8))
