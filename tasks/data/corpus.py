"""Long-document corpora for perplexity, the training mixture and long-QA filler, behind one config group
(`corpus=cpython|local|hf`).

- `cpython` (default): built from text that ships with every CPython install, so it needs no download
  (tasks/data/cpython_text.py): the standard library's docstrings, one document per top-level module or package, plus
  the `pydoc_data` help topics, one document each. The exact text depends on the Python version; the content hash
  recorded with every result says which text was used.
- `local`: every .txt / .md / .rst file under a folder is a document; every line of a .jsonl file is one
  (its `text_field`).
- `hf`: any `datasets.load_dataset` spec (PG19, wikitext-103, proof-pile, or `json` with `data_files`).

Documents are split into train / validation / test by a hash of their title, so the split is deterministic and
does not depend on the order files are found in.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import logging
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import atomic
from bench.core.errors import ConfigError, one_line
from bench.core.hashing import content_hash
from tasks.data.cache import cached_rows
from tasks.data.cpython_text import help_topics, stdlib_docstrings

log = logging.getLogger(__name__)

BUILDER_VERSION = "corpus-v1"  # bump when a builder's output changes for the same input
SPLITS = ("train", "validation", "test")
LOCAL_SUFFIXES = (".txt", ".md", ".rst", ".jsonl")


@dataclass
class CorpusOptions:
    source: str = "?"
    validation_fraction: float = 0.1
    test_fraction: float = 0.1

    def validate(self) -> None:
        for key in ("validation_fraction", "test_fraction"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"corpus.{key} must lie in [0, 1), got {getattr(self, key)}")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError("corpus.validation_fraction + corpus.test_fraction must leave documents for training")


@dataclass
class CPythonCorpusOptions(CorpusOptions):
    source: str = "cpython"
    docstrings: bool = True  # the standard library's docstrings, one document per top-level module/package
    topics: bool = True  # pydoc_data's help topics, one document each

    def validate(self) -> None:
        super().validate()
        if not (self.docstrings or self.topics):
            raise ConfigError("corpus: docstrings and topics are both off, nothing is left to build a corpus from")


@dataclass
class LocalCorpusOptions(CorpusOptions):
    source: str = "local"
    path: str = ""  # a folder, searched recursively
    text_field: str = "text"  # the field holding a document's text in .jsonl files

    def validate(self) -> None:
        super().validate()
        if not self.path:
            raise ConfigError("corpus.path is empty: give the folder of .txt/.md/.rst/.jsonl files (corpus=local)")
        if not Path(self.path).is_dir():
            raise ConfigError(f"corpus.path={self.path} is not a folder")


@dataclass
class HFCorpusOptions(CorpusOptions):
    source: str = "hf"
    path: str = ""  # datasets.load_dataset's first argument: a hub id (emozilla/pg19) or a builder (json, text)
    name: str | None = None  # the dataset's configuration, e.g. wikitext-103-raw-v1
    split: str = "train"  # which of the dataset's splits to read; ours are made from it by document
    data_files: list[str] = field(default_factory=list)
    text_field: str = "text"
    title_field: str | None = None  # a field naming each document (default: its row number)
    max_documents: int | None = None  # read at most this many rows (PG19 books are long)

    def validate(self) -> None:
        super().validate()
        if not self.path:
            raise ConfigError("corpus.path is empty: give a datasets.load_dataset path (corpus=hf)")
        if self.max_documents is not None and self.max_documents <= 0:
            raise ConfigError(f"corpus.max_documents must be > 0, got {self.max_documents}")


SOURCES: dict[str, type[CorpusOptions]] = {
    "cpython": CPythonCorpusOptions, "local": LocalCorpusOptions, "hf": HFCorpusOptions}


def corpus_options(config: Any) -> CorpusOptions:
    """The typed options of a `corpus` config node (or dict)."""
    values = dict(config)
    source = values.get("source")
    if source not in SOURCES:
        raise ConfigError(f"corpus.source {source!r} is not known (known: {', '.join(SOURCES)})")
    return SOURCES[source](**values)


@dataclass(frozen=True)
class Document:
    title: str
    text: str


class Corpus:
    """Documents with a content hash and a deterministic split by document."""

    def __init__(self, documents: list[Document], options: CorpusOptions) -> None:
        documents = [d for d in documents if d.text.strip()]
        if not documents:
            raise ConfigError(f"the {options.source} corpus has no non-empty documents")
        self.options = options
        self.documents = sorted(documents, key=lambda d: d.title)
        self.hash = content_hash([BUILDER_VERSION, [[d.title, d.text] for d in self.documents]])
        order = sorted(self.documents, key=lambda d: hashlib.sha256(d.title.encode()).hexdigest())
        n = len(order)
        n_test = _share(n, options.test_fraction)
        n_val = _share(n, options.validation_fraction)
        if n - n_test - n_val < 1:
            raise ConfigError(f"the {options.source} corpus has {n} documents: too few to split into train / "
                              f"validation / test (lower the fractions or add documents)")
        self._splits = {"test": order[:n_test], "validation": order[n_test : n_test + n_val],
                        "train": order[n_test + n_val :]}

    def split(self, name: str) -> list[Document]:
        if name not in self._splits:
            raise ConfigError(f"corpus split {name!r} is not one of {', '.join(SPLITS)}")
        return sorted(self._splits[name], key=lambda d: d.title)

    def sample_text(self, chars: int = 400_000) -> str:
        """The first `chars` characters of the train split: what the BPE tokenizer learns from."""
        return "\n\n".join(d.text for d in self.split("train"))[:chars]


def _share(n: int, fraction: float) -> int:
    """Documents given to a split of this fraction: at least one when the fraction is positive."""
    return 0 if fraction <= 0 else max(1, round(n * fraction))


# -- builders -------------------------------------------------------------------------------------------------
def build_cpython(options: CPythonCorpusOptions) -> list[Document]:
    pairs = (stdlib_docstrings() if options.docstrings else []) + (help_topics() if options.topics else [])
    if not pairs:
        raise ConfigError("this Python ships neither stdlib sources nor pydoc_data: use corpus=local or corpus=hf")
    return [Document(title, text) for title, text in pairs]


def build_local(options: LocalCorpusOptions) -> list[Document]:
    root = Path(options.path)
    if not root.is_dir():
        raise ConfigError(f"corpus.path={root} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
    if not files:
        raise ConfigError(f"corpus.path={root} holds no {'/'.join(LOCAL_SUFFIXES)} files")
    documents = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() != ".jsonl":
            documents.append(Document(rel, path.read_text(encoding="utf-8", errors="replace")))
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {i} is not JSON ({e.msg})") from None
            if not isinstance(row, dict) or options.text_field not in row:
                raise ConfigError(f"{path} line {i} has no field {options.text_field!r} (corpus.text_field)")
            documents.append(Document(f"{rel}:{i}", str(row[options.text_field])))
    if not any(d.text.strip() for d in documents):
        raise ConfigError(f"corpus.path={root}: every document is empty")
    return documents


def load_checked_dataset(path: str, name: str | None, split: str, data_files: list[str], fields: dict[str, str | None],
                         prefix: str) -> Any:
    """`datasets.load_dataset(path, name, split=..., data_files=...)`, failing in one line that names the spec; every
    config key in `fields` (e.g. {"text_field": "text"}) must name a column of it."""
    import datasets

    kwargs: dict[str, Any] = {"split": split}
    if data_files:
        kwargs["data_files"] = list(data_files)
    try:
        data = datasets.load_dataset(path, name, **kwargs)
    except Exception as e:  # missing file, unknown dataset, offline hub: say which spec failed

        raise ConfigError(f"{prefix}: datasets.load_dataset({path!r}, {name!r}, split={split!r}) failed: "
                          f"{one_line(e)}") from None
    columns = list(data.column_names)
    for key, wanted in fields.items():
        if wanted is not None and wanted not in columns:
            raise ConfigError(f"{prefix}.{key}={wanted!r}: the dataset {path} has no such field "
                              f"(fields: {', '.join(columns)})")
    return data


def build_hf(options: HFCorpusOptions) -> list[Document]:
    data = load_checked_dataset(options.path, options.name, options.split, options.data_files,
                                {"text_field": options.text_field, "title_field": options.title_field}, "corpus")
    if options.max_documents is not None:
        data = data.select(range(min(options.max_documents, len(data))))
    texts = data[options.text_field]
    titles = data[options.title_field] if options.title_field else [f"{i:08d}" for i in range(len(data))]
    return [Document(str(title), str(text)) for title, text in zip(titles, texts, strict=True)]


BUILDERS = {"cpython": build_cpython, "local": build_local, "hf": build_hf}


def load_corpus(config: Any, cache_dir: str | Path) -> Corpus:
    """The corpus a config names; the CPython build (a few seconds of parsing) is cached on disk per Python."""
    options = corpus_options(config)
    options.validate()
    return _load(json.dumps(dataclasses.asdict(options), sort_keys=True), str(cache_dir))


@functools.lru_cache(maxsize=8)
def _load(options_json: str, cache_dir: str) -> Corpus:
    options = corpus_options(json.loads(options_json))
    if options.source != "cpython":
        return Corpus(BUILDERS[options.source](options), options)
    key = content_hash([BUILDER_VERSION, options_json, sys.version, sysconfig.get_paths()["stdlib"]])
    path = Path(cache_dir) / "corpora" / f"cpython-{key}.json"
    if path.exists():
        rows = json.loads(path.read_text())
        return Corpus([Document(t, x) for t, x in rows], options)
    documents = _cpython_documents(options_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps([[d.title, d.text] for d in documents]))
    return Corpus(documents, options)


@functools.lru_cache(maxsize=2)
def _cpython_documents(options_json: str) -> list[Document]:
    """Built once per process whatever the cache folder (parsing the standard library takes ~5 s)."""
    log.info("building the default corpus from this Python's docstrings and help topics")
    options = corpus_options(json.loads(options_json))
    assert isinstance(options, CPythonCorpusOptions)
    return build_cpython(options)


# -- token views ----------------------------------------------------------------------------------------------
def tokenized_documents(corpus: Corpus, split: str, tokenizer: Any, cache_dir: str | Path) -> list[dict[str, Any]]:
    """[{'title', 'tokens', 'bytes'}] for a split, in title order (cached as a dataset per corpus and tokenizer)."""

    def build() -> list[dict[str, Any]]:
        return [{"title": d.title, "tokens": tokenizer.encode(d.text), "bytes": len(d.text.encode("utf-8"))}
                for d in corpus.split(split)]

    return cached_rows("corpus-tokens", [BUILDER_VERSION, corpus.hash, split, tokenizer.fingerprint], build,
                       cache_dir)


_STREAMS: dict[tuple[str, str, str], TokenStream] = {}


def token_stream(corpus: Corpus, split: str, tokenizer: Any, cache_dir: str | Path) -> TokenStream:
    """A split as one `TokenStream`, built once per process (every cell's training mixture reads the same one)."""
    key = (corpus.hash, split, tokenizer.fingerprint)
    if key not in _STREAMS:
        docs = tokenized_documents(corpus, split, tokenizer, cache_dir)
        _STREAMS[key] = TokenStream([d["tokens"] for d in docs], tokenizer)
    return _STREAMS[key]


class TokenStream:
    """A split's documents joined into one token stream (separated by a blank line), with the positions just
    after a sentence or line ends, where inserted text (a needle, a fact) does not cut a sentence in two."""

    def __init__(self, documents: list[list[int]], tokenizer: Any) -> None:
        separator = tokenizer.encode("\n\n")
        self.tokens: list[int] = []
        for doc in documents:
            self.tokens += doc + separator
        if not self.tokens:
            raise ConfigError("the corpus split has no tokens")
        ends = {t for t in set(self.tokens) if tokenizer.decode([t]).rstrip(" ").endswith((".", "\n", "?", "!"))}
        self.boundaries = [i + 1 for i, t in enumerate(self.tokens) if t in ends]

    def passage(self, rng: Any, n: int) -> tuple[list[int], list[int]]:
        """`n` consecutive tokens from a random offset (the stream repeats if it is shorter), and the sentence
        boundaries inside them, relative to the passage (0 and n included)."""
        period = len(self.tokens)
        start = rng.randrange(period)
        tokens = (self.tokens * (n // period + 2))[start : start + n]
        inside = {0, n}
        offset = -start  # passage position of stream position 0 in the current repeat
        while offset < n:
            lo = bisect.bisect_right(self.boundaries, -offset)
            hi = bisect.bisect_left(self.boundaries, n - offset)
            inside.update(b + offset for b in self.boundaries[lo:hi])
            offset += period
        return tokens, sorted(inside)
