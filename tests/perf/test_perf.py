"""`make perf` machinery on a tiny configuration: records, targets table and plots are written; the dense-mask
references compute the same layer as the mechanisms; peak memory sees an allocation. No wall-time assertions."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import mechanisms
from bench.config.schema import ModelConfig, TrainConfig
from bench.core.errors import ConfigError
from bench.models.backbone import BackboneSpec, Block
from bench.perf.refs import dense_mask_forward
from bench.perf.runner import PeakMemory, PerfConfig, measure, validate, write
from bench.results.records import FIELDS, read_records
from tests.helpers import CONF, ROOT
from tests.helpers.mechanism_cases import cases, params, per_layer_names, small_options, with_reference_mask


def stack_recurrences() -> list[str]:
    return [n for n in mechanisms.names() if mechanisms.is_segment_recurrence(n)]


def tiny(tmp_path: Path, **changes) -> PerfConfig:
    return PerfConfig(**{
        # every per-layer mechanism, and each recurrence around the layer stack (no layer probe of its own)
        "mechanisms": {name: small_options(name) for name in per_layer_names() + stack_recurrences()},
        "lengths": [64, 128], "repeats": 1, "layer_d_model": 32, "layer_heads": 2,
        "model": ModelConfig(d_model=32, n_layers=2, n_heads=2, mlp_hidden=64, bpe_vocab_size=64),
        "train": TrainConfig(batch_size=2, train_length=40), "train_repeats": 1,
        "stream_chunk": 48, "dense_max_length": 64, "full_max_length": 128, "peer": False, "matmul_size": 64,
        "results_dir": str(tmp_path), **changes})


def test_a_tiny_perf_run_writes_records_targets_and_plots(tmp_path):
    cfg = tiny(tmp_path)
    validate(cfg)
    summary = write(cfg, measure(cfg))
    rows = read_records(tmp_path / "perf" / "records.jsonl")
    assert all(tuple(r) == FIELDS and r["task"] == "perf" for r in rows)
    speed = {(r["mechanism"], r["subtask"], r["context_length"], (r["options"] or {}).get("impl"))
             for r in rows if r["metric"] == "tokens_per_s"}
    for m in per_layer_names():
        for n in (64, 128):
            assert {(m, "layer", n, None), (m, "model_stream", n, None)} <= speed
    assert ("sliding_window", "layer", 64, "dense_mask") in speed
    assert ("sliding_window", "layer", 128, "dense_mask") not in speed  # beyond dense_max_length
    assert all(r["value"] > 0 and math.isfinite(r["value"]) for r in rows if r["metric"] != "peak_bytes")
    bounded = {(r["mechanism"], r["context_length"]): r["state_bytes"] for r in rows
               if r["subtask"] == "model_stream" and r["metric"] == "tokens_per_s"}
    for m in per_layer_names():
        if mechanisms.get(m).bounded_state:
            assert bounded[m, 64] == bounded[m, 128], m
    assert bounded["full", 128] == 2 * bounded["full", 64]
    text = summary.read_text()
    assert "## Targets" in text and "| sliding_window / full kernel tokens/s at 16K" in text
    assert ("sliding_window", "kernel", 128, None) in speed and ("full", "kernel", 128, None) in speed
    assert (tmp_path / "perf" / "plots" / "layer_tokens_per_s.png").exists()
    for m in stack_recurrences():
        assert {(m, "model_stream", 64, None), (m, "train_step", 40, None)} <= speed, m
        assert not any(r["mechanism"] == m and r["subtask"] == "layer" for r in rows)
    for m in per_layer_names():  # a training step per mechanism and precision, at the training length
        assert {(m, "train_step", 40, None), (m, "train_step", 40, "bfloat16")} <= speed, m
    assert "| full attention training step, model GFLOP/s / fp32 matmul" in text
    assert "| full attention training tokens/s, bfloat16 / float32" in text
    for m in per_layer_names() + stack_recurrences():  # every bounded mechanism's state is a target, from its class
        assert (f"| {m}: state_bytes at 64K equals 4K" in text) == mechanisms.get(m).bounded_state, m


MASKED = with_reference_mask(cases() + [("sliding_window", {"window": 5}), ("bswa", {"block": 4, "mem_blocks": 1}),
                                        ("bswa", {"block": 6, "mem_blocks": 2})])


@pytest.mark.parametrize("name,options", params(MASKED))
def test_dense_mask_references_compute_the_same_layer(name, options):
    torch.manual_seed(0)
    block = Block.build(BackboneSpec(64, 16, 1, 2, 48), mechanisms.build(name, 16, 2, **options)).double()
    x = torch.randn(2, 37, 16, dtype=torch.float64)
    state = block.mixer.init_state(2, "cpu", torch.float64)
    ours, _ = block(x, state, torch.arange(37))
    torch.testing.assert_close(dense_mask_forward(block, name, options, x), ours, atol=1e-12, rtol=0)


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as mem:
        big = torch.ones(16 * 2**20)  # 64 MiB, touched
        del big
    if mem.peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert mem.peak >= 60 * 2**20


def test_perf_config_is_typed_and_validated(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("perf", overrides=["lengths=[64]"]))
        assert isinstance(cfg, PerfConfig) and cfg.lengths == [64]
        with pytest.raises(Exception, match="lenghts"):
            compose("perf", overrides=["lenghts=[64]"])
    for bad in ({"mechanisms": {"nope": {}}}, {"mechanisms": {"rag": {}}}, {"lengths": []},
                {"mechanisms": {"sliding_window": {"window": 0}}}, {"repeats": 0}, {"train_precisions": ["float16"]},
                {"train_repeats": 0}):
        with pytest.raises(ConfigError):
            validate(tiny(tmp_path, **bad))


def test_the_perf_command_finds_its_config():
    """`python -m bench.perf` as `make perf` runs it (it once looked for a `conf` package and found none)."""
    done = subprocess.run([sys.executable, "-m", "bench.perf", "--cfg", "job"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "train_precisions" in done.stdout, done.stderr[-2000:]
