"""One job of a sweep: validate the config, get the trained model (cached), evaluate the task, append records."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import mechanisms
import tasks
from bench import records, summary, wandb_log
from bench.config import validate
from bench.hashing import content_hash
from bench.lm import StreamingLM
from bench.manifest import Manifest, is_alive_elsewhere, manifest_path
from bench.model import BackboneSpec
from bench.preflight import one_line
from bench.tokenizer import BPETokenizer, ByteTokenizer
from bench.train import trained_model, training_shape
from mechanisms.base import ConfigError
from tasks.base import CellResult, TaskData
from tasks.corpus import load_corpus

log = logging.getLogger(__name__)

# Nothing in a run may reach a model/dataset hub: each lookup would hang ~23 s offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def task_data(cfg: DictConfig) -> TaskData:
    return TaskData(load_corpus(OmegaConf.to_container(cfg.corpus, resolve=True), cfg.cache_dir), Path(cfg.cache_dir))


def make_tokenizer(cfg: DictConfig):
    """Bytes, or a BPE learned from the tasks' fixed text and the corpus's train split (cached by content)."""
    if cfg.model.name == "hf":
        from bench.hf import load_tokenizer

        return load_tokenizer(cfg.model.path)
    if cfg.model.tokenizer == "byte":
        return ByteTokenizer()
    texts = [t for name in tasks.names() for t in tasks.get(name).tokenizer_texts()]
    texts.append(task_data(cfg).corpus.sample_text())
    return BPETokenizer.cached(texts, cfg.model.bpe_vocab_size, Path(cfg.cache_dir))


def cell_identity(cfg: DictConfig) -> dict[str, Any]:
    """What determines a cell's results; its hash keys the cell (timing/location fields excluded)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    identity = {k: c[k] for k in ("mechanism", "task", "corpus", "model", "train", "eval")}
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


def model_and_lm(cfg: DictConfig, spec: BackboneSpec, tokenizer, options: dict[str, Any]):
    """The trained backbone (cached), its checkpoint key, and the `LongContextLM` the task scores. A model-level
    mechanism (RAG) wraps the sweep's own model of its reader mechanism — the same checkpoint that mechanism's
    run uses — so retrieval is compared on equal weights."""
    name = options["name"]
    if cfg.model.name == "hf":
        from bench import hf

        return hf.model_and_lm(cfg, tokenizer, options)
    if not mechanisms.is_model_level(name):
        model, checkpoint = trained_model(cfg, spec, tokenizer, options, task_data(cfg))
        return model, checkpoint, StreamingLM(model, tokenizer, cfg.eval.chunk_size)
    cls = mechanisms.get(name)
    reader_options = dataclasses.asdict(mechanisms.options(cls.reader_mechanism))
    model, checkpoint = trained_model(cfg, spec, tokenizer, reader_options, task_data(cfg))
    reader = StreamingLM(model, tokenizer, cfg.eval.chunk_size)
    return model, checkpoint, cls(reader, **{k: v for k, v in options.items() if k != "name"})


def backbone_spec(cfg: DictConfig, tokenizer) -> BackboneSpec:
    m = cfg.model
    return BackboneSpec(tokenizer.vocab_size, m.d_model, m.n_layers, m.n_heads, m.mlp_hidden)


def job_overrides() -> str:
    """This Hydra job's command-line overrides ('' outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""


def build_task(cfg: DictConfig, tokenizer):
    """The task object, refusing context lengths that cannot hold the task's fixed text."""
    task_options = tasks.get(cfg.task.name).Options(**OmegaConf.to_container(cfg.task, resolve=True))
    task = tasks.get(cfg.task.name)(task_options, tokenizer, task_data(cfg))
    too_short = [n for n in cfg.eval.lengths if n < task.min_length()]
    if too_short:
        raise ConfigError(f"eval.lengths {too_short} are shorter than the {cfg.task.name} task's fixed text "
                          f"({task.min_length()} tokens)")
    return task


