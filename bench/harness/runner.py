"""One cell of a sweep: validate the config, get the trained model (cached), evaluate the task, append records,
and keep the manifest saying where the cell stands."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench.config.schema import TrainConfig, neutral_defaults
from bench.config.validate import validate
from bench.core import stopwatch
from bench.core.errors import one_line
from bench.core.hashing import content_hash
from bench.harness.factory import backbone_spec, build_task, make_tokenizer, model_and_lm
from bench.report import wandb_log
from bench.results import records, samples, summary
from bench.results.manifest import Manifest, is_alive_elsewhere, manifest_path
from bench.training.mixture import training_shape
from mechanisms.base import ModelLevel
from tasks.base import CellResult

log = logging.getLogger(__name__)

# Nothing in a run may reach a model/dataset hub: each lookup would hang ~23 s offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def cell_identity(cfg: DictConfig) -> dict[str, Any]:
    """What determines a cell's results; its hash keys the cell (timing/location fields excluded)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    identity = {k: c[k] for k in ("mechanism", "task", "corpus", "model", "train", "eval")}
    for (group, key), default in neutral_defaults().items():  # options newer than the records, at their default
        if identity[group].get(key, default) == default:
            identity[group].pop(key, None)
    if c["inject_nan_at_step"] is not None:  # a fault-injection run is its own cell; others keep their hashes
        identity["inject_nan_at_step"] = c["inject_nan_at_step"]
    return identity


def introspection(stats: dict[str, float]) -> list[CellResult]:
    """The mechanisms' `stats()` (gate mix, FAM attention share, ...) taken after evaluation, as records: one per
    layer and statistic, `subtask` naming the layer, no context length or depth (they describe the whole run)."""
    rows = []
    for key, value in stats.items():
        layer, metric = key.split(".", 1)
        rows.append(CellResult(context_length=None, metric=metric, value=value, n=1, subtask=layer))
    return rows


def job_overrides() -> str:
    """This Hydra job's command-line overrides ('' outside a Hydra app)."""
    return " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""


def run(cfg: DictConfig) -> Path | None:
    """Run one cell unless the sweep's records already hold it (`force=true` redoes it, replacing its records).
    The manifest says `running` while it works, then `done`, or `failed` with the reason."""
    validate(cfg)
    records.git_sha()  # the code this process loaded, before a long cell gives commits time to land
    path = records.records_path(cfg.results_dir, cfg.sweep_name)
    config_hash = content_hash(cell_identity(cfg))
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    cell = {"mechanism": cfg.mechanism.name, "task": cfg.task.name,
            "options": {k: v for k, v in options.items() if k != "name"}, "overrides": job_overrides()}
    label = f"{cell['mechanism']} / {cell['task']}"
    manifest = Manifest(manifest_path(path))
    entry = manifest.get(config_hash)
    have = records.record_counts(path).get(config_hash, 0)
    expected = entry.records if entry is not None else None
    partial = 0 < have < (expected or 0)  # an append cut short (killed mid-write): recompute, replacing it
    if partial:
        log.warning("%s: only %d of its %d records were written (an interrupted append); recomputing it",
                    label, have, expected)
    if have and not partial and not cfg.force:
        log.info("%s: already recorded in %s (config %s), skipping; force=true recomputes it",
                 label, path, config_hash)
        if entry is None or entry.status != "done":
            manifest.mark(config_hash, "done", **cell)
        summary.write_summary(path)
        return path
    if entry is not None and is_alive_elsewhere(entry) and not cfg.force:
        log.warning("%s: another job (pid %s, since %s) is running this cell; skipping it here",
                    label, entry.pid, entry.updated_at)
        return None
    if entry is not None and entry.status != "done":
        log.info("%s: an earlier attempt ended %s%s; running it again", label,
                 "without finishing" if entry.status == "running" else "failed",
                 f" ({entry.error})" if entry.error else "")
    manifest.mark(config_hash, "running", **cell)
    log.info("%s: %s", label, numerics())
    try:
        rows, sample_rows, seconds = evaluate_cell(cfg, config_hash)
        samples.write_samples(path, config_hash, sample_rows)  # before the records: a recorded cell has samples
        manifest.expect(config_hash, len(rows))
        recorded = records.append_records(path, rows, replace=bool(cfg.force) or partial)
    except BaseException as e:
        manifest.mark(config_hash, "failed", **cell, error=one_line(e))
        try:
            summary.write_summary(path)  # the summary lists the failed cell
        except Exception as summary_error:  # never hide the cell's own error behind the summary's
            log.warning("could not rewrite the summary: %s", one_line(summary_error))
        raise
    manifest.mark(config_hash, "done", **cell, seconds=seconds)
    if recorded:
        log.info("%s: %d records -> %s", label, len(rows), path)
        if cfg.logger.name == "wandb":
            wandb_log.log_job(cfg, rows, cell_identity(cfg), config_hash)
    else:
        log.warning("%s: another job recorded this cell first; its records stand and these were dropped", label)
    summary.write_summary(path)
    return path


