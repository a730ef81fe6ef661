"""Long-QA: scorers on fixed fixtures, deterministic generators whose fact positions match the text, generated
data read back from the cache, training rows that ask every question the story answers, retrieval recall for RAG,
real QA data through `datasets`, and bad input."""

import json
import random
import re

import pytest
import torch

from bench.core.errors import ConfigError
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer
from mechanisms.rag import RetrievalLM
from tasks.base import TaskData
from tasks.data import cache as task_cache
from tasks.data.corpus import TokenStream
from tasks.longqa import FAMILIES, GENERATORS, LongQATask, QAOptions, exact_match, interleave, normalise


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