def run(cfg: DictConfig) -> Path | None:
    """Run one cell unless the sweep's records already hold it (`force=true` redoes it, replacing its records).
    The manifest says `running` while it works, then `done`, or `failed` with the reason."""
    validate(cfg)
    path = records.records_path(cfg.results_dir, cfg.sweep_name)
    config_hash = content_hash(cell_identity(cfg))
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    cell = {"mechanism": cfg.mechanism.name, "task": cfg.task.name,
            "options": {k: v for k, v in options.items() if k != "name"}, "overrides": job_overrides()}
    label = f"{cell['mechanism']} / {cell['task']}"
    manifest = Manifest(manifest_path(path))
    entry = manifest.get(config_hash)
    if config_hash in records.finished_config_hashes(path) and not cfg.force:
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
    try:
        rows = evaluate_cell(cfg, config_hash)
        recorded = records.append_records(path, rows, replace=bool(cfg.force))
    except BaseException as e:
        manifest.mark(config_hash, "failed", **cell, error=one_line(e))
        if path.exists():
            summary.write_summary(path)  # the summary lists the failed cell
        raise
    manifest.mark(config_hash, "done", **cell)
    if recorded:
        log.info("%s: %d records -> %s", label, len(rows), path)
        if cfg.logger.name == "wandb":
            wandb_log.log_job(cfg, rows, cell_identity(cfg), config_hash)
    else:
        log.warning("%s: another job recorded this cell first; its records stand and these were dropped", label)
    summary.write_summary(path)
    return path


def evaluate_cell(cfg: DictConfig, config_hash: str) -> list[dict[str, Any]]:
    """Get the trained model (cached), evaluate the task, and return the cell's records."""
    tokenizer = make_tokenizer(cfg)
    task = build_task(cfg, tokenizer)
    m = cfg.model
    spec = backbone_spec(cfg, tokenizer)
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    mechanism = options["name"]

    started = time.perf_counter()
    model, checkpoint, lm = model_and_lm(cfg, spec, tokenizer, options)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    results = task.evaluate(lm, list(cfg.eval.lengths), cfg.eval.n, cfg.eval.seed)
    eval_s = time.perf_counter() - started
    results += introspection(model.stats())
    log.info("%s / %s: model ready in %.0fs (checkpoint %s), evaluated in %.0fs",
             mechanism, cfg.task.name, train_s, checkpoint, eval_s)

    run_id, sha, created = uuid.uuid4().hex[:12], records.git_sha(), records.now()
    t = cfg.train  # the model is its architecture, tokenizer and training budget
    budget = f"base{t.base_steps}+{t.steps}" if t.init == "base" else f"scratch{t.steps}"
    model_name = f"{m.name}-d{m.d_model}-l{m.n_layers}-h{m.n_heads}-{tokenizer.name}{tokenizer.vocab_size}-{budget}"
    if m.name == "hf":  # pretrained weights, used as they are or with LoRA-trained memory
        model_name = f"hf-{Path(m.path).name or m.path}" + (f"-lora{m.lora_rank}-{t.steps}" if
                                                            checkpoint.startswith("hf-lora") else "")
    return [
        {
            "run_id": run_id, "sweep": cfg.sweep_name, "mechanism": mechanism,
            "options": {k: v for k, v in options.items() if k != "name"}, "task": cfg.task.name,
            "subtask": r.subtask, "model": model_name, "seed": cfg.train.seed,
            "train_length": training_shape(cfg.train, options)[0], "context_length": r.context_length, "depth": r.depth,
            "metric": r.metric, "value": r.value, "n": r.n, "state_bytes": r.state_bytes,
            "tokens_per_s": r.tokens_per_s, "config_hash": config_hash, "data_hash": r.data_hash,
            "git_sha": sha, "created_at": created,
        }
        for r in results
    ]
