"""The backbone streamed through the LongContextLM protocol (StreamingLM): rolling NLL, generation and
loglikelihoods do not depend on the chunk size, and agree with each other; prompts that share a prefix read it
once."""

import pytest
import torch

import mechanisms
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer


def tiny_lm(mechanism="full", chunk=512, **opts):
    torch.manual_seed(0)
    tok = ByteTokenizer()
    model = Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), mechanism, opts)
    return StreamingLM(model, tok, chunk)


@pytest.mark.parametrize("mechanism,opts", [("full", {}), ("sliding_window", {"window": 8, "sinks": 2})])
def test_rolling_nll_and_generation_do_not_depend_on_chunk_size(mechanism, opts):
    tokens = list(b"The pass key is 12345. Remember it. The grass is green.")
    ref = tiny_lm(mechanism, 512, **opts)
    small = tiny_lm(mechanism, 7, **opts)
    torch.testing.assert_close(small.rolling_nll(tokens), ref.rolling_nll(tokens), atol=1e-5, rtol=0)
    assert small.generate(tokens, 6) == ref.generate(tokens, 6)
    assert ref.generate_batch([tokens, tokens[::-1]], 4) == [ref.generate(tokens, 4), ref.generate(tokens[::-1], 4)]


def test_loglikelihood_agrees_with_rolling_nll():
    lm = tiny_lm()
    ctx, cont = list(b"abc def"), list(b" ghi")
    ll, _ = lm.loglikelihood(ctx, cont)
    assert ll == pytest.approx(-float(lm.rolling_nll(ctx + cont)[len(ctx):].sum()), abs=1e-5)


BACKBONE_MECHANISMS = [n for n in mechanisms.names() if not mechanisms.is_model_level(n)]


@pytest.mark.parametrize("mechanism", BACKBONE_MECHANISMS)
def test_prompts_sharing_a_prefix_read_it_once_and_decode_as_if_streamed_whole(mechanism):
    """generate_batch streams the prefix its prompts share once (passkey: the filler before the needle) and repeats
    the states: the last logits equal the batched stream's and greedy decoding is unchanged, for every mechanism on
    the backbone (segment recurrences included)."""
    lm = tiny_lm(mechanism, 16)
    rng = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, 250, (150,), generator=rng).tolist()
    prompts = [prefix + torch.randint(0, 250, (9,), generator=rng).tolist() for _ in range(3)]
    ids = torch.tensor([[lm.tokenizer.bos_id, *p] for p in prompts])
    shared_logits, _, pos = lm._prefill(ids)
    whole_logits, _, _ = lm._stream(ids)
    assert pos == ids.shape[1] and shared_logits.shape[1] == 9  # the 151 shared positions were read once
    torch.testing.assert_close(shared_logits[:, -1], whole_logits[:, -1], atol=1e-5, rtol=0)
    assert lm.generate_batch(prompts, 4) == [lm.generate(p, 4) for p in prompts]
