"""How time and memory grow with context, per mechanism.

For each context length and mechanism, all mechanisms interleaved within every repeat (so drift in machine speed
hits them alike), it measures: forward tokens/s of one attention layer on the whole sequence in one call, and of
the whole default model streaming the sequence in chunks with its state carried (what evaluation does), each with
its peak memory above the process's baseline, plus the carried `state_nbytes`. Reference points in the same run:
this machine's fp32 matmul GFLOP/s (the physical limit), full attention's SDPA kernel GFLOP/s, dense-mask
(T x T) versions of the windowed mechanisms, and the `infini-transformer-pytorch` peer at equal size when that
optional package is installed (`pip install -e '.[perf]'`, never a runtime dependency). Medians of repeats.

Writes results/<sweep_name>/records.jsonl (the record schema, task `perf`), summary.md (tables + the issue's
targets, met or not) and log-log plots. Config: conf/perf.yaml (typed: PerfConfig below).
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import mechanisms
from bench.config.schema import CONF_DIR, ModelConfig, TrainConfig
from bench.core import atomic
from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from bench.core.precision import AUTOCAST_DTYPES
from bench.models.backbone import Backbone, BackboneSpec, Block
from bench.perf.refs import dense_mask_layer, peer_infini_stream
from bench.perf.report import write_report
from bench.perf.training import step_runner, time_steps
from bench.results import records
from mechanisms.sliding_window import WindowState, windowed_attention

log = logging.getLogger("bench.perf")


@dataclass
class PerfConfig:
    # every mechanism with a layer stack (per-layer ones and recurrences around the stack, such as RMT) with its
    # class's `perf_options`, in display order: a new one is measured by itself
    mechanisms: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        name: dict(mechanisms.get(name).perf_options)
        for name in sorted(mechanisms.names(), key=lambda n: (mechanisms.get(n).display_order, n))
        if not mechanisms.is_model_level(name)})
    lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768, 65536])
    repeats: int = 3
    layer_d_model: int = 256  # one layer: 4 heads of 64, the setting the reference numbers use
    layer_heads: int = 4
    model: ModelConfig = field(default_factory=ModelConfig)  # the default sweep's model, random weights
    stream_chunk: int = 2048  # tokens per forward call when streaming (4K is already two chunks, carrying state)
    dense_max_length: int = 16384  # dense-mask references materialise T x T scores; skipped beyond this
    full_max_length: int = 65536  # unbounded-state mechanisms (full attention) cost T^2; skipped beyond this
    peer: bool = True  # benchmark infini-transformer-pytorch when installed
    matmul_size: int = 2048
    # Training step probe: the default recipe's shape (train.batch_size x train.train_length, each mechanism's own
    # training shape where it needs longer rows), in each of these precisions (train.precision); [] skips it.
    train: TrainConfig = field(default_factory=TrainConfig)
    train_precisions: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    train_repeats: int = 5
    device: str = "cpu"
    seed: int = 0
    sweep_name: str = "perf"
    results_dir: str = "results"


ConfigStore.instance().store(name="perf_schema", node=PerfConfig)


def glibc_allocator(for_memory: bool) -> None:
    """glibc keeps freed heap memory and raises its mmap threshold as it goes, so resident memory would show the
    high-water mark of every earlier probe instead of this one's. For the memory pass each large tensor becomes its
    own mapping (threshold 64 KiB), unmapped when freed; for the timing pass large thresholds keep the allocator
    as fast as in normal use (measured: the memory setting halves throughput)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        log.warning("not glibc: peak memory figures may include memory freed by earlier probes")
        return
    libc.mallopt(-3, 64 * 1024 if for_memory else 32 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 128 * 1024 if for_memory else 64 * 2**20)  # M_TRIM_THRESHOLD
    if for_memory:
        libc.malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry: the kernel's own resident high-water mark (reset through
    /proc/self/clear_refs, Linux >= 4.0) on CPU, CUDA's allocator counter on GPU; None where neither exists."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, None

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # high-water mark := current resident size
            self._base = self._status("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        elif self._base is not None:
            self.peak = self._status("VmHWM") - self._base


@dataclass
class Probe:
    """One thing to time at one length: `run()` does the work and returns the carried state's bytes (or None)."""

    mechanism: str
    options: dict[str, Any]
    subtask: str  # layer | model_stream | kernel
    run: Callable[[], int | None]
    flops: float | None = None  # for a GFLOP/s figure
    times: list[float] = field(default_factory=list)
    state_bytes: int | None = None


def layer_probe(name: str, options: dict, cfg: PerfConfig, length: int, device: torch.device) -> Probe:
    """One transformer layer (norms, the mechanism, the feed-forward: FAM needs the last two) on T tokens."""
    d = cfg.layer_d_model
    spec = BackboneSpec(cfg.model.bpe_vocab_size, d, 1, cfg.layer_heads, 3 * d)
    layer = Block.build(spec, mechanisms.build(name, d, cfg.layer_heads, **options)).to(device).eval()
    x = torch.randn(1, length, d, device=device)
    positions = torch.arange(length, device=device)

    def run() -> int:
        state = layer.mixer.init_state(1, device, x.dtype)
        _, state = layer(x, state, positions)
        return layer.mixer.state_nbytes(state)

    return Probe(name, options, "layer", run)


def stream_probe(name: str, options: dict, cfg: PerfConfig, length: int, device: torch.device) -> Probe:
    m = cfg.model
    spec = BackboneSpec(m.bpe_vocab_size, m.d_model, m.n_layers, m.n_heads, m.mlp_hidden)
    model = Backbone(spec, name, options).to(device).eval()
    tokens = torch.randint(0, m.bpe_vocab_size, (1, length), device=device)

    def run() -> int:
        states = None
        for start in range(0, length, cfg.stream_chunk):
            logits, states = model(tokens[:, start:start + cfg.stream_chunk], states, start)
            del logits  # a consumer scores each chunk's logits and drops them before the next chunk
        return model.state_nbytes(states)

    return Probe(name, options, "model_stream", run)


def kernel_probes(cfg: PerfConfig, length: int, device: torch.device) -> list[Probe]:
    """Attention alone on rotated q, k, v (what the issue's reference numbers time): full causal SDPA, with its
    causal FLOPs 4 * T^2 * d / 2 per head for a GFLOP/s figure, and the sliding window's banded kernel."""
    dh = cfg.layer_d_model // cfg.layer_heads
    q, k, v = (torch.randn(1, cfg.layer_heads, length, dh, device=device) for _ in range(3))
    positions = torch.arange(length, device=device)
    out = []
    if "full" in cfg.mechanisms and length <= cfg.full_max_length:
        def full() -> None:
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

        out.append(Probe("full", {}, "kernel", full, cfg.layer_heads * 4 * length * length * dh / 2))
    if "sliding_window" in cfg.mechanisms:
        options = cfg.mechanisms["sliding_window"]
        window = mechanisms.options("sliding_window", **options).window
        state = WindowState(*(torch.zeros(1, cfg.layer_heads, n, dh, device=device) for n in (window, window, 0, 0)))

        def banded() -> None:
            windowed_attention(q, None, k, v, state, positions, window, 0)

        out.append(Probe("sliding_window", options, "kernel", banded))
    return out


def matmul_gflops(n: int, device: torch.device, repeats: int = 7) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def probes_at(cfg: PerfConfig, length: int, device: torch.device) -> list[Probe]:
    out = []
    for name, options in cfg.mechanisms.items():
        cls = mechanisms.get(name)
        if not cls.bounded_state and length > cfg.full_max_length:
            continue
        if mechanisms.is_per_layer(name):  # a recurrence around the layer stack (RMT) has no layer of its own
            out.append(layer_probe(name, options, cfg, length, device))
        out.append(stream_probe(name, options, cfg, length, device))
        windowed = mechanisms.is_per_layer(name) and cls.bounded_state and \
            cls.reference_mask(mechanisms.options(name, **options), 8, "cpu") is not None
        if windowed and length <= cfg.dense_max_length:
            ref = dense_mask_layer(name, options, cfg.layer_d_model, cfg.layer_heads, length, device)
            out.append(Probe(name, {**options, "impl": "dense_mask"}, "layer", ref))
        if name == "infini" and cfg.peer:
            peer = peer_infini_stream(options["segment"], cfg.model, length, device)
            if peer is not None:
                out.append(Probe(name, {**options, "impl": "infini-transformer-pytorch"}, "model_stream", peer))
    return out + kernel_probes(cfg, length, device)


def measure(cfg: PerfConfig) -> list[dict[str, Any]]:
    """Two phases: peak memory of every probe first, from a fresh process with each large tensor its own mapping
    (switching the allocator back and forth left freed heap memory that later probes reused unseen), then
    timings with the allocator as in normal use, all probes interleaved in every repeat."""
    device = torch.device(cfg.device)
    rows: list[dict[str, Any]] = []
    peaks: dict[tuple[int, int], int | None] = {}
    glibc_allocator(for_memory=device.type == "cpu")
    with torch.inference_mode():
        for length in tqdm(cfg.lengths, desc="peak memory", disable=None):
            log.info("peak memory at %d tokens", length)
            torch.manual_seed(cfg.seed)
            for i, p in enumerate(probes_at(cfg, length, device)):
                with PeakMemory(device) as mem:
                    p.run()
                peaks[length, i] = mem.peak
        glibc_allocator(for_memory=False)
        peak_gflops = matmul_gflops(cfg.matmul_size, device)
        log.info("fp32 matmul %d x %d: %.1f GFLOP/s", cfg.matmul_size, cfg.matmul_size, peak_gflops)
        rows.append(_row(cfg, "matmul", {"size": cfg.matmul_size}, "hardware", None, "gflops", peak_gflops))
        for length in cfg.lengths:
            torch.manual_seed(cfg.seed)
            probes = probes_at(cfg, length, device)
            for p in probes:  # warm-up (allocator, lazy init) outside the timings
                p.run()
            for _ in tqdm(range(cfg.repeats), desc=f"{length} tokens", leave=False, disable=None):
                for p in probes:  # interleaved: every repeat times every probe once
                    _sync(device)
                    t0 = time.perf_counter()
                    p.state_bytes = p.run()
                    _sync(device)
                    p.times.append(time.perf_counter() - t0)
            for i, p in enumerate(probes):
                seconds, peak = statistics.median(p.times), peaks[length, i]
                rows.append(_row(cfg, p.mechanism, p.options, p.subtask, length, "tokens_per_s", length / seconds,
                                 p.state_bytes, length / seconds))
                if peak is not None:
                    rows.append(_row(cfg, p.mechanism, p.options, p.subtask, length, "peak_bytes", peak,
                                     p.state_bytes))
                if p.flops:
                    rows.append(_row(cfg, p.mechanism, p.options, p.subtask, length, "gflops",
                                     p.flops / seconds / 1e9))
                log.info("%6d tokens  %-16s %-13s %-28s %10.0f tok/s  peak %7.1f MiB  state %s", length,
                         p.mechanism, p.subtask, p.options.get("impl", ""), length / seconds,
                         (peak or 0) / 2**20, p.state_bytes)
    if cfg.train_precisions:
        rows += train_step_rows(cfg, device, peak_gflops)
    return rows


def train_step_rows(cfg: PerfConfig, device: torch.device, peak_gflops: float) -> list[dict[str, Any]]:
    """Training tokens/s and model GFLOP/s of one optimizer step per mechanism and precision (bench/perf/training.py
    says how FLOPs are counted), interleaved in every repeat."""
    m = cfg.model
    spec = BackboneSpec(m.bpe_vocab_size, m.d_model, m.n_layers, m.n_heads, m.mlp_hidden)
    runners, work = {}, {}
    for name, options in cfg.mechanisms.items():
        for precision in cfg.train_precisions:
            runners[name, precision], *work[name, precision] = step_runner(name, options, spec, cfg.train,
                                                                           precision, device, cfg.seed)
    log.info("training steps: %d mechanisms x %s, %d repeats", len(cfg.mechanisms), list(cfg.train_precisions),
             cfg.train_repeats)
    seconds = time_steps(runners, cfg.train_repeats, lambda: _sync(device))
    rows = []
    for (name, precision), step_s in seconds.items():
        flops, tokens = work[name, precision]
        options = dict(cfg.mechanisms[name]) | ({} if AUTOCAST_DTYPES[precision] is None else {"impl": precision})
        gflops = flops / step_s / 1e9
        rows += [_row(cfg, name, options, "train_step", cfg.train.train_length, "tokens_per_s", tokens / step_s,
                      tokens_per_s=tokens / step_s),
                 _row(cfg, name, options, "train_step", cfg.train.train_length, "gflops", gflops)]
        log.info("train step %-16s %-9s %8.0f tok/s  %6.1f model GFLOP/s (%.2f of fp32 matmul)", name, precision,
                 tokens / step_s, gflops, gflops / peak_gflops)
    return rows


def _row(cfg: PerfConfig, mechanism: str, options: dict, subtask: str, length: int | None, metric: str,
         value: float, state_bytes: int | None = None, tokens_per_s: float | None = None) -> dict[str, Any]:
    m = cfg.model
    model = (f"{m.name}-d{m.d_model}-l{m.n_layers}-h{m.n_heads}" if subtask in ("model_stream", "train_step")
             else f"layer-d{cfg.layer_d_model}-h{cfg.layer_heads}")
    identity = [mechanism, options, subtask, model, cfg.device, cfg.stream_chunk]
    run = records.RunInfo(sweep=cfg.sweep_name, mechanism=mechanism, options=options, task="perf", model=model,
                          seed=cfg.seed, train_length=None, config_hash=content_hash(identity))
    return run.record(context_length=length, metric=metric, value=float(value), n=cfg.repeats, subtask=subtask,
                      state_bytes=state_bytes, tokens_per_s=tokens_per_s)


def validate(cfg: PerfConfig) -> None:
    for name, options in cfg.mechanisms.items():
        if mechanisms.is_model_level(name):
            raise ConfigError(f"mechanisms.{name}: model-level mechanisms have no layer stack to time")
        mechanisms.options(name, **options)  # unknown mechanism or impossible option -> ConfigError
    if not cfg.lengths or any(n <= 0 for n in cfg.lengths):
        raise ConfigError(f"lengths must be a non-empty list of positive token counts, got {list(cfg.lengths)}")
    for key in ("repeats", "layer_d_model", "layer_heads", "stream_chunk", "matmul_size"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(cfg, key)}")
    if cfg.layer_d_model % cfg.layer_heads or (cfg.layer_d_model // cfg.layer_heads) % 2:
        raise ConfigError("layer_d_model / layer_heads must be a whole, even head size")
    for precision in cfg.train_precisions:
        if precision not in AUTOCAST_DTYPES:
            raise ConfigError(f"train_precisions: {precision!r} is not one of {', '.join(AUTOCAST_DTYPES)}")
    if cfg.train_repeats <= 0:
        raise ConfigError(f"train_repeats must be > 0, got {cfg.train_repeats}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but this machine has no CUDA device")


def write(cfg: PerfConfig, rows: list[dict[str, Any]]) -> Path:
    """Replace the sweep's records (a perf run is one measurement of this machine), then tables and plots."""
    run_id, sha, created = uuid.uuid4().hex[:12], records.git_sha(), records.now()
    for r in rows:
        r.update(run_id=run_id, git_sha=sha, created_at=created)
    path = records.records_path(cfg.results_dir, cfg.sweep_name)
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return write_report(path)


# An absolute config path: a relative one is read from the calling module's package (`pkg://conf` for
# bench.perf.runner), and conf/ is a folder, not a package, so `python -m bench.perf` found no config.
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="perf")
def main(dcfg: DictConfig) -> None:
    cfg: PerfConfig = OmegaConf.to_object(dcfg)
    try:
        validate(cfg)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    started = time.perf_counter()
    rows = measure(cfg)
    out = write(cfg, rows)
    log.info("perf: %d records in %.0f s -> %s", len(rows), time.perf_counter() - started, out)

