"""Tokenizers: the BPE tokenizer is trained once per text set and read back from its cache, and splits digits."""

import random

from bench.models.tokenizers import BPETokenizer
from tasks.passkey import PasskeyTask, random_key


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
