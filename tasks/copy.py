"""Copy (induction) task: a random token span repeated. Its training stream is the dense signal that forms the
content-based induction circuit that retrieval rests on — measured here: on the sparse passkey format alone a
tiny model stayed at chance for 800 steps, while repeats with a *variable* period form the circuit in ~500 steps
(a fixed period only teaches a positional "look back P" head). Evaluated as greedy recall of a span after a gap.
"""

from __future__ import annotations

import dataclasses
import random
import time

from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from tasks.base import CellResult, SampleOutcome, Task, TaskOptions, eval_rng
from tasks.registry import register

SMALL_ALPHABET_SHARE = 0.5  # training spans drawn from a few tokens, so that matching needs a longer prefix
SMALL_ALPHABET_SIZES = (4, 16)


@dataclasses.dataclass
class CopyOptions(TaskOptions):
    span: int = 16  # evaluation span length, tokens

    def validate(self) -> None:
        if self.span < 2:
            raise ConfigError(f"task.span must be >= 2, got {self.span}")


@register
class CopyTask(Task):
    name = "copy"
    Options = CopyOptions

    def _vocab(self) -> list[int]:
        specials = {self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id}
        return [i for i in range(self.tokenizer.vocab_size) if i not in specials]

    def min_length(self) -> int:
        return 2 * self.options.span

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """<bos> + a span of random period P in [8, length/2] repeated; only the predictable repeats are targets.
        Half the spans draw from a small alphabet, where one token does not say what follows it and only a longer
        matched prefix does: the circuit long-QA needs to find "Mary went to the" among "John went to the" (a
        single-token induction head answers with any of the story's places)."""
        vocab = self._vocab()
        period = rng.randint(8, max(8, (length + 1) // 2))
        if rng.random() < SMALL_ALPHABET_SHARE:
            vocab = rng.sample(vocab, rng.randint(*SMALL_ALPHABET_SIZES))
        span = [rng.choice(vocab) for _ in range(period)]
        tokens = [self.tokenizer.bos_id] + (span * ((length + 1) // period + 1))[:length]
        weights = [0.0] * period + [1.0] * (length - period)
        return tokens, weights

    def evaluate(self, lm, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        """A span at the start, random filler tokens, then the span's first token: is the rest recalled?"""
        vocab, span_len, results = self._vocab(), self.options.span, []
        for length in lengths:
            if length < 2 * span_len:
                raise ConfigError(f"copy task: eval length {length} is shorter than two spans ({2 * span_len})")
            rng = eval_rng(seed, self.name, length)
            samples = []
            for _ in range(n):
                span = [rng.choice(vocab) for _ in range(span_len)]
                gap = [rng.choice(vocab) for _ in range(length - span_len - 1)]
                samples.append((span + gap + span[:1], span[1:]))
            started = time.perf_counter()
            outputs = lm.generate_batch([p for p, _ in samples], span_len - 1)
            elapsed = time.perf_counter() - started
            hits = [o[: span_len - 1] == gold for o, (_, gold) in zip(outputs, samples, strict=True)]
            outcomes = [SampleOutcome(i, {"exact_match": float(hit)}, self.tokenizer.decode(o[: span_len - 1]),
                                      self.tokenizer.decode(gold), {"span": [0, span_len]})
                        for i, (o, (_, gold), hit) in enumerate(zip(outputs, samples, hits, strict=True))]
            results.append(
                CellResult(
                    context_length=length, metric="exact_match", value=sum(hits) / n, n=n,
                    state_bytes=lm.state_bytes_after(length), tokens_per_s=n * (length + span_len) / elapsed,
                    data_hash=content_hash(samples), samples=outcomes,
                )
            )
        return results
