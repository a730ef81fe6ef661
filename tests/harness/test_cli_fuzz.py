"""CLI fuzz: hypothesis-generated bad command lines each exit non-zero with one line naming the problem, before
anything is trained or written. Driven in-process through `bench.__main__.main` (the console entry) so that a few
hundred cases take seconds; tests/harness/test_cli.py runs the same path as a real subprocess."""

import contextlib
import io
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench.__main__ as cli
import mechanisms
import tasks

KNOWN = set(mechanisms.names()) | set(tasks.names())
word = st.text(string.ascii_lowercase + "_", min_size=1, max_size=10).filter(lambda w: w not in KNOWN)
non_positive = st.integers(-1000, 0)
digits_bad_type = st.sampled_from(["abc", "1.5x", "[1]", "true?"])


def keyed(prefix: list[str], key: str, values) -> st.SearchStrategy[list[str]]:
    return values.map(lambda v: [*prefix, f"{key}={v}"])


BAD = st.one_of(
    word.map(lambda w: [f"mechanism={w}"]),
    word.map(lambda w: [f"task={w}"]),
    word.map(lambda w: [f"model={w}"]),
    st.tuples(st.sampled_from(["train", "eval", "model", "logger", "mechanism"]), word).map(
        lambda kw: [f"{kw[0]}.{kw[1]}_x=1"]),
    st.tuples(st.sampled_from(["", "train.", "eval.", "mechanism.", "task."]), word).map(
        lambda kw: [f"+{kw[0]}{kw[1]}_y=2"]),
    keyed(["mechanism=sliding_window"], "mechanism.window", non_positive),
    keyed(["mechanism=sliding_window"], "mechanism.sinks", st.integers(-100, -1)),
    keyed(["mechanism=infini"], "mechanism.segment", non_positive),
    keyed(["mechanism=infini"], "mechanism.update", word.filter(lambda w: w not in ("linear", "delta"))),
    keyed(["mechanism=infini"], "mechanism.gate_lr_mult", non_positive),
    keyed(["mechanism=fam"], "mechanism.block", non_positive),
    keyed(["mechanism=fam"], "mechanism.mem_blocks", st.integers(-100, -1)),
    keyed(["mechanism=fam", "mechanism.block=16"], "mechanism.fam_tokens", st.integers(17, 500)),
    keyed(["mechanism=bswa"], "mechanism.fam_tokens", st.integers(1, 32)),
    keyed(["mechanism=rag"], "mechanism.top_k", non_positive),
    keyed(["mechanism=rag"], "mechanism.chunk_tokens", non_positive),
    keyed(["mechanism=rag", "mechanism.chunk_tokens=16"], "mechanism.overlap", st.integers(16, 100)),
    keyed(["mechanism=rag"], "mechanism.reader_window", st.integers(1, 100)),
    keyed(["mechanism=rag"], "mechanism.retriever", word.filter(lambda w: w not in ("bm25", "dense"))),
    st.sampled_from([["eval.lengths=[]"], ["eval.lengths=5"], ["eval.lengths=[a]"]]),
    st.lists(st.integers(-1000, 0), min_size=1, max_size=3).map(lambda xs: [f"eval.lengths={xs}"]),
    st.lists(st.integers(1, 60), min_size=1, max_size=3).map(lambda xs: [f"eval.lengths={xs}"]),  # < question
    st.one_of(st.floats(1.001, 100), st.floats(-100, -0.001)).map(lambda d: [f"task.depths=[0.5,{d:.3f}]"]),
    st.sampled_from(["eval.n", "eval.chunk_size", "train.batch_size", "train.train_length", "model.d_model",
                     "model.n_layers", "model.n_heads", "model.mlp_hidden"]).flatmap(
        lambda k: keyed([], k, non_positive)),
    st.sampled_from(["train.lr", "train.base_lr"]).flatmap(lambda k: keyed([], k, st.floats(-1, 0))),
    st.sampled_from(["train.curriculum_start", "train.curriculum_floor"]).flatmap(
        lambda k: keyed([], k, st.one_of(st.floats(-5, 0), st.floats(1.001, 5)))),
    st.sampled_from(["train.steps", "eval.n", "model.d_model", "train.lr"]).flatmap(
        lambda k: keyed([], k, digits_bad_type)),
    st.sampled_from([["model.d_model=100", "model.n_heads=3"], ["model.d_model=6", "model.n_heads=2"],
                     ["model.d_model=36", "model.n_heads=4"]]),
    st.sampled_from(["model.tokenizer", "train.init", "logger.name", "logger.mode"]).flatmap(
        lambda k: keyed([], k, word)),
    st.one_of(non_positive, st.integers(10**6, 10**7)).map(lambda s: [f"inject_nan_at_step={s}"]),
    st.dictionaries(word, st.integers(-5, -1), min_size=1, max_size=2).map(
        lambda d: ["train.mixture={" + ",".join(f"passkey:{v}" for v in d.values()) + "}"]),
    word.map(lambda w: ["train.mixture={" + w + ":1.0}"]),
    word.map(lambda w: ["-m", f"mechanism=full,{w}"]),
    non_positive.map(lambda n: ["-m", "mechanism=full,sliding_window", f"eval.n=2,{n}"]),
    st.sampled_from([["mechanism=["], ["eval.lengths=[1,"], ["=5"], ["mechanism=full,sliding_window"]]),
    # values that trained backwards, stopped learning or ran with a negative LR (issue 20, case 6)
    st.floats(-10, 0).map(lambda v: [f"train.grad_clip={v}"]),
    st.one_of(st.floats(-5, -0.001), st.floats(1.001, 5)).map(lambda v: [f"train.min_lr_ratio={v}"]),
    st.floats(-5, -0.001).map(lambda v: [f"train.weight_decay={v}"]),
    st.sampled_from(["train.lr", "train.base_lr", "train.grad_clip", "train.weight_decay"]).flatmap(
        lambda k: keyed([], k, st.sampled_from(["nan", "inf", "-inf"]))),
    st.integers(1, 600).map(lambda n: [f"eval.lengths=[{n + 200},{n + 200}]"]),  # each cell recorded twice (case 9)
    st.one_of(st.integers(1_000_003, 10**9), st.integers(-100, -1)).map(lambda s: [f"train.seed={s}"]),  # case 11
    st.sampled_from(["gpu", "cuda0", "tpu", "cpu:x"]).map(lambda d: [f"device={d}"]),  # case 12
    st.sampled_from(["../x", "a/b", "..", "/tmp/abs"]).map(lambda s: [f"sweep_name={s}"]),  # case 15
)
if not torch.cuda.is_available():
    BAD = st.one_of(BAD, st.just(["device=cuda"]))
