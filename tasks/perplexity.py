"""Long-document perplexity (the Infini-attention paper's headline metric, there on PG19): each test document of
the corpus is streamed once through `rolling_nll`, memory carried from segment to segment, and the per-token NLL is
reported per position bucket — a token at position p (0-based, predicted from the p tokens before it) falls in
the bucket [start, end) holding p; the record's `context_length` is the bucket's end. Buckets beyond the training
length show whether a mechanism keeps working where it was never trained.

`stateless_window=W` scores independent W-token windows instead, each starting from an empty memory — what
lm-eval's rolling loglikelihood does with a Hugging Face model — as the contrast that shows what carrying the
memory is worth. Records: `ppl` per bucket; `ppl`, `nll` (nats/token) and `bits_per_byte` over whole documents
(subtask `overall`). Bits per byte divide the summed NLL by the UTF-8 bytes of the scored text, which makes
tokenizers comparable.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time

import torch

from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from tasks.base import CellResult, SampleOutcome, Task, TaskOptions
from tasks.data.corpus import token_stream, tokenized_documents
from tasks.registry import register


@dataclasses.dataclass
class PerplexityOptions(TaskOptions):
    buckets: list[int] = dataclasses.field(default_factory=lambda: [64, 256, 512, 1024, 2048])  # bucket ends
    split: str = "test"  # the corpus split scored (train is what the training mixture reads)
    stateless_window: int | None = None  # score independent windows of this many tokens (no carried memory)

    def validate(self) -> None:
        if not self.buckets:
            raise ConfigError("task.buckets is empty")
        if any(b <= 0 for b in self.buckets) or list(self.buckets) != sorted(set(self.buckets)):
            raise ConfigError(f"task.buckets must be increasing positive token positions, got {list(self.buckets)}")
        if self.split not in ("validation", "test"):
            raise ConfigError(f"task.split must be validation or test (train is the training data), got {self.split!r}")
        if self.stateless_window is not None and self.stateless_window <= 0:
            raise ConfigError(f"task.stateless_window must be > 0, got {self.stateless_window}")


@dataclasses.dataclass
class DocumentScore:
    nll: torch.Tensor  # (T,) per-token NLL in nats
    n_bytes: int  # UTF-8 bytes of the scored text


def bucket_table(scores: list[DocumentScore], ends: list[int]) -> list[tuple[int, float, int]]:
    """(bucket end, summed NLL, tokens) per bucket that holds any token."""
    rows, start = [], 0
    for end in ends:
        parts = [s.nll[start:end] for s in scores if len(s.nll) > start]
        count = sum(len(p) for p in parts)
        if count:
            rows.append((end, float(sum(p.double().sum() for p in parts)), count))
        start = end
    return rows


def document_outcomes(scores: list[DocumentScore], ends: list[int]) -> dict[int, list[SampleOutcome]]:
    """Per bucket end, one outcome per document holding tokens there: its summed NLL and token count, so that
    exp(sum nll / sum tokens) over the documents is the bucket's pooled perplexity (the record's value)."""
    out, start = {}, 0
    for end in ends:
        rows = [SampleOutcome(i, {"nll": float(s.nll[start:end].double().sum()), "tokens": len(s.nll[start:end])})
                for i, s in enumerate(scores) if len(s.nll) > start]
        if rows:
            out[end] = rows
        start = end
    return out


def overall(scores: list[DocumentScore]) -> dict[str, float]:
    total = sum(float(s.nll.double().sum()) for s in scores)
    tokens = sum(len(s.nll) for s in scores)
    n_bytes = sum(s.n_bytes for s in scores)
    return {"ppl": math.exp(total / tokens), "nll": total / tokens, "bits_per_byte": total / (math.log(2) * n_bytes)}


@register
class PerplexityTask(Task):
    """Also the training mixture's language-modelling stream: random windows of the corpus's train split."""

    name = "perplexity"
    Options = PerplexityOptions

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """<bos> + `length` tokens of running text from a random offset; every next token is a target."""
        tokens, _ = token_stream(self.data.corpus, "train", self.tokenizer, self.data.cache_dir).passage(rng, length)
        return [self.tokenizer.bos_id, *tokens], [1.0] * length

    def score_document(self, lm, tokens: list[int]) -> torch.Tensor:
        window = self.options.stateless_window
        if window is None:
            return lm.rolling_nll(tokens)
        return torch.cat([lm.rolling_nll(tokens[i : i + window]) for i in range(0, len(tokens), window)])

    def documents(self, n: int) -> list[list[int]]:
        """The token ids scored: the split's first `n` documents (title order), each cut to the last bucket end."""
        docs = tokenized_documents(self.data.corpus, self.options.split, self.tokenizer, self.data.cache_dir)[:n]
        if not docs:
            raise ConfigError(f"the corpus has no {self.options.split} documents to score")
        return [d["tokens"][: self.options.buckets[-1]] for d in docs]

    def evaluate(self, lm, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        """The first `n` documents of the split (title order), each cut to the last bucket's end. `lengths` (the
        sweep's context lengths) do not apply: the buckets are this task's length grid."""
        o, tok = self.options, self.tokenizer
        texts = self.documents(n)
        started = time.perf_counter()
        scores = [DocumentScore(self.score_document(lm, t), len(tok.decode(t).encode("utf-8"))) for t in texts]
        elapsed = time.perf_counter() - started
        data_hash = content_hash([self.data.corpus.hash, o.split, texts])
        tokens_per_s = sum(len(t) for t in texts) / elapsed
        subtask = None if o.stateless_window is None else f"stateless_window={o.stateless_window}"
        per_document = document_outcomes(scores, list(o.buckets))
        results = [
            CellResult(context_length=end, metric="ppl", value=math.exp(total / count), n=count, subtask=subtask,
                       state_bytes=lm.state_bytes_after(end), tokens_per_s=tokens_per_s, data_hash=data_hash,
                       samples=per_document[end])
            for end, total, count in bucket_table(scores, list(o.buckets))
        ]
        longest = max(len(t) for t in texts)
        n_tokens = sum(len(t) for t in texts)
        label = "overall" if subtask is None else f"overall, {subtask}"
        documents = [SampleOutcome(i, {"nll": float(s.nll.double().sum()), "tokens": len(s.nll), "bytes": s.n_bytes})
                     for i, s in enumerate(scores)]
        for metric, value in overall(scores).items():
            results.append(CellResult(context_length=longest, metric=metric, value=value, n=n_tokens, subtask=label,
                                      state_bytes=lm.state_bytes_after(longest), tokens_per_s=tokens_per_s,
                                      data_hash=data_hash, samples=documents if metric == "ppl" else []))
        return results
