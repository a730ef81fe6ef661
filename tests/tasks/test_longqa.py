"""Corpora (cpython / local / hf), long-document perplexity and long-QA: scorers on fixed fixtures, deterministic
generators, fact positions that match the text, cached generated data, and bad input."""

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.lm import StreamingLM
from bench.model import Backbone, BackboneSpec
from bench.tokenizer import ByteTokenizer
from mechanisms.base import ConfigError
from tasks import cache as task_cache
from tasks.base import TaskData
from tasks.corpus import Corpus, Document, LocalCorpusOptions, TokenStream, load_corpus
from tasks.longqa import FAMILIES, GENERATORS, LongQATask, QAOptions, exact_match, interleave, normalise
from tasks.perplexity import DocumentScore, PerplexityOptions, PerplexityTask, bucket_table, overall

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lm() -> StreamingLM:
    torch.manual_seed(0)
    tok = ByteTokenizer()
    return StreamingLM(Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), "sliding_window", {"window": 16}),
                       tok, chunk_size=40)


# -- corpora --------------------------------------------------------------------------------------------------
def test_default_corpus_builds_on_a_bare_python_without_network():
    """No site-packages (so no torch, datasets or hub client) and every socket refused."""
    script = ("import socket, runpy\n"
              "def refuse(*a, **k): raise OSError('network used')\n"
              "socket.socket = refuse; socket.create_connection = refuse\n"
              f"runpy.run_path({str(ROOT / 'tasks' / 'cpython_text.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-S", "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n_docs = int(done.stdout.split()[0])
    assert n_docs > 50


def test_default_corpus_is_split_by_document_deterministically(task_data):
    corpus = task_data.corpus
    splits = {name: corpus.split(name) for name in ("train", "validation", "test")}
    titles = [d.title for docs in splits.values() for d in docs]
    assert len(titles) == len(set(titles)) == len(corpus.documents)
    assert all(splits.values())
    shuffled = list(corpus.documents)
    random.Random(0).shuffle(shuffled)
    again = Corpus(shuffled, corpus.options)
    assert again.hash == corpus.hash
    assert [d.title for d in again.split("test")] == [d.title for d in splits["test"]]


def test_local_corpus_reads_text_files_and_jsonl_lines(tmp_path):
    (tmp_path / "a.txt").write_text("First document.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Second\n\ndocument.")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "third"}) + "\n\n" + json.dumps({"text": "fourth"}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    corpus = load_corpus({"source": "local", "path": str(tmp_path)}, tmp_path / "cache")
    assert sorted(d.title for d in corpus.documents) == ["a.txt", "c.jsonl:1", "c.jsonl:3", "sub/b.md"]
    assert {d.text for d in corpus.documents} == {"First document.", "# Second\n\ndocument.", "third", "fourth"}


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: p, "holds no"),
    (lambda p: (p / "e.txt").write_text("  \n") and p, "every document is empty"),
    (lambda p: (p / "x.jsonl").write_text('{"body": "x"}\n') and p, "has no field 'text'"),
])
def test_bad_local_corpus_is_one_clear_error(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_corpus({"source": "local", "path": str(folder)}, tmp_path / "cache")


def test_hf_corpus_reads_a_local_dataset_file_and_names_a_missing_field(tmp_path):
    rows = [{"body": f"Book {i}. " + "words " * 50, "name": f"book{i}"} for i in range(10)]
    (tmp_path / "books.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"source": "hf", "path": "json", "data_files": [str(tmp_path / "books.jsonl")], "text_field": "body",
            "title_field": "name", "max_documents": 8}
    corpus = load_corpus(spec, tmp_path / "cache")
    assert sorted(d.title for d in corpus.documents) == [f"book{i}" for i in range(8)]
    with pytest.raises(ConfigError, match="no such field.*fields: body, name"):
        load_corpus({**spec, "text_field": "text"}, tmp_path / "cache")


def test_token_stream_passages_have_exact_length_and_true_sentence_boundaries():
    tok = ByteTokenizer()
    stream = TokenStream([tok.encode("One. Two three. Four"), tok.encode("Five.\nSix")], tok)
    rng = random.Random(1)
    for n in (1, 7, 30, 100):  # 100 is longer than the whole stream: it repeats
        tokens, bounds = stream.passage(rng, n)
        assert len(tokens) == n and bounds[0] == 0 and bounds[-1] == n
        for b in bounds[1:-1]:
            assert tok.decode(tokens[b - 1 : b]) in (".", "\n")


# -- perplexity -----------------------------------------------------------------------------------------------
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
    from tasks.corpus import tokenized_documents

    return tokenized_documents(task_data.corpus, "test", lm.tokenizer, task_data.cache_dir)


def test_perplexity_training_windows_come_from_the_train_split(lm, task_data):
    task = PerplexityTask(PerplexityOptions(name="perplexity"), lm.tokenizer, task_data)
    tokens, weights = task.training_sample(random.Random(0), 64)
    assert len(tokens) == 65 and len(weights) == 64 and tokens[0] == lm.tokenizer.bos_id
    train_text = "\n\n".join(d.text for d in task_data.corpus.split("train"))
    assert lm.tokenizer.decode(tokens[1:]) in train_text + "\n\n" + train_text


# -- long-QA --------------------------------------------------------------------------------------------------
def test_answer_normalisation_and_exact_match_on_fixed_fixtures():
    assert normalise("The Kitchen.") == ["kitchen"]
    assert exact_match(" kitchen. Mary went", ["kitchen"]) == 1.0
    assert exact_match(" the kitchen", ["kitchen"]) == 1.0
    assert exact_match(" garden", ["kitchen"]) == 0.0
    assert exact_match(" 12345.", ["12345"]) == 1.0
    assert exact_match(" 1234", ["12345"]) == 0.0
    assert exact_match("", ["kitchen"]) == 0.0
    assert exact_match(" New York City is big", ["new york city", "NYC"]) == 1.0
    assert exact_match(" New\nYork", ["new york"]) == 0.0  # only the first line counts


def test_interleaving_keeps_each_chain_in_order():
    rng = random.Random(3)
    for _ in range(50):
        order = interleave(rng, [["a", "b", "c"], ["x"], ["p", "q"]])
        assert sorted(order) == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
        for chain in (0, 2):
            steps = [i for c, i in order if c == chain]
            assert steps == sorted(steps)


@pytest.mark.parametrize("family", FAMILIES)
def test_generated_samples_are_exact_length_deterministic_and_their_facts_are_where_stored(family, task_data, tmp_path):
    tok = ByteTokenizer()
    task = LongQATask(QAOptions(name="longqa"), tok, task_data)
    samples = task.samples(family, 400, 6, seed=0)
    fresh = LongQATask(QAOptions(name="longqa"), tok, TaskData(task_data.corpus, tmp_path))  # no shared cache
    assert fresh.samples(family, 400, 6, seed=0) == samples
    assert fresh.samples(family, 400, 6, seed=1) != samples
    for s in samples:
        assert len(s["prompt"]) == 400
        facts = [tok.decode(s["prompt"][a:b]) for a, b in s["fact_spans"]]
        assert len(facts) == {"two_facts": 2, "three_facts": 3, "variable_tracking": 3}.get(family, 1)
        assert all(f.startswith(" ") and f.endswith(".") for f in facts)
        assert [a for a, _ in s["fact_spans"]] == sorted(a for a, _ in s["fact_spans"])
        question = tok.decode(s["prompt"]).rsplit("\n", 1)[1]
        answer = s["answers"][0]
        assert tok.decode(s["answer"]) == " " + answer
        if family in ("single_fact", "multikey"):  # the cue repeats the fact up to its answer
            assert facts[0].rstrip(".") == question.split("?", 1)[1] + " " + answer
        if family == "two_facts":
            assert facts[0].split()[-1].rstrip(".") in question and facts[1].rstrip(".").endswith(answer)
        if family == "three_facts":
            assert facts[1].rstrip(".").endswith(answer) and facts[2].split()[-1].rstrip(".") in question
        if family == "variable_tracking":
            assert facts[0].rstrip(".").endswith(answer) and facts[-1].split()[1] in question


def test_generated_data_is_read_back_from_the_cache(task_data, tmp_path, monkeypatch):
    task = LongQATask(QAOptions(name="longqa"), ByteTokenizer(), TaskData(task_data.corpus, tmp_path))
    first = task.samples("multikey", 300, 4, seed=0)
    assert list((tmp_path / "datasets").glob("longqa-multikey-*"))

    def no_rebuild():
        raise AssertionError("the cached dataset was rebuilt")

    real = task_cache.cached_rows
    monkeypatch.setattr("tasks.longqa.cached_rows", lambda kind, key, build, cache_dir: real(
        kind, key, no_rebuild, cache_dir))
    assert task.samples("multikey", 300, 4, seed=0) == first


def test_longqa_training_samples_have_exact_length(task_data):
    task = LongQATask(QAOptions(name="longqa"), ByteTokenizer(), task_data)
    rng = random.Random(0)
    for length in (task.min_length() + 8, 1000):
        tokens, weights = task.training_sample(rng, length)
        assert len(tokens) == length + 1 and len(weights) == length
    # targets: the facts, the question and the answer, never the filler (the perplexity stream teaches text)
    targeted = "".join(task.tokenizer.decode(tokens[i + 1 : i + 2]) if w else "|" for i, w in enumerate(weights))
    pieces = [p for p in targeted.split("|") if p]
    last_facts, _, questions = pieces[-1].partition("\n")  # a fact may sit right before the question
    assert "? " in questions
    assert all(p.startswith(" ") and p.endswith(".") for p in [*pieces[:-1], last_facts] if p)
    assert sum(weights) < length / 2


@pytest.mark.parametrize("family", FAMILIES)
def test_longqa_training_asks_every_other_question_the_story_answers(family, task_data):
    """After the asked question come the distractors' own questions, each answered by the facts of the context."""
    task = LongQATask(QAOptions(name="longqa", families=[family]), ByteTokenizer(), task_data)
    tokens, _ = task.training_sample(random.Random(5), 800)
    text = task.tokenizer.decode(tokens[1:-1])
    n_also = len(GENERATORS[family](random.Random(0), 2, 2).also)
    lines = text.split("\n")
    context, asked = "\n".join(lines[: -1 - n_also]), lines[-1 - n_also :]
    assert n_also >= 1 and all("? " in line for line in asked) and "? " not in lines[-2 - n_also]
    for line in asked[1:]:
        cue, value = line.split("? ", 1)[1].rsplit(" ", 1)
        if family == "variable_tracking":  # follow the assignments back from the asked variable
            name = cue.split()[-2]
            while not (match := re.search(rf" VAR {name} = (\w+)\.", context)).group(1).isdigit():
                name = match.group(1)
            assert match.group(1) == value
        else:  # the cue repeats the fact's own words
            assert f"{cue} {value}." in context


def test_longqa_evaluates_every_family_with_retrieval_recall_for_rag(task_data):
    from mechanisms.rag import RetrievalLM

    tok = ByteTokenizer()
    torch.manual_seed(0)
    reader = StreamingLM(Backbone(BackboneSpec(tok.vocab_size, 32, 2, 2, 64), "full", {}), tok, chunk_size=128)
    rag = RetrievalLM(reader, chunk_tokens=48, overlap=8, top_k=8, query_tokens=64, keep_prefix=0, stride=64,
                      reader_window=512)
    task = LongQATask(QAOptions(name="longqa", max_new_tokens=2), tok, task_data)
    results = task.evaluate(rag, [320], n=2, seed=0)
    assert {(r.subtask, r.metric) for r in results} == {
        (f, m) for f in FAMILIES for m in ("exact_match", "retrieval_recall")}
    assert all(r.context_length == 320 and r.n == 2 for r in results)


def test_real_longqa_data_through_datasets_with_a_local_stand_in(task_data, tmp_path):
    rows = [{"context": "Filler. " * 80 + "The treasure is in the attic. " + "More filler. " * 80,
             "input": "Where is the treasure?", "answers": ["attic", "the attic"]} for _ in range(3)]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    options = QAOptions(name="longqa", families=["dataset"], dataset_path="json", dataset_files=[str(path)],
                        dataset_split="train")
    options.validate()
    tok = ByteTokenizer()
    task = LongQATask(options, tok, task_data)
    samples = task.samples("dataset", 300, 2, seed=0)
    assert len(samples) == 2 and all(len(s["prompt"]) == 300 for s in samples)
    text = tok.decode(samples[0]["prompt"])
    assert text.startswith("Filler.") and text.endswith("\nWhere is the treasure? Answer:")
    with pytest.raises(ConfigError, match="shorter than a question"):
        task.samples("dataset", 10, 2, seed=0)
    bad_options = QAOptions(name="longqa", families=["dataset"], dataset_path="json", dataset_files=[str(path)],
                            dataset_split="train", question_field="question")
    bad = LongQATask(bad_options, tok, task_data)
    with pytest.raises(ConfigError, match="question_field='question'.*fields: context, input, answers"):
        bad.samples("dataset", 300, 2, seed=0)


def test_longqa_refuses_a_length_shorter_than_its_facts_and_question(task_data):
    task = LongQATask(QAOptions(name="longqa"), ByteTokenizer(), task_data)
    story = GENERATORS["variable_tracking"](random.Random(0), 2, 2)
    with pytest.raises(ConfigError, match="shorter than the facts and question"):
        task.build(story, 30, random.Random(0), TokenStream([[1, 2, 3]], ByteTokenizer()))


def test_options_validation_names_the_key():
    with pytest.raises(ConfigError, match="task.families"):
        QAOptions(name="longqa", families=["nope"]).validate()
    with pytest.raises(ConfigError, match="dataset_path"):
        QAOptions(name="longqa", families=["dataset"]).validate()
    with pytest.raises(ConfigError, match="task.buckets"):
        PerplexityOptions(name="perplexity", buckets=[256, 64]).validate()
    with pytest.raises(ConfigError, match="corpus.path"):
        LocalCorpusOptions(path="").validate()
    assert Document("t", "x").title == "t"
