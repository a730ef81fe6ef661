"""Passkey retrieval (Mohtashami & Jaggi 2023 format): a 5-digit key hidden at a given depth in repetitive filler.

A sample is built to an exact token length so that a (length, depth) cell means the same thing for every
mechanism; the needle is inserted at the filler sentence boundary nearest to `depth`. Scored by greedy generation:
`exact_match` (all five digits) and `digit_accuracy` (per-position digits).
"""

from __future__ import annotations

import dataclasses
import random
import time

from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from bench.core.protocols import Tokenizer
from tasks.base import CellResult, SampleOutcome, Task, TaskData, TaskOptions, eval_rng
from tasks.registry import register

INSTRUCTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"
KEY_DIGITS = 5


@dataclasses.dataclass
class PasskeySample:
    prompt: list[int]  # exactly `length` tokens
    answer: list[int]
    key: str
    length: int
    depth: float
    needle_span: tuple[int, int]  # token span of the needle inside the prompt (for window diagnostics)


class PasskeyBuilder:
    """Tokenises the fixed pieces once; builds samples of exact token length."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.instruction = tokenizer.encode(INSTRUCTION)
        self.question = tokenizer.encode(QUESTION)
        sentence = tokenizer.encode(FILLER)
        self.sentence_starts: list[int] = []
        self.filler_unit: list[int] = []
        for part in FILLER.split(".")[:-1]:  # each filler sentence, boundaries in token space
            self.sentence_starts.append(len(self.filler_unit))
            self.filler_unit += tokenizer.encode(part + ".")
        if self.filler_unit != sentence:  # pieces must tokenise like the whole, or boundaries lie
            self.filler_unit = sentence
            self.sentence_starts = [0]

    def needle(self, key: str) -> list[int]:
        return self.tok.encode(NEEDLE.format(key=key))

    def min_length(self) -> int:
        return len(self.instruction) + len(self.needle("0" * KEY_DIGITS)) + len(self.question)

    def build(self, length: int, depth: float, key: str) -> PasskeySample:
        needle = self.needle(key)
        n_filler = length - len(self.instruction) - len(needle) - len(self.question)
        if n_filler < 0:
            raise ValueError(f"passkey context length {length} is shorter than its fixed text ({self.min_length()})")
        unit = len(self.filler_unit)
        filler = (self.filler_unit * (n_filler // unit + 1))[:n_filler]
        boundaries = [r * unit + s for r in range(n_filler // unit + 1) for s in self.sentence_starts]
        boundaries = [b for b in boundaries if b <= n_filler] + [n_filler]
        at = min(boundaries, key=lambda b: (abs(b - depth * n_filler), b))
        prompt = self.instruction + filler[:at] + needle + filler[at:] + self.question
        start = len(self.instruction) + at
        answer = self.tok.encode(ANSWER.format(key=key))
        return PasskeySample(prompt, answer, key, length, depth, (start, start + len(needle)))


def covers(spans: list[tuple[int, int]], needle: tuple[int, int]) -> bool:
    """Whether merged spans contain every token of the needle."""
    return any(s <= needle[0] and needle[1] <= e for s, e in spans)


def random_key(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(KEY_DIGITS))


def score(generated_text: str, key: str) -> dict[str, float]:
    """Exact match of the first digit run in the generation; digit accuracy position by position."""
    text = generated_text.strip()
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    guess = digits[:KEY_DIGITS].ljust(KEY_DIGITS, "_")
    return {
        "exact_match": float(digits == key),
        "digit_accuracy": sum(a == b for a, b in zip(guess, key, strict=True)) / KEY_DIGITS,
    }


@dataclasses.dataclass
class PasskeyOptions(TaskOptions):
    depths: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    max_new_tokens: int = 8

    def validate(self) -> None:
        if not self.depths:
            raise ConfigError("task.depths is empty")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(f"task.depths must lie in [0, 1], got {list(self.depths)}")
        if self.max_new_tokens < KEY_DIGITS:
            raise ConfigError(f"task.max_new_tokens must be >= {KEY_DIGITS}, got {self.max_new_tokens}")


@register
class PasskeyTask(Task):
    name = "passkey"
    Options = PasskeyOptions

    def __init__(self, options: PasskeyOptions, tokenizer: Tokenizer, data: TaskData | None = None) -> None:
        super().__init__(options, tokenizer, data)
        self.builder = PasskeyBuilder(tokenizer)

    @classmethod
    def tokenizer_texts(cls) -> list[str]:
        rng = random.Random("passkey-tokenizer-text")
        needles = [NEEDLE.format(key=random_key(rng)) for _ in range(50)]
        return [INSTRUCTION, FILLER * 3, QUESTION, *needles] * 20

    def min_length(self) -> int:
        return self.builder.min_length()

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """<bos> + prompt + answer + <eos>, exactly `length` + 1 tokens, the needle at a random depth; every token
        is a target."""
        answer_len = len(self.tokenizer.encode(ANSWER.format(key="0" * KEY_DIGITS)))
        sample = self.builder.build(length - 1 - answer_len, rng.random(), random_key(rng))
        tokens = [self.tokenizer.bos_id, *sample.prompt, *sample.answer, self.tokenizer.eos_id]
        return tokens, [1.0] * (len(tokens) - 1)

    def samples(self, length: int, depth: float, n: int, seed: int) -> list[PasskeySample]:
        """The `n` evaluation samples of one cell (what `evaluate` scores and `bench.export_lm_eval` writes)."""
        rng = eval_rng(seed, self.name, length, depth)
        return [self.builder.build(length, depth, random_key(rng)) for _ in range(n)]

    def evaluate(self, lm, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        tok, results = self.tokenizer, []
        for length in lengths:
            state_bytes = lm.state_bytes_after(length)
            for depth in self.options.depths:
                samples = self.samples(length, depth, n, seed)
                started = time.perf_counter()
                outputs = lm.generate_batch([s.prompt for s in samples], self.options.max_new_tokens)
                elapsed = time.perf_counter() - started
                scores = [score(tok.decode(o), s.key) for o, s in zip(outputs, samples, strict=True)]
                data_hash = content_hash([s.prompt + s.answer for s in samples])
                values = {metric: sum(s[metric] for s in scores) / n for metric in ("exact_match", "digit_accuracy")}
                retrieved = getattr(lm, "last_retrieved", None)  # retrieval-based LMs say what the reader saw
                if retrieved is not None:
                    values["retrieval_recall"] = sum(
                        covers(spans, s.needle_span) for spans, s in zip(retrieved, samples, strict=True)) / n
                outcomes = []
                for i, (o, s, sc) in enumerate(zip(outputs, samples, scores, strict=True)):
                    per_sample = dict(sc)
                    if retrieved is not None:
                        per_sample["retrieval_recall"] = float(covers(retrieved[i], s.needle_span))
                    outcomes.append(SampleOutcome(i, per_sample, tok.decode(o), s.key,
                                                  {"needle": list(s.needle_span)}))
                for metric, value in values.items():
                    results.append(
                        CellResult(
                            context_length=length, depth=depth, metric=metric, value=value, n=n,
                            state_bytes=state_bytes, data_hash=data_hash,
                            tokens_per_s=n * (length + self.options.max_new_tokens) / elapsed,
                            samples=outcomes if metric == "exact_match" else [],
                        )
                    )
        return results
