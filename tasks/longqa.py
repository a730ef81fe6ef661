"""Long-context QA over facts hidden in real text (filler from the corpus: its train split for training samples,
its test split for evaluation), in five generated families plus optional real data:

- BABILong-style (Kuratov et al. 2024), people, objects and places:
  `single_fact`  "Mary went to the kitchen." ... "Where is Mary?" -> kitchen (other people's moves distract);
  `two_facts`    "Mary picked up the apple." ... "Mary went to the garden." ... "Where is the apple?" -> garden;
  `three_facts`  picked up, went to A, went to B ... "Where was the apple before the B?" -> A.
- RULER-style (Hsieh et al. 2024):
  `multikey`     several "The special magic number for <word> is <digits>." needles; asked for one;
  `variable_tracking`  "VAR ABCD = 12345." "VAR EFGH = ABCD." ... (a chain of `hops` assignments, plus one
                 distractor chain) "What is the value of VAR <last>?" -> 12345. (RULER asks for every variable
                 holding a value; asking for the value at the chain's end is the same multi-hop lookup with a
                 one-word answer.)
- `dataset`: LongBench-style rows {context, input, answers} through `datasets.load_dataset`, the context cut in
  the middle to fit each length (LongBench's convention).

Every question ends with a cue the answer completes, as the passkey prompt does ("... The pass key is") and as
RULER's templates do ("The special magic number for falcon is"): "Where is Mary? Mary went to the" -> kitchen;
"Where is the apple? The apple is in the"; "Before the garden, the apple was in the"; "The value of VAR C is".
For `single_fact` and `multikey` the cue repeats the fact's own words, so they test retrieval by content; the
other families need a hop the cue does not give. Real data (`dataset`) ends with " Answer:".

Facts keep their order within a story (an object is picked up before it is carried) and are otherwise
interleaved at random, each inserted at the sentence boundary of the filler nearest to a uniformly drawn
position; the token spans of the supporting facts are stored with every sample. A sample is built to exactly
the cell's token length. Scoring: greedy generation, normalised (lower case, punctuation and articles dropped),
exact match when its first words are the answer's words.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import string
import time
from typing import Any

from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from tasks.base import CellResult, SampleOutcome, Task, TaskOptions, eval_rng
from tasks.data.cache import cached_rows
from tasks.data.corpus import TokenStream, load_checked_dataset, token_stream
from tasks.passkey import covers
from tasks.registry import register

GENERATOR_VERSION = "longqa-v3"  # bump when generated samples change for the same seed
FAMILIES = ("single_fact", "two_facts", "three_facts", "multikey", "variable_tracking")
PEOPLE = ("Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Julie", "Emma")
PLACES = ("kitchen", "garden", "office", "bedroom", "bathroom", "hallway", "cellar", "library")
OBJECTS = ("apple", "football", "milk", "book", "key", "box", "ball", "cup")
WORDS = ("river", "candle", "mountain", "silver", "window", "forest", "engine", "harbor", "pepper", "violet",
         "tunnel", "marble", "falcon", "garden", "lantern", "meadow", "rocket", "saddle", "thunder", "velvet")
ANSWER_CUE = " Answer:"


@dataclasses.dataclass
class Story:
    """What a family generates before any filler: chains of facts (each kept in order), the question, the gold
    answer, and which facts support it (chain index, fact index)."""

    chains: list[list[str]]
    question: str
    answer: str
    gold: list[tuple[int, int]]
    cue: str = ANSWER_CUE  # what follows the question, the answer then completes it
    also: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # other (question, cue, answer)s


def _where_is(chains: list[list[str]]) -> list[tuple[str, str, str]]:
    """Single-fact questions about the distractor people of `chains[1:]` (one "went to" fact each)."""
    return [(f"Where is {c[0].split()[0]}?", f" {c[0].split()[0]} went to the", c[0].split()[-1].rstrip("."))
            for c in chains[1:]]


def _single_fact(rng: random.Random, distractors: int, hops: int) -> Story:
    people = rng.sample(PEOPLE, distractors + 1)
    chains = [[f" {p} went to the {rng.choice(PLACES)}."] for p in people]
    return Story(chains, f"Where is {people[0]}?", chains[0][0].split()[-1].rstrip("."), [(0, 0)],
                 f" {people[0]} went to the", _where_is(chains))


def _two_facts(rng: random.Random, distractors: int, hops: int) -> Story:
    person, *others = rng.sample(PEOPLE, distractors + 1)
    thing, place = rng.choice(OBJECTS), rng.choice(PLACES)
    chains = [[f" {person} picked up the {thing}.", f" {person} went to the {place}."]]
    chains += [[f" {p} went to the {rng.choice(PLACES)}."] for p in others]
    return Story(chains, f"Where is the {thing}?", place, [(0, 0), (0, 1)], f" The {thing} is in the",
                 _where_is(chains))


def _three_facts(rng: random.Random, distractors: int, hops: int) -> Story:
    person, *others = rng.sample(PEOPLE, distractors + 1)
    thing = rng.choice(OBJECTS)
    before, after = rng.sample(PLACES, 2)
    chains = [[f" {person} picked up the {thing}.", f" {person} went to the {before}.",
               f" {person} went to the {after}."]]
    chains += [[f" {p} went to the {rng.choice(PLACES)}."] for p in others]
    return Story(chains, f"Where was the {thing} before the {after}?", before, [(0, 0), (0, 1), (0, 2)],
                 f" Before the {after}, the {thing} was in the", _where_is(chains))


def _digits(rng: random.Random) -> str:
    return "".join(rng.choice(string.digits) for _ in range(5))


def _multikey(rng: random.Random, distractors: int, hops: int) -> Story:
    keys = rng.sample(WORDS, distractors + 1)
    values = [_digits(rng) for _ in keys]
    chains = [[f" The special magic number for {k} is {v}."] for k, v in zip(keys, values, strict=True)]
    return Story(chains, f"What is the special magic number for {keys[0]}?", values[0], [(0, 0)],
                 f" The special magic number for {keys[0]} is",
                 [(f"What is the special magic number for {k}?", f" The special magic number for {k} is", v)
                  for k, v in zip(keys[1:], values[1:], strict=True)])


def _variable_tracking(rng: random.Random, distractors: int, hops: int) -> Story:
    """The asked chain and one distractor chain of the same length (distractors beyond one are not used: two
    chains already cost 2 * (hops + 1) facts of the context)."""
    names: set[str] = set()
    while len(names) < 2 * (hops + 1):
        names.add("".join(rng.choice(string.ascii_uppercase) for _ in range(4)))
    pool = sorted(names)
    rng.shuffle(pool)
    chains, values = [], []
    for c in range(2):
        chain_names = pool[c * (hops + 1) : (c + 1) * (hops + 1)]
        values.append(_digits(rng))
        chains.append([f" VAR {chain_names[0]} = {values[-1]}."]
                      + [f" VAR {b} = {a}." for a, b in zip(chain_names, chain_names[1:], strict=False)])
    last, other = chains[0][-1].split()[1], chains[1][-1].split()[1]
    return Story(chains, f"What is the value of VAR {last}?", values[0], [(0, i) for i in range(hops + 1)],
                 f" The value of VAR {last} is",
                 [(f"What is the value of VAR {other}?", f" The value of VAR {other} is", values[1])])


GENERATORS = {"single_fact": _single_fact, "two_facts": _two_facts, "three_facts": _three_facts,
              "multikey": _multikey, "variable_tracking": _variable_tracking}


def ask(question: str, cue: str = ANSWER_CUE) -> str:
    """The question as it ends every prompt: on its own line, followed by the cue the answer completes."""
    return f"\n{question}{cue}"


def normalise(text: str) -> list[str]:
    """SQuAD-style: lower case, punctuation and articles dropped, split on whitespace."""
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def exact_match(generated: str, answers: list[str]) -> float:
    """1.0 when the generation's first words are one of the answers' words (after `normalise`)."""
    words = normalise(generated.split("\n", 1)[0] if generated.strip() else "")
    return float(any((gold := normalise(a)) and words[: len(gold)] == gold for a in answers))


def interleave(rng: random.Random, chains: list[list[str]]) -> list[tuple[int, int]]:
    """A random order of every (chain, fact) that keeps each chain's facts in order."""
    remaining = [list(range(len(c))) for c in chains]
    order = []
    while any(remaining):
        weights = [len(r) for r in remaining]
        c = rng.choices(range(len(chains)), weights)[0]
        order.append((c, remaining[c].pop(0)))
    return order