NOISE = st.lists(st.sampled_from(["eval.n=3", "train.seed=7", "sweep_name=fuzz", "eval.seed=5", "model.n_layers=2",
                                  "train.steps=10", "logger=none"]), max_size=2, unique=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=25, **SETTINGS)
@given(noise=NOISE, bad=BAD)
def test_a_sample_of_bad_command_lines_exit_nonzero_in_one_line(store, monkeypatch, noise, bad):
    """The fast suite's share of the fuzz: 25 command lines (~0.3 s each); the slow suite runs 240."""
    check_rejected(store, monkeypatch, noise, bad)


@pytest.mark.slow  # 240 examples: ~75 s on one core
@settings(max_examples=240, **SETTINGS)
@given(noise=NOISE, bad=BAD)
def test_bad_command_lines_exit_nonzero_in_one_line_and_write_nothing(store, monkeypatch, noise, bad):
    check_rejected(store, monkeypatch, noise, bad)


def check_rejected(store, monkeypatch, noise, bad):
    def must_not_launch():
        raise AssertionError(f"bad input passed the pre-flight check: {noise + bad}")

    monkeypatch.setattr(cli, "hydra_main", must_not_launch)
    flags = [a for a in bad if a.startswith("-")]
    argv = [*flags, *noise, *(a for a in bad if not a.startswith("-")),
            f"results_dir={store / 'results'}", f"cache_dir={store / 'cache'}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    message = err.getvalue().strip()
    assert code != 0
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message
    assert not (store / "results").exists()
