"""Backbone streaming through the LongContextLM protocol, passkey construction and scoring, tokenizer caching."""

import random

import pytest
import torch

import tasks
from bench.lm import StreamingLM
from bench.model import Backbone, BackboneSpec
from bench.tokenizer import BPETokenizer, ByteTokenizer
from tasks.copy import CopyOptions, CopyTask
from tasks.passkey import PasskeyBuilder, PasskeyTask, random_key, score


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


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_passkey_samples_have_exact_length_and_needle_at_depth(depth):
    builder = PasskeyBuilder(ByteTokenizer())
    for length in (300, 1000):
        s = builder.build(length, depth, "40213")
        assert len(s.prompt) == length
        text = bytes(s.prompt).decode()
        assert text.count("40213") == 2 and text.endswith("The pass key is")
        start, end = s.needle_span
        assert bytes(s.prompt[start:end]).decode().strip().startswith("The pass key is 40213")
        filler = length - len(builder.instruction) - len(builder.question) - (end - start)
        assert abs((start - len(builder.instruction)) - depth * filler) <= len(builder.filler_unit) // 2


def test_passkey_rejects_lengths_below_its_fixed_text():
    builder = PasskeyBuilder(ByteTokenizer())
    with pytest.raises(ValueError, match="shorter"):
        builder.build(builder.min_length() - 1, 0.5, "12345")


def test_passkey_scoring():
    assert score(" 12345.", "12345") == {"exact_match": 1.0, "digit_accuracy": 1.0}
    assert score(" 12945", "12345") == {"exact_match": 0.0, "digit_accuracy": 0.8}
    assert score(" 123456", "12345")["exact_match"] == 0.0
    assert score("no", "12345") == {"exact_match": 0.0, "digit_accuracy": 0.0}


def test_training_samples_have_the_requested_length_start_with_bos_and_disjoint_seeds(task_data):
    """Every task's rows start with <bos> like the prompts the harness scores (a row without it taught full
    attention a different first token than evaluation shows), and <bos> appears nowhere else."""
    tok = ByteTokenizer()
    for name in tasks.names():
        task = tasks.get(name)(tasks.get(name).Options(name=name), tok, task_data)
        for length in (task.min_length() + 8, 300):
            tokens, weights = task.training_sample(random.Random(length), length)
            assert len(tokens) == length + 1 and len(weights) == length, name
            assert tokens[0] == tok.bos_id and tok.bos_id not in tokens[1:], name
    from mechanisms.base import ConfigError
    from tasks.base import EVAL_SEED_OFFSET, train_rng
    with pytest.raises(ConfigError):
        train_rng(EVAL_SEED_OFFSET)


def test_bpe_tokenizer_is_cached_and_splits_digits(tmp_path):
    texts = PasskeyTask.tokenizer_texts()
    a = BPETokenizer.cached(texts, 400, tmp_path)
    b = BPETokenizer.cached(texts, 400, tmp_path)
    assert a.fingerprint == b.fingerprint and len(list((tmp_path / "tokenizers").iterdir())) == 1
    ids = a.encode(" The pass key is 40213.")
    assert a.decode(ids) == " The pass key is 40213."
    assert [a.decode([i]) for i in ids][-6:-1] == list("40213")
    key = random_key(random.Random(1))
    assert len(a.encode(key)) == 5


def test_checkpoints_are_verified_by_hash_and_corruption_is_named(tmp_path):
    from bench.train import CorruptCheckpoint, load_checkpoint, save_checkpoint

    model = Backbone(BackboneSpec(50, 16, 1, 2, 32), "full", {})
    path = tmp_path / "ckpt.pt"
    save_checkpoint(model, path, {"note": "x"})
    assert load_checkpoint(path)["meta"] == {"note": "x"}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensor data: torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="SHA-256"):
        load_checkpoint(path)
    save_checkpoint(model, path, {})
    (tmp_path / "ckpt.pt.sha256").unlink()  # a checkpoint from before digests: checked by loading, then recorded
    assert "state_dict" in load_checkpoint(path) and (tmp_path / "ckpt.pt.sha256").exists()
    (tmp_path / "ckpt.pt.sha256").unlink()
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        load_checkpoint(path)


def test_copy_training_mixes_small_alphabet_spans_that_need_a_longer_matched_prefix():
    """Half the repeated spans use at most 16 distinct tokens, so one token does not say what follows it."""
    task = CopyTask(CopyOptions(name="copy"), ByteTokenizer())
    rng = random.Random(0)
    distinct = [len(set(task.training_sample(rng, 256)[0][1:])) for _ in range(200)]
    small = sum(d <= 16 for d in distinct) / len(distinct)
    assert 0.35 < small < 0.65 and max(distinct) > 16
