"""Passkey construction (exact length, needle at the requested depth) and scoring."""

import pytest

from bench.models.tokenizers import ByteTokenizer
from tasks.passkey import PasskeyBuilder, score


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
