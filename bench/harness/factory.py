"""The factory: a composed config -> tokenizer, task data, task, and the trained model behind a `LongContextLM`.
Every entry point (the sweep runner, the preflight check, lm-eval, the exporter) builds through here, so a cell is
the same whichever door it came in by."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import mechanisms
import tasks
from bench.core.errors import ConfigError
from bench.core.protocols import LongContextLM, Tokenizer
from bench.models import hf
from bench.models.backbone import BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import BPETokenizer, ByteTokenizer
from bench.training.protocols import trained_lora, trained_model
from tasks.base import Task, TaskData
from tasks.data.corpus import load_corpus

log = logging.getLogger(__name__)


def task_data(cfg: DictConfig) -> TaskData:
    return TaskData(load_corpus(OmegaConf.to_container(cfg.corpus, resolve=True), cfg.cache_dir), Path(cfg.cache_dir))


def make_tokenizer(cfg: DictConfig) -> Tokenizer:
    """Bytes, or a BPE learned from the tasks' fixed text and the corpus's train split (cached by content); an HF
    model brings its own."""
    if cfg.model.name == "hf":
        return hf.load_tokenizer(cfg.model.path)
    if cfg.model.tokenizer == "byte":
        return ByteTokenizer()
    texts = [t for name in tasks.names() for t in tasks.get(name).tokenizer_texts()]
    texts.append(task_data(cfg).corpus.sample_text())
    return BPETokenizer.cached(texts, cfg.model.bpe_vocab_size, Path(cfg.cache_dir))


def backbone_spec(cfg: DictConfig, tokenizer: Tokenizer) -> BackboneSpec:
    m = cfg.model
    return BackboneSpec(tokenizer.vocab_size, m.d_model, m.n_layers, m.n_heads, m.mlp_hidden)


def build_task(cfg: DictConfig, tokenizer: Tokenizer) -> Task:
    """The task object, refusing context lengths that cannot hold the task's fixed text."""
    task_options = tasks.get(cfg.task.name).Options(**OmegaConf.to_container(cfg.task, resolve=True))
    task = tasks.get(cfg.task.name)(task_options, tokenizer, task_data(cfg))
    too_short = [n for n in cfg.eval.lengths if n < task.min_length()]
    if too_short:
        raise ConfigError(f"eval.lengths {too_short} are shorter than the {cfg.task.name} task's fixed text "
                          f"({task.min_length()} tokens)")
    return task


def model_and_lm(cfg: DictConfig, spec: BackboneSpec, tokenizer: Tokenizer, options: dict[str, Any]
                 ) -> tuple[Any, str, LongContextLM]:
    """(the model whose `stats()` are recorded, the checkpoint key, the `LongContextLM` the task scores). A
    model-level mechanism (RAG) wraps the sweep's own model of its reader mechanism — the same checkpoint that
    mechanism's run uses — so retrieval is compared on equal weights."""
    if cfg.model.name == "hf":
        return hf_model_and_lm(cfg, tokenizer, options)
    name = options["name"]
    cls = mechanisms.get(name)
    if not mechanisms.is_model_level(name):
        model, checkpoint = trained_model(cfg, spec, tokenizer, options, task_data(cfg))
        return model, checkpoint, StreamingLM(model, tokenizer, cfg.eval.chunk_size)
    reader_options = dataclasses.asdict(mechanisms.options(cls.reader_mechanism))
    model, checkpoint = trained_model(cfg, spec, tokenizer, reader_options, task_data(cfg))
    reader = StreamingLM(model, tokenizer, cfg.eval.chunk_size)
    return model, checkpoint, cls(reader, **_without_name(options))


def hf_model_and_lm(cfg: DictConfig, tokenizer: Tokenizer, options: dict[str, Any]) -> tuple[Any, str, LongContextLM]:
    """`model=hf`: how the mechanism runs on a pretrained model is the mechanism's own `hf_support` (validation has
    refused `none`): `lora` trains it inside every layer, `training_free` applies it as a mask on the KV cache (the
    options' `window` / `sinks`, if any) or, for a model-level mechanism, wraps the model as its reader."""
    name = options["name"]
    cls = mechanisms.get(name)
    model = hf.load_model(cfg.model.path, cfg.device, cfg.model.dtype)
    if cls.hf_support == "lora":
        lora_model, key = trained_lora(cfg, model, tokenizer, options, task_data(cfg))
        return lora_model, f"hf-lora:{key}", StreamingLM(lora_model, tokenizer, cfg.eval.chunk_size)
    if mechanisms.is_model_level(name):
        lm = cls(hf.HFStreamingLM(model, tokenizer, cfg.eval.chunk_size), **_without_name(options))
    else:
        lm = hf.HFStreamingLM(model, tokenizer, cfg.eval.chunk_size, options.get("window"), options.get("sinks", 0))
    log.info("%s on %s (training-free adapter)", name, cfg.model.path)
    return hf.NoStats(), f"hf:{cfg.model.path}", lm


def _without_name(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != "name"}
