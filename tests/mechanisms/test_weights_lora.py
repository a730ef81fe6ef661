"""weights_lora (memory in the weights): adapters are fresh for every context (nothing leaks from one sample to the
next), the reader's own weights are bit-identical after evaluation, zero steps is the reader on instruction +
question alone, the adapters learn what they are trained on, and the cost is recorded."""

import pytest
import torch

from bench.core.errors import ConfigError
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer
from mechanisms.weights_lora import WeightsLoRA

PREFIX = "Find the key. "
FIRST = PREFIX + "The grass is green. The pass key is 73915. The sky is blue. What is the pass key?"
SECOND = PREFIX + "Here we go again. The pass key is 28406. There and back. What is the pass key?"


def tiny_reader(seed=0):
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    return StreamingLM(Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), "full", {}), tok, chunk_size=64)


def memory(**options):
    defaults = {"steps": 3, "lr": 1e-2, "keep_prefix": len(PREFIX), "question_tokens": 20, "train_window": 48}
    return WeightsLoRA(tiny_reader(), **{**defaults, **options})


def test_adapters_are_fresh_for_every_context():
    """Answering the second sample after adapting on the first gives exactly what a fresh model gives on it."""
    tok = ByteTokenizer()
    first, second, answer = tok.encode(FIRST), tok.encode(SECOND), tok.encode(" 28406")
    alone = memory().loglikelihood(second, answer)
    m = memory()
    m.loglikelihood(first, tok.encode(" 73915"))
    assert m.loglikelihood(second, answer) == alone
    assert m.generate_batch([first, second], 5)[1] == memory().generate(second, 5)


def test_the_readers_weights_are_bit_identical_after_evaluation():
    m = memory()
    base = {n: p.detach().clone() for n, p in m.reader.model.named_parameters() if "lora_" not in n}
    tok = ByteTokenizer()
    m.generate(tok.encode(FIRST), 5)
    m.rolling_nll(tok.encode(FIRST + SECOND))
    after = dict(m.reader.model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in base.items())
    assert any(not torch.equal(p, m.fresh[n]) for n, p in m.adapters.items())  # the adapters did train


def test_zero_steps_is_the_reader_on_instruction_and_question_alone():
    tok = ByteTokenizer()
    context, answer = tok.encode(FIRST), tok.encode(" 73915")
    m = memory(steps=0)
    short = context[: len(PREFIX)] + context[-20:]
    assert m.loglikelihood(context, answer) == tiny_reader().loglikelihood(short, answer)
    kept = memory(steps=0, keep_recent=10)
    assert kept.loglikelihood(context, answer) == tiny_reader().loglikelihood(
        context[: len(PREFIX)] + context[-30:], answer)


def test_the_adapters_learn_the_context_and_the_cost_is_recorded():
    tok = ByteTokenizer()
    context = tok.encode(PREFIX + "The pass key is 73915. " * 4 + "What is the pass key? The pass key is")
    answer = tok.encode(" 73915")
    before = memory(steps=0).loglikelihood(context, answer)[0]
    m = memory(steps=30)
    after = m.loglikelihood(context, answer)[0]
    stats = m.stats()
    assert after > before + 1.0
    assert stats["test_time.loss_last_step"] < stats["test_time.loss_first_step"]
    assert stats["test_time.seconds_per_adaptation"] > 0
    n_params = sum(p.numel() for n, p in m.reader.model.named_parameters() if "lora_" not in n)
    rows = m._rows(m._split(context)[0])
    assert stats["test_time.flops_per_adaptation"] == 4.0 * n_params * rows[:, 1:].numel() * 30
    one = memory(steps=1)
    one.loglikelihood(context, answer)
    assert one.stats()["test_time.loss_last_step"] == one.stats()["test_time.loss_first_step"] > 0


def test_state_is_the_adapters_at_any_length():
    m = memory()
    assert m.state_bytes_after(100) == m.state_bytes_after(10_000) == sum(
        p.numel() * 4 for p in m.adapters.values()) > 0


def test_perplexity_scores_every_token_once():
    tok = ByteTokenizer()
    tokens = tok.encode(FIRST + SECOND)
    nll = memory(stride=16).rolling_nll(tokens)
    assert nll.shape == (len(tokens),) and torch.isfinite(nll).all()
    # the first window is scored before any adaptation: exactly the reader on it
    torch.testing.assert_close(nll[:16], tiny_reader().rolling_nll(tokens[:16]), atol=0, rtol=0)


def test_bad_targets_and_readers_are_named():
    with pytest.raises(ConfigError, match="target_modules"):
        memory(target_modules=["no_such_layer"])
    with pytest.raises(ConfigError, match="TrainableLM"):
        WeightsLoRA(object())
    with pytest.raises(ConfigError, match="mechanism.rank"):
        memory(rank=0)


def test_a_half_precision_reader_trains_float32_adapters():
    reader = tiny_reader()
    reader.model.to(torch.bfloat16)
    m = WeightsLoRA(reader, steps=3, lr=1e-2, keep_prefix=len(PREFIX), question_tokens=20, train_window=48)
    assert {p.dtype for p in m.adapters.values()} == {torch.float32}
    tok = ByteTokenizer()
    logprob, _ = m.loglikelihood(tok.encode(FIRST), tok.encode(" 73915"))
    assert torch.isfinite(torch.tensor(logprob)) and all(torch.isfinite(p).all() for p in m.adapters.values())
