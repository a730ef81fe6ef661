"""RAG: chunking, causality of in-context RALM, both retrievers on a toy haystack, the full-context limit, and
clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mechanisms
from bench.core.errors import ConfigError
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer
from mechanisms.rag import BM25Retriever, DenseRetriever, RetrievalLM, TokenBM25Retriever, chunk_spans, merge_spans


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 300), chunk=st.integers(1, 40), data=st.data())
def test_chunks_cover_every_token_and_their_cores_partition_the_sequence(n, chunk, data):
    overlap = data.draw(st.integers(0, chunk - 1))
    spans = chunk_spans(n, chunk, overlap)
    assert all(0 <= s < e <= n and e - s <= chunk for s, e in spans)
    assert merge_spans(spans) == ([(0, n)] if n else [])
    if n == 0:
        assert spans == []
        return
    starts = [s for s, _ in spans]
    cores = [t for (s, e), nxt in zip(spans, [*starts[1:], n], strict=True) if nxt <= e for t in range(s, nxt)]
    assert cores == list(range(n))  # each chunk reaches the next one's start: every token in exactly one core


def test_merge_spans_unions_overlapping_and_touching_spans():
    assert merge_spans([(10, 20), (0, 5), (5, 8), (15, 30), (40, 41)]) == [(0, 8), (10, 30), (40, 41)]


HAYSTACK = ["The grass is green. The sky is blue.", "The sun is yellow. Here we go.",
            "The pass key is 73915. Remember it. 73915 is the pass key.", "There and back again. The sky is blue."]


@pytest.mark.parametrize("retriever", [BM25Retriever, DenseRetriever])
def test_both_retrievers_rank_the_needle_chunk_first(retriever):
    assert retriever().rank(HAYSTACK, "What is the pass key? The pass key is", 2)[0] == 2


def test_token_bm25_finds_the_chunk_holding_a_single_id_key():
    """MQAR-like chunks of (key, value) ids that decode to punctuation and control bytes: word BM25 sees no terms,
    token BM25 ranks the one chunk holding the key first, and with no match falls back to the latest chunks."""
    chunks = [[1, 65, 2, 66], [3, 67, 4, 68], [5, 69, 6, 70], [200, 201, 202, 203]]
    assert TokenBM25Retriever().rank(chunks, [4], 1) == [1]
    assert TokenBM25Retriever().rank(chunks, [6], 2)[0] == 2
    assert sorted(TokenBM25Retriever().rank(chunks, [99], 2)) == [2, 3]
    assert TokenBM25Retriever().rank(chunks, [4], 3) == [1, 3, 2]  # one match, then the latest unmatched chunks
    assert sorted(TokenBM25Retriever().rank(chunks, [4], 9)) == [0, 1, 2, 3]


def test_dense_encoder_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mechanisms.rag import _minilm

    vectors = _minilm().encode(["a cat", "a dog"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)


def tiny_reader(seed=0):
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    return StreamingLM(Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), "full", {}), tok, chunk_size=64)


def test_retrieving_every_chunk_equals_reading_the_full_context():
    reader = tiny_reader()
    rag = RetrievalLM(reader, top_k=100, chunk_tokens=16, overlap=4, query_tokens=8, reader_window=4096)
    context = reader.tokenizer.encode(" ".join(HAYSTACK) + " What is the pass key?")
    assert rag.generate(context, 6) == reader.generate(context, 6)
    cont = reader.tokenizer.encode(" 73915")
    assert rag.loglikelihood(context, cont) == pytest.approx(reader.loglikelihood(context, cont), abs=1e-5)
    assert rag.last_retrieved == [[(0, len(context))]]


def test_top_k_retrieval_feeds_the_reader_the_best_chunks_in_document_order():
    reader = tiny_reader()
    rag = RetrievalLM(reader, top_k=1, chunk_tokens=60, overlap=0, query_tokens=22, keep_prefix=0)
    context = reader.tokenizer.encode("".join(f"{s:60s}" for s in HAYSTACK) + " What is the pass key?")
    tokens, seen = rag._reader_input(context)
    assert seen == [(120, 180), (240, len(context))]
    assert tokens == context[120:180] + context[240:]
    with_prefix = RetrievalLM(reader, top_k=1, chunk_tokens=60, overlap=0, query_tokens=22, keep_prefix=10)
    tokens, seen = with_prefix._reader_input(context)  # the prefix is given, and chunks are cut after it
    assert seen == [(0, 10), (130, 190), (240, len(context))]
    assert tokens == [t for s, e in seen for t in context[s:e]]


def test_perplexity_retrieval_is_causal():
    reader = tiny_reader()
    rag = RetrievalLM(reader, top_k=2, chunk_tokens=8, overlap=2, query_tokens=6, stride=10, reader_window=64)
    tokens = reader.tokenizer.encode(" ".join(HAYSTACK) * 2)
    searched, retrieve = [], rag._retrieve

    def spy(document, query):
        searched.append(len(document))
        return retrieve(document, query)

    rag._retrieve = spy
    nll = rag.rolling_nll(tokens)
    assert nll.shape == (len(tokens),) and torch.isfinite(nll).all()
    for window, length in enumerate(searched, start=1):  # the first window has nothing before it to search
        assert length <= window * 10 - 6  # only what ends before the query, which ends where the window starts
    assert all(e <= window * 10 - 6 for window, spans in enumerate(rag.last_retrieved) for _, e in spans)
    changed = list(tokens)
    changed[70:] = [(t + 1) % 256 for t in changed[70:]]
    torch.testing.assert_close(rag.rolling_nll(changed)[:70], nll[:70])


@pytest.mark.parametrize("opts,key", [
    ({"top_k": 0}, "mechanism.top_k"),
    ({"retriever": "tfidf"}, "mechanism.retriever"),
    ({"chunk_tokens": 300}, "mechanism.reader_window"),
    ({"overlap": 32}, "mechanism.overlap"),
])
def test_bad_options_fail_with_the_key_named(opts, key):
    with pytest.raises(ConfigError, match=key):
        mechanisms.options("rag", **opts)


def test_rag_has_no_per_layer_form():
    with pytest.raises(ConfigError, match="wraps a whole model"):
        mechanisms.build("rag", 32, 2)
