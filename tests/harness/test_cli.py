"""End to end through the real CLI: a smoke sweep writes complete records; bad input fails cleanly."""

import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import mechanisms
from bench.config.schema import register_configs
from bench.results.records import FIELDS
from mechanisms.rag import RetrievalLM
from tests.helpers import CONF, sweeps

register_configs()  # the `${registered:...}` resolver a sweep preset may use
# What the smoke sweep runs, read from its preset (not a second list here): every registered mechanism, its tasks.
SMOKE = OmegaConf.load(CONF / "sweep" / "smoke.yaml").hydra.sweeper.params
SMOKE_MECHANISMS = set(SMOKE.mechanism.split(","))
SMOKE_TASKS = set(SMOKE.task.split(","))
# Statistics a mechanism records (its stats()): per layer of the smoke model, or for a model-level one its own part.
LAYERS = ("layer0", "layer1")
STATS = {"infini": (LAYERS, ("gate_memory_weight", "gate_memory_weight_std")),
         "fam": (LAYERS, ("fam_attention_share",)),
         "neural_memory": (LAYERS, ("gate_memory_weight", "gate_memory_weight_std", "inner_loss_before",
                                    "inner_loss_after")),
         "weights_lora": (("test_time",), ("seconds_per_adaptation", "flops_per_adaptation", "loss_first_step",
                                           "loss_last_step")),
         "rmt": (("recurrence",), ("written_memory_rms",))}


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return sweeps.run(tmp_path, *overrides)


@pytest.mark.slow  # ~210 s on a quiet machine (65 jobs: every mechanism on every task)
def test_smoke_sweep_writes_complete_records_and_skips_finished_cells(tmp_path):
    done = run_cli(tmp_path, "-m", "sweep=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    path = tmp_path / "results" / "smoke" / "records.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["mechanism"] for r in rows} == SMOKE_MECHANISMS
    assert all(tuple(r) == FIELDS and r["sweep"] == "smoke" for r in rows)
    assert {(r["mechanism"], r["task"]) for r in rows} == {(m, t) for m in SMOKE_MECHANISMS for t in SMOKE_TASKS}
    cells = [r for r in rows if r["context_length"] is not None]
    for r in cells:
        assert r["state_bytes"] > 0 and r["tokens_per_s"] > 0 and r["data_hash"]
    passkey = [r for r in cells if r["task"] == "passkey"]
    assert all(0 <= r["value"] <= 1 and r["depth"] is not None for r in passkey)
    assert {r["context_length"] for r in passkey} == {120, 128}
    for m in SMOKE_MECHANISMS:
        retrieves = issubclass(mechanisms.get(m), RetrievalLM)
        expected = {"exact_match", "digit_accuracy"} | ({"retrieval_recall"} if retrieves else set())
        assert {r["metric"] for r in passkey if r["mechanism"] == m} == expected, m
    longqa = [r for r in cells if r["task"] == "longqa"]
    assert {r["subtask"] for r in longqa} == {"single_fact", "two_facts", "three_facts", "multikey",
                                              "variable_tracking"}
    assert {r["context_length"] for r in longqa} == {120, 128} and all(0 <= r["value"] <= 1 for r in longqa)
    buckets = [r for r in cells if r["task"] == "perplexity" and r["subtask"] is None]
    assert {r["metric"] for r in buckets} == {"ppl"} and all(r["value"] > 1 for r in buckets)
    assert max(r["context_length"] for r in buckets) > 128  # beyond the training length
    whole = {r["metric"] for r in cells if r["task"] == "perplexity" and r["subtask"] == "overall"}
    assert whole == {"ppl", "nll", "bits_per_byte"}
    stats = {(r["mechanism"], r["subtask"], r["metric"]) for r in rows if r["context_length"] is None}
    assert stats == {(m, part, metric) for m in SMOKE_MECHANISMS & set(STATS) for part in STATS[m][0]
                     for metric in STATS[m][1]}
    summary_md = (tmp_path / "results" / "smoke" / "summary.md").read_text()
    for heading in ("## passkey — exact_match by needle depth at 128 tokens", "## longqa/single_fact — exact_match",
                    "## perplexity — ppl", "## perplexity/overall — bits_per_byte"):
        assert heading in summary_md
    window_rows = [r for r in rows if r["mechanism"] == "sliding_window"]
    assert {r["options"]["window"] for r in window_rows} == {64}

    again = run_cli(tmp_path, "-m", "sweep=smoke")
    assert again.returncode == 0 and "skipping" in again.stderr + again.stdout
    assert len(path.read_text().splitlines()) == len(rows)