@dataclasses.dataclass
class QAOptions(TaskOptions):
    families: list[str] = dataclasses.field(default_factory=lambda: list(FAMILIES))
    distractors: int = 2  # other people / keys in each sample
    hops: int = 2  # variable_tracking: assignments after the first in the asked chain
    max_new_tokens: int = 8
    # optional real long-QA (family `dataset`): LongBench-style rows through datasets.load_dataset
    dataset_path: str | None = None  # e.g. json (with dataset_files) or THUDM/LongBench
    dataset_name: str | None = None  # e.g. narrativeqa
    dataset_files: list[str] = dataclasses.field(default_factory=list)
    dataset_split: str = "test"
    context_field: str = "context"
    question_field: str = "input"
    answers_field: str = "answers"

    def validate(self) -> None:
        known = (*FAMILIES, "dataset")
        unknown = [f for f in self.families if f not in known]
        if not self.families or unknown:
            raise ConfigError(f"task.families must name families from {', '.join(known)}; got {list(self.families)}")
        if "dataset" in self.families and not self.dataset_path:
            raise ConfigError("task.families includes 'dataset' but task.dataset_path is not set")
        if self.distractors < 0 or self.hops < 1:
            raise ConfigError(f"task.distractors must be >= 0 and task.hops >= 1, got {self.distractors}, {self.hops}")
        if self.distractors + 1 > len(PEOPLE):
            raise ConfigError(f"task.distractors must be <= {len(PEOPLE) - 1} (there are {len(PEOPLE)} people)")
        if self.max_new_tokens < 1:
            raise ConfigError(f"task.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@register
class LongQATask(Task):
    name = "longqa"
    Options = QAOptions

    @classmethod
    def tokenizer_texts(cls) -> list[str]:
        rng = random.Random("longqa-tokenizer-text")
        stories = [GENERATORS[f](rng, 2, 2) for f in FAMILIES for _ in range(10)]
        return [" ".join("".join(c) for c in s.chains) + ask(s.question, s.cue) + " " + s.answer
                for s in stories] * 10

    def _filler(self, split: str) -> TokenStream:
        return token_stream(self.data.corpus, split, self.tokenizer, self.data.cache_dir)

    def _generated(self) -> list[str]:
        return [f for f in self.options.families if f != "dataset"]

    @functools.cached_property
    def _story_tokens(self) -> int:
        """`min_length()` computed once: training asks it for every sample."""
        return self.min_length()

    def min_length(self) -> int:
        """The longest fixed text any generated family can need (facts + question), in tokens."""
        o, enc, longest = self.options, self.tokenizer.encode, 0
        rng = random.Random("longqa-min-length")
        for family in self._generated():
            for _ in range(20):
                s = GENERATORS[family](rng, o.distractors, o.hops)
                need = sum(len(enc(f)) for c in s.chains for f in c) + len(enc(ask(s.question, s.cue)))
                longest = max(longest, need)
        return longest + 4  # margin: the names drawn in a sample may tokenise longer than those tried here

    def build(self, story: Story, length: int, rng: random.Random, filler: TokenStream) -> dict[str, Any]:
        """The prompt of exactly `length` tokens, the answer tokens, and the supporting facts' token spans."""
        enc = self.tokenizer.encode
        order = interleave(rng, story.chains)
        facts = {key: enc(story.chains[key[0]][key[1]]) for key in order}
        question = enc(ask(story.question, story.cue))
        n_filler = length - sum(len(f) for f in facts.values()) - len(question)
        if n_filler < 0:
            raise ConfigError(f"longqa: context length {length} is shorter than the facts and question it must "
                              f"hold ({length - n_filler} tokens)")
        text, boundaries = filler.passage(rng, n_filler)
        targets = sorted(rng.randint(0, n_filler) for _ in order)
        cuts = [min(boundaries, key=lambda b, t=t: (abs(b - t), b)) for t in targets]
        cuts = [max(cuts[: i + 1]) for i in range(len(cuts))]  # snapping must not reorder the facts
        prompt, spans, every, at = [], [], [], 0
        for key, cut in zip(order, cuts, strict=True):
            prompt += text[at:cut]
            at = cut
            every.append([len(prompt), len(prompt) + len(facts[key])])
            if key in story.gold:
                spans.append([len(prompt), len(prompt) + len(facts[key])])
            prompt += facts[key]
        prompt += text[at:] + question
        return {"prompt": prompt, "answer": enc(" " + story.answer), "answers": [story.answer],
                "fact_spans": sorted(spans), "question": story.question, "all_fact_spans": every}

    def training_sample(self, rng: random.Random, length: int) -> tuple[list[int], list[float]]:
        """<bos> + prompt + answer + the story's other questions and answers + <eos> from the corpus's train split,
        exactly `length` + 1 tokens. Targets are the facts, the questions and the answers; the filler is not (the
        perplexity stream teaches running text). Measured: with every filler token a target, real text dominated
        the loss and the base model never formed the copy circuit (passkey at chance, 99999 for every key).
        The extra questions (about the distractors: "Where is John? John went to the garden") make every story
        teach retrieval by the asked name several times over, MQAR-style (Zoology); with one question per story
        the model answered with any of the story's places (half the single-fact answers were a distractor's)."""
        o, tok = self.options, self.tokenizer
        story = GENERATORS[rng.choice(self._generated())](rng, o.distractors, o.hops)
        answer = tok.encode(" " + story.answer)
        also = rng.sample(story.also, len(story.also))
        extra = [tok.encode(ask(q, cue) + " " + a) for q, cue, a in also]
        budget = length - 1 - len(answer)
        while extra and budget - sum(map(len, extra)) < self._story_tokens:
            extra.pop()  # short training lengths keep fewer extra questions
        sample = self.build(story, budget - sum(map(len, extra)), rng, self._filler("train"))
        tokens = [tok.bos_id, *sample["prompt"], *answer, *[t for e in extra for t in e], tok.eos_id]
        weights = [0.0] * (len(tokens) - 1)
        question_start = len(sample["prompt"]) - len(tok.encode(ask(story.question, story.cue)))
        for start, end in [*sample["all_fact_spans"], (question_start, len(tokens) - 1)]:
            for i in range(start, end):  # prompt token j sits at row index j + 1; target i predicts token i + 1
                weights[i] = 1.0
        return tokens, weights

    def samples(self, family: str, length: int, n: int, seed: int) -> list[dict[str, Any]]:
        """`n` evaluation samples of a cell, cached as a dataset under the hash of everything that made them."""
        o = self.options
        if family == "dataset":
            return self._dataset_samples(length, n)

        def build() -> list[dict[str, Any]]:
            rng = eval_rng(seed, self.name, family, length)
            filler = self._filler("test")
            return [self.build(GENERATORS[family](rng, o.distractors, o.hops), length, rng, filler) for _ in range(n)]

        key = [GENERATOR_VERSION, family, length, n, seed, o.distractors, o.hops, self.tokenizer.fingerprint,
               self.data.corpus.hash]
        return cached_rows(f"longqa-{family}", key, build, self.data.cache_dir)

    def _dataset_samples(self, length: int, n: int) -> list[dict[str, Any]]:
        o, enc = self.options, self.tokenizer.encode
        rows = load_checked_dataset(o.dataset_path, o.dataset_name, o.dataset_split, o.dataset_files,
                                    {key: getattr(o, key) for key in ("context_field", "question_field",
                                                                      "answers_field")}, "task")
        out = []
        for row in rows.select(range(min(n, len(rows)))):
            answers = row[o.answers_field]
            answers = [str(a) for a in answers] if isinstance(answers, list) else [str(answers)]
            question = enc(ask(str(row[o.question_field])))
            budget = length - len(question)
            if budget < 0:
                raise ConfigError(f"longqa: context length {length} is shorter than a question of the dataset "
                                  f"({len(question)} tokens)")
            context = enc(str(row[o.context_field]))
            if len(context) > budget:  # keep the start and the end, drop the middle
                context = context[: budget // 2] + context[len(context) - (budget - budget // 2) :]
            out.append({"prompt": context + question, "answer": enc(" " + answers[0]), "answers": answers,
                        "fact_spans": [], "question": str(row[o.question_field])})
        return out

    def evaluate(self, lm, lengths: list[int], n: int, seed: int) -> list[CellResult]:
        results, state_bytes = [], {length: lm.state_bytes_after(length) for length in lengths}
        for family in self.options.families:
            for length in lengths:
                samples = self.samples(family, length, n, seed)
                if not samples:
                    continue
                started = time.perf_counter()
                outputs = lm.generate_batch([s["prompt"] for s in samples], self.options.max_new_tokens)
                elapsed = time.perf_counter() - started
                hits = [exact_match(self.tokenizer.decode(o), s["answers"])
                        for o, s in zip(outputs, samples, strict=True)]
                values = {"exact_match": sum(hits) / len(samples)}
                retrieved = getattr(lm, "last_retrieved", None)
                if retrieved is not None and family != "dataset":
                    values["retrieval_recall"] = sum(
                        all(covers(spans, tuple(f)) for f in s["fact_spans"])
                        for spans, s in zip(retrieved, samples, strict=True)) / len(samples)
                data_hash = content_hash([[s["prompt"], s["answer"]] for s in samples])
                tokens = sum(len(s["prompt"]) for s in samples) + len(samples) * self.options.max_new_tokens
                outcomes = []
                for i, (o, s, hit) in enumerate(zip(outputs, samples, hits, strict=True)):
                    per_sample = {"exact_match": float(hit)}
                    if "retrieval_recall" in values:
                        per_sample["retrieval_recall"] = float(all(covers(retrieved[i], tuple(f))
                                                                   for f in s["fact_spans"]))
                    outcomes.append(SampleOutcome(i, per_sample, self.tokenizer.decode(o), " | ".join(s["answers"]),
                                                  {"facts": [list(f) for f in s.get("fact_spans") or []]}))
                for metric, value in values.items():
                    results.append(CellResult(
                        context_length=length, metric=metric, value=value, n=len(samples), subtask=family,
                        state_bytes=state_bytes[length], tokens_per_s=tokens / elapsed,
                        data_hash=data_hash, samples=outcomes if metric == "exact_match" else []))
        return results
