"""RMT: the backbone streamed in any chunking equals a literal segment loop written from the paper's layout
([read memory | segment | write slots], the write slots' last-layer outputs becoming the next segment's memory) in
float64; information crosses segments only through the memory; truncated BPTT cuts the gradient where configured;
the state stays bounded; the layers continue a full-attention base model; it has no per-layer form."""

import pytest
import torch

import mechanisms
from bench.core.errors import ConfigError
from bench.models.backbone import Backbone, BackboneSpec
from bench.training.protocols import transfer_weights

SPEC = BackboneSpec(50, 32, 2, 4, 64)
S, M = 6, 3


def model(dtype=torch.float64, **options):
    torch.manual_seed(0)
    return Backbone(SPEC, "rmt", {"segment": S, "memory_tokens": M, **options}).to(dtype).eval()


def literal_segments(m: Backbone, tokens: torch.Tensor) -> torch.Tensor:
    """The paper's loop: every segment of S tokens is read as [memory, tokens, memory] with positions from 0, and
    the last hidden states at the trailing memory slots, after the final norm (the reference's `hidden_states[-1]`),
    are the next segment's memory."""
    memory = m.segment_recurrence.initial_memory.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    logits = []
    for k in range(0, tokens.shape[1], S):
        seg = tokens[:, k : k + S]
        n = seg.shape[1]
        sequence = torch.cat([memory, m.embed(seg), memory], 1) if n == S else torch.cat([memory, m.embed(seg)], 1)
        out, _ = m.run_blocks(sequence, m.layer_states(tokens.shape[0]), torch.arange(sequence.shape[1]))
        logits.append(m.head_logits(out[:, M : M + n]))
        memory = m.norm(out[:, M + S :])
    return torch.cat(logits, 1)


@pytest.mark.parametrize("chunks", [[40], [6] * 6 + [4], [4, 13, 1, 20, 2], [1] * 40])
def test_streaming_in_any_chunking_equals_the_literal_segment_loop(chunks):
    m = model()
    tokens = torch.randint(0, 50, (2, 40))
    expected = literal_segments(m, tokens)
    parts, states, pos = [], None, 0
    with torch.no_grad():
        for n in chunks:
            out, states = m(tokens[:, pos : pos + n], states, pos)
            parts.append(out)
            pos += n
    # 1e-6: full attention merges a chunk with its cache through float32 log-sum-exps even in float64 (full.py)
    torch.testing.assert_close(torch.cat(parts, 1), expected.detach(), atol=1e-6, rtol=0)


def test_only_the_memory_carries_across_segments_and_attention_stays_causal():
    m = model()
    tokens = torch.randint(0, 50, (1, 18))
    with torch.no_grad():
        base, _ = m(tokens)
        changed = tokens.clone()
        changed[0, 2] = (tokens[0, 2] + 1) % 50  # a token of segment 0
        moved, _ = m(changed)
        assert torch.equal(moved[:, :2], base[:, :2])  # earlier tokens never see it
        assert not torch.allclose(moved[:, 6:12], base[:, 6:12])  # the next segment does, through the memory
    with pytest.raises(ConfigError, match="memory_tokens"):  # a zero-width memory is refused by name
        model(memory_tokens=0)


@pytest.mark.parametrize("bptt,reaches", [(0, True), (3, True), (1, False), (2, False)])
def test_truncated_bptt_cuts_the_gradient_through_the_memory(bptt, reaches):
    m = model(torch.float32, bptt_segments=bptt).train()
    tokens = torch.randint(0, 50, (2, 3 * S))
    logits, _ = m(tokens)
    logits[:, 2 * S :].pow(2).sum().backward()  # the third segment's loss
    grad = m.segment_recurrence.initial_memory.grad
    assert (grad is not None and grad.abs().sum() > 0) == reaches


def test_state_bytes_are_the_same_at_1k_and_16k_tokens():
    m = model(torch.float32)
    sizes = []
    with torch.no_grad():
        for n in (1024, 16384):
            states, pos = None, 0
            tokens = torch.randint(0, 50, (1, n))
            while pos < n:
                _, states = m(tokens[:, pos : pos + 2048], states, pos)
                pos += 2048
            sizes.append(m.state_nbytes(states))
    assert sizes[0] == sizes[1]  # both end 4 tokens into a segment (1024 and 16384 are 4 mod 6)


def test_its_layers_continue_a_full_attention_base_and_it_has_no_per_layer_form():
    base = Backbone(SPEC, "full", {})
    added = transfer_weights(Backbone(SPEC, "rmt", {}), base.state_dict())
    assert added == ["segment_recurrence.initial_memory"]
    assert not mechanisms.is_per_layer("rmt") and mechanisms.is_segment_recurrence("rmt")
    with pytest.raises(ConfigError, match="whole layer stack"):
        mechanisms.build("rmt", 32, 4)


def test_a_stream_cannot_start_mid_segment_without_its_state():
    with pytest.raises(ValueError, match="mid-segment"):
        model()(torch.randint(0, 50, (1, 4)), None, 3)


def test_the_written_memory_stays_bounded_however_many_segments_it_crosses():
    """The memory is written after the final norm, so no segment can grow it: every written vector's RMS is at
    most the norm's largest weight. Written before the norm (the first version), a memory fed back as input gains
    the residual stream's updates in every segment; with blocks whose updates are large (here: weights x 4, as
    training made them) it grew 10x over 40 segments."""
    m = model(dtype=torch.float32)
    with torch.no_grad():
        for blk in m.blocks:
            for p in blk.parameters():
                if p.dim() == 2:
                    p.mul_(4)
    tokens = torch.randint(0, SPEC.vocab_size, (2, 40 * S), generator=torch.Generator().manual_seed(1))
    state = m.init_states(2)
    with torch.no_grad():
        for k in range(0, tokens.shape[1], S):
            _, state = m(tokens[:, k : k + S], state, k)
            rms = state.memory.pow(2).mean(-1).sqrt()
            assert rms.max() <= m.norm.weight.abs().max() * (1 + 1e-5)
