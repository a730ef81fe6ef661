"""The backbone streamed through the LongContextLM protocol (StreamingLM): rolling NLL, generation and
loglikelihoods do not depend on the chunk size, and agree with each other."""

import pytest
import torch

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
