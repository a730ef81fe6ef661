"""Tokenizers: a byte-level BPE (the default), trained on the training text and cached by content hash, or raw
bytes.

Digits are always single tokens (the BPE pre-tokenizer splits them), so a 5-digit pass key is 5 tokens under
either tokenizer and every key is representable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from bench.core import atomic

SPECIALS = ("<bos>", "<eos>", "<pad>")


class ByteTokenizer:
    name = "byte"

    def __init__(self) -> None:
        self.bos_id, self.eos_id, self.pad_id = 256, 257, 258
        self.vocab_size = 259
        self.fingerprint = "byte-v1"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    name = "bpe"

    def __init__(self, tokenizer) -> None:  # a `tokenizers.Tokenizer`
        self._tok = tokenizer
        self.bos_id, self.eos_id, self.pad_id = (tokenizer.token_to_id(s) for s in SPECIALS)
        self.vocab_size = tokenizer.get_vocab_size()
        self.fingerprint = "bpe-" + hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def cached(cls, texts: list[str], vocab_size: int, cache_dir: Path) -> BPETokenizer:
        """Train once per (texts, vocab size); later calls read the JSON written atomically under cache_dir."""
        from tokenizers import Tokenizer

        digest = hashlib.sha256(json.dumps([vocab_size, texts]).encode()).hexdigest()[:16]
        path = Path(cache_dir) / "tokenizers" / f"bpe-{vocab_size}-{digest}.json"
        if path.exists():
            return cls(Tokenizer.from_file(str(path)))
        tok = cls.train(texts, vocab_size)
        atomic.write_text(path, tok._tok.to_str())
        return tok


Tokenizer = ByteTokenizer | BPETokenizer