@pytest.mark.slow  # 13 s
def test_scratch_protocol_trains_each_mechanism_without_a_base(tmp_path):
    done = run_cli(tmp_path, "sweep=smoke", "hydra.mode=RUN", "mechanism=sliding_window", "train.init=scratch")
    assert done.returncode == 0, done.stderr[-3000:]
    logs = done.stdout + done.stderr
    assert "base (full attention" not in logs and "sliding_window (scratch)" in logs
    assert (tmp_path / "results" / "smoke" / "records.jsonl").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("mechanism=nope", "mechanism/nope"),
        ("mechanism=sliding_window mechanism.window=0", "mechanism.window"),
        ("eval.lengths=[-5]", "eval.lengths"),
        ("train.lrr=1", "train.lrr"),
        ("train.lr=fast", "train.lr"),
        ("mechanism.window=3", "mechanism.window"),  # full attention has no window
        ("task.depths=[1.5]", "task.depths"),
        ("mechanism=rag mechanism.top_k=0", "mechanism.top_k"),
        ("mechanism=rag mechanism.retriever=tfidf", "mechanism.retriever"),
        ("mechanism=rag mechanism.chunk_tokens=300", "mechanism.reader_window"),
        ("-m mechanism=full,sliding_window mechanism.window=0", "mechanism.window"),  # fails before full runs
        ("+train.lr_typo=1", "train.lr_typo"),
        ("eval.lengths=[40]", "eval.lengths"),
        ("task=longqa eval.lengths=[50]", "eval.lengths"),  # shorter than the facts and question
        ("task=perplexity task.buckets=[256,64]", "task.buckets"),
        ("corpus=local corpus.path=/nonexistent/texts", "corpus.path"),
        ("corpus=nope", "corpus/nope"),
        ("model=hf", "model.path"),
    ],
)
def test_bad_input_fails_in_one_clear_line(tmp_path, override, needle):
    done = run_cli(tmp_path, *override.split())
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and needle in line
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # 13 s: two CLI processes
def test_bad_corpora_fail_in_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    books = tmp_path / "books.jsonl"
    books.write_text(json.dumps({"body": "a book"}) + "\n")
    for override, needle in ((f"corpus=local corpus.path={empty}", "holds no"),
                             (f"corpus=hf corpus.path=json corpus.data_files=[{books}]", "corpus.text_field='text'")):
        done = run_cli(tmp_path, "task=perplexity", *override.split())
        assert done.returncode == 2
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and needle in line, line
        assert not (tmp_path / "results").exists()


@pytest.mark.slow  # 18 s
def test_wandb_logger_writes_an_offline_run_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    done = run_cli(tmp_path, "sweep=smoke", "hydra.mode=RUN", "mechanism=infini", "logger=wandb",
                   f"logger.dir={tmp_path / 'wb'}")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert any(runs[0].rglob("*.png"))  # the job's figures went with it


@pytest.mark.slow  # 23 s
def test_corrupt_cached_checkpoints_are_reported_in_one_line_and_retrained(tmp_path):
    first = run_cli(tmp_path, "sweep=smoke", "hydra.mode=RUN", "mechanism=sliding_window")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoints = sorted((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2  # the base model and the sliding-window model
    truncated, flipped = checkpoints
    truncated.write_bytes(truncated.read_bytes()[:1000])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    again = run_cli(tmp_path, "sweep=smoke", "hydra.mode=RUN", "mechanism=sliding_window", "sweep_name=again")
    assert again.returncode == 0, again.stderr[-3000:]
    logs = again.stdout + again.stderr
    assert logs.count("deleting it and retraining") == 2 and "Traceback" not in logs
    assert "base (full attention, seed 1234): training" in logs and "sliding_window (from base): training" in logs


@pytest.mark.slow  # 24 s
def test_same_config_and_seed_give_identical_records(tmp_path):
    """Two independent runs (separate caches, so both train) agree on every record field but timing/identity."""
    rows = []
    for name in ("a", "b"):
        root = tmp_path / name
        done = run_cli(root, "sweep=smoke", "hydra.mode=RUN", "mechanism=fam")
        assert done.returncode == 0, done.stderr[-3000:]
        rows.append([json.loads(line) for line in (root / "results" / "smoke" / "records.jsonl").open()])
    volatile = {"run_id", "created_at", "tokens_per_s"}
    strip = [[{k: v for k, v in r.items() if k not in volatile} for r in run] for run in rows]
    assert strip[0] == strip[1] and len(strip[0]) > 0
