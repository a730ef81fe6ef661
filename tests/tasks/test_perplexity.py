"""Long-document perplexity: bucket tables and overall numbers on a fixed fixture, buckets that weight back to
the overall perplexity, memory carried across a document unless stateless windows are asked for, and training
windows from the train split."""

import math
import random

import pytest
import torch

from bench.core.errors import ConfigError
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer
from tasks.data.corpus import tokenized_documents
from tasks.perplexity import DocumentScore, PerplexityOptions, PerplexityTask, bucket_table, overall


@pytest.fixture(scope="module")
def lm() -> StreamingLM:
    torch.manual_seed(0)
    tok = ByteTokenizer()
    return StreamingLM(Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), "sliding_window", {"window": 16}),
                       tok, chunk_size=40)


def test_bucket_table_and_overall_on_a_fixed_fixture():
    scores = [DocumentScore(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), 10), DocumentScore(torch.tensor([2.0, 2.0]), 4)]
    assert bucket_table(scores, [2, 4, 8]) == [(2, 7.0, 4), (4, 7.0, 2), (8, 5.0, 1)]
    whole = overall(scores)
    assert whole["nll"] == pytest.approx(19 / 7)
    assert whole["ppl"] == pytest.approx(math.exp(19 / 7))
    assert whole["bits_per_byte"] == pytest.approx(19 / (math.log(2) * 14))


def test_bucketed_perplexity_weights_back_to_the_overall_perplexity(lm, task_data):
    task = PerplexityTask(PerplexityOptions(name="perplexity", buckets=[8, 32, 100, 300]), lm.tokenizer, task_data)
    results = task.evaluate(lm, [], n=3, seed=0)
    buckets = [r for r in results if r.subtask is None]
    whole = {r.metric: r for r in results if r.subtask == "overall"}
    assert [r.context_length for r in buckets] == [8, 32, 100, 300]
    assert sum(r.n for r in buckets) == whole["ppl"].n
    pooled = math.exp(sum(r.n * math.log(r.value) for r in buckets) / sum(r.n for r in buckets))
    assert pooled == pytest.approx(whole["ppl"].value, rel=1e-9)
    assert whole["nll"].value == pytest.approx(math.log(whole["ppl"].value), rel=1e-9)


def test_perplexity_carries_memory_unless_asked_for_stateless_windows(lm, task_data):
    docs = [d["tokens"][:120] for d in task_tokens(lm, task_data)]
    carried = PerplexityTask(PerplexityOptions(name="perplexity"), lm.tokenizer, task_data)
    torch.testing.assert_close(carried.score_document(lm, docs[0]), lm.rolling_nll(docs[0]))
    stateless = PerplexityTask(PerplexityOptions(name="perplexity", stateless_window=50), lm.tokenizer, task_data)
    nll = stateless.score_document(lm, docs[0])
    torch.testing.assert_close(nll[50:100], lm.rolling_nll(docs[0][50:100]))  # the window starts afresh
    assert not torch.allclose(nll[50:60], carried.score_document(lm, docs[0])[50:60])
    results = stateless.evaluate(lm, [], n=2, seed=0)
    assert {r.subtask for r in results} == {"stateless_window=50", "overall, stateless_window=50"}


def task_tokens(lm, task_data):
    return tokenized_documents(task_data.corpus, "test", lm.tokenizer, task_data.cache_dir)


def test_perplexity_training_windows_come_from_the_train_split(lm, task_data):
    task = PerplexityTask(PerplexityOptions(name="perplexity"), lm.tokenizer, task_data)
    tokens, weights = task.training_sample(random.Random(0), 64)
    assert len(tokens) == 65 and len(weights) == 64 and tokens[0] == lm.tokenizer.bos_id
    train_text = "\n\n".join(d.text for d in task_data.corpus.split("train"))
    assert lm.tokenizer.decode(tokens[1:]) in train_text + "\n\n" + train_text


def test_options_validation_names_the_key():
    with pytest.raises(ConfigError, match="task.buckets"):
        PerplexityOptions(name="perplexity", buckets=[256, 64]).validate()


def test_per_document_outcomes_weight_back_to_the_pooled_records_exactly(lm, task_data):
    """The sidecar's per-document sums are what the report bootstraps over; pooled again they must give the
    records' values exactly, per bucket and over whole documents."""
    task = PerplexityTask(PerplexityOptions(name="perplexity", buckets=[8, 32, 100, 300]), lm.tokenizer, task_data)
    results = task.evaluate(lm, [], n=3, seed=0)
    for r in results:
        if r.metric == "ppl":
            docs = r.samples
            assert len(docs) == 3 and [d.sample for d in docs] == [0, 1, 2]
            assert sum(d.metrics["tokens"] for d in docs) == r.n
            assert math.exp(sum(d.metrics["nll"] for d in docs) / sum(d.metrics["tokens"] for d in docs)) == r.value
    whole = {r.metric: r for r in results if r.subtask == "overall"}
    docs = whole["ppl"].samples
    nll, tokens, n_bytes = (sum(d.metrics[k] for d in docs) for k in ("nll", "tokens", "bytes"))
    assert nll / tokens == whole["nll"].value
    assert nll / (math.log(2) * n_bytes) == whole["bits_per_byte"].value