def numerics() -> str:
    """What decides the bits of a CPU run besides the config: training is bit-reproducible across machines only
    under the same three (docs/running.md, "Reproducibility")."""
    pinned = os.environ.get("MKL_CBWR")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, CPU kernels "
            f"{torch.backends.cpu.get_cpu_capability()}, MKL_CBWR={pinned or 'unset'}")


def evaluate_cell(cfg: DictConfig, config_hash: str
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Get the trained model (cached), evaluate the task, and return the cell's records, per-sample rows and wall
    seconds: prepare (tokenizer and task), model (training or loading it), of which base (training the shared base
    model, when this cell trained it) and train (training this cell's own model), and evaluate."""
    started = time.perf_counter()
    tokenizer = make_tokenizer(cfg)
    task = build_task(cfg, tokenizer)
    m = cfg.model
    spec = backbone_spec(cfg, tokenizer)
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    mechanism = options["name"]

    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    with stopwatch.collecting() as spent:
        model, checkpoint, lm = model_and_lm(cfg, spec, tokenizer, options)
    model_s = time.perf_counter() - started
    log.info("%s / %s: model ready in %.0fs; evaluating at lengths %s, %d samples per cell", mechanism,
             cfg.task.name, model_s, list(cfg.eval.lengths), cfg.eval.n)
    started = time.perf_counter()
    results = task.evaluate(lm, list(cfg.eval.lengths), cfg.eval.n, cfg.eval.seed)
    eval_s = time.perf_counter() - started
    stats = model.stats()
    if isinstance(lm, ModelLevel):  # a model-level mechanism's own (weights_lora: its test-time cost)
        stats.update(lm.stats())
    results += introspection(stats)
    log.info("%s / %s: model ready in %.0fs (checkpoint %s), evaluated in %.0fs",
             mechanism, cfg.task.name, model_s, checkpoint, eval_s)

    t = cfg.train  # the model is its architecture, tokenizer and training budget (with its learning rate if swept)
    budget = f"base{t.base_steps}+{t.steps}" if t.init == "base" else f"scratch{t.steps}"
    if t.lr != TrainConfig.lr:  # runs at two learning rates must never be averaged (capacity: best lr per cell)
        budget += "@lr" + f"{t.lr:.12f}".rstrip("0").rstrip(".")  # positional: no '-' (1e-05) in a model name
    model_name = f"{m.name}-d{m.d_model}-l{m.n_layers}-h{m.n_heads}-{tokenizer.name}{tokenizer.vocab_size}-{budget}"
    if m.name == "hf":  # pretrained weights, used as they are or with LoRA-trained memory
        model_name = f"hf-{Path(m.path).name or m.path}" + (f"-lora{m.lora_rank}-{t.steps}" if
                                                            checkpoint.startswith("hf-lora") else "")
    run = records.RunInfo.new(sweep=cfg.sweep_name, mechanism=mechanism,
                              options={k: v for k, v in options.items() if k != "name"}, task=cfg.task.name,
                              model=model_name, seed=cfg.train.seed,
                              train_length=training_shape(cfg.train, options)[0], config_hash=config_hash)
    rows = [run.record(context_length=r.context_length, depth=r.depth, metric=r.metric, value=r.value, n=r.n,
                       subtask=r.subtask, state_bytes=r.state_bytes, tokens_per_s=r.tokens_per_s,
                       data_hash=r.data_hash) for r in results]
    seconds = {"prepare": prepare_s, "model": model_s, "base": spent.get("base", 0.0), "train": spent.get("train", 0.0),
               "evaluate": eval_s}
    seconds = {phase: round(s, 1) for phase, s in seconds.items()}
    return rows, samples.sample_rows(config_hash, cfg.task.name, results), seconds
