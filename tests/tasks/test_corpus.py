"""Corpora (cpython / local / hf): the default corpus builds offline on a bare Python, splits deterministically by
document, local folders and Hugging Face dataset files are read, bad input is one clear error, and token-stream
passages have exact lengths and true sentence boundaries."""

import json
import random
import subprocess
import sys

import pytest

from bench.core.errors import ConfigError
from bench.models.tokenizers import ByteTokenizer
from tasks.data.corpus import Corpus, Document, LocalCorpusOptions, TokenStream, load_corpus
from tests.helpers import ROOT


def test_default_corpus_builds_on_a_bare_python_without_network():
    """No site-packages (so no torch, datasets or hub client) and every socket refused."""
    script = ("import socket, runpy\n"
              "def refuse(*a, **k): raise OSError('network used')\n"
              "socket.socket = refuse; socket.create_connection = refuse\n"
              f"runpy.run_path({str(ROOT / 'tasks' / 'data' / 'cpython_text.py')!r}, run_name='__main__')\n")
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


def test_options_validation_names_the_key():
    with pytest.raises(ConfigError, match="corpus.path"):
        LocalCorpusOptions(path="").validate()
    assert Document("t", "x").title == "t"
