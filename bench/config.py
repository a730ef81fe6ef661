"""Typed, strict configuration: dataclasses registered in Hydra's ConfigStore.

Every group (model, train, eval, logger) has a schema, and each mechanism / task registers its own options
dataclass as `schema/mechanism/<name>` / `schema/task/<name>`, which its YAML extends. Hydra then rejects an unknown
key or a wrong type at compose time; `validate` rejects values that type-check but cannot work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

import mechanisms
import tasks
from mechanisms.base import ConfigError
from tasks.corpus import SOURCES, corpus_options


@dataclass
class ModelConfig:
    name: str = "tiny"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 384
    tokenizer: str = "bpe"  # bpe (trained on the tasks' text, cached) | byte
    bpe_vocab_size: int = 1024
    path: str = ""  # name=hf: a pretrained causal LM, local folder or hub id (bench/hf.py); its tokenizer is used
    dtype: str = "float32"  # name=hf: float32 | bfloat16 | float16
    lora_rank: int = 8  # name=hf with infini / fam / bswa: LoRA on the attention projections (bench/hf_lora.py)
    lora_alpha: float = 16.0


@dataclass
class TrainConfig:
    init: str = "base"  # base: continue from one cached full-attention base model | scratch
    base_steps: int = 2000  # pretraining steps of the shared base model (init=base)
    steps: int = 150  # steps every mechanism gets (continued training, or from scratch)
    batch_size: int = 32
    train_length: int = 256  # longest training sequence, tokens
    curriculum_start: float = 0.25  # the length bound grows from this fraction of train_length over 60% of steps
    curriculum_floor: float = 0.5  # shortest length drawn, as a fraction of the current bound
    lr: float = 1e-3
    base_lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    mixture: dict[str, float] = field(default_factory=lambda: {"passkey": 1.0})  # task name -> weight
    seed: int = 1234  # training data and init; evaluation seeds are drawn from a disjoint range


@dataclass
class EvalConfig:
    lengths: list[int] = field(default_factory=lambda: [120, 248, 504])
    n: int = 20  # samples per cell
    chunk_size: int = 512  # tokens per forward call while streaming
    seed: int = 0


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "memorybench"
    entity: str | None = None
    mode: str = "offline"  # wandb mode when WANDB_MODE is unset: offline | online | disabled
    dir: str = "outputs"  # where wandb writes its run folders


@dataclass
class Config:
    mechanism: Any = MISSING
    task: Any = MISSING
    corpus: Any = MISSING  # the text perplexity, the training mixture and long-QA filler read (tasks/corpus.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep_name: str = "adhoc"
    device: str = "cpu"
    results_dir: str = "results"
    cache_dir: str = ".cache"
    force: bool = False  # rerun cells the sweep's records already hold (their records are replaced)
    inject_nan_at_step: int | None = None  # fault injection: this step's loss (from 1) in the cell's training is NaN


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in mechanisms.names():
        cs.store(group="schema/mechanism", name=name, node=mechanisms.get(name).Options)
    for name in tasks.names():
        cs.store(group="schema/task", name=name, node=tasks.get(name).Options)
    for source, options in SOURCES.items():
        cs.store(group="schema/corpus", name=source, node=options)


def validate(cfg: DictConfig) -> None:
    """Values that type-check but cannot work raise ConfigError naming the key."""
    _known_keys_only(cfg, "")
    mech = dict(OmegaConf.to_container(cfg.mechanism, resolve=True))
    mechanisms.options(mech.pop("name"), **mech)
    task = tasks.get(cfg.task.name)
    task.Options(**OmegaConf.to_container(cfg.task, resolve=True)).validate()
    corpus_options(OmegaConf.to_container(cfg.corpus, resolve=True)).validate()
    m, t, e = cfg.model, cfg.train, cfg.eval
    _positive(m, "model", "d_model", "n_layers", "n_heads", "mlp_hidden")
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model={m.d_model} must be divisible by model.n_heads={m.n_heads}")
    if (m.d_model // m.n_heads) % 2:
        raise ConfigError(f"model.d_model / model.n_heads = {m.d_model // m.n_heads} must be even (RoPE rotates "
                          "pairs of dimensions)")
    if m.name == "hf":
        from bench.hf import DTYPES, HF_MECHANISMS

        if not m.path:
            raise ConfigError("model=hf needs model.path (a local folder or a hub id)")
        if cfg.mechanism.name not in HF_MECHANISMS:
            raise ConfigError(f"mechanism={cfg.mechanism.name} is not available on Hugging Face models (available: "
                              f"{', '.join(HF_MECHANISMS)})")
        if m.lora_rank < 1 or m.lora_alpha <= 0:
            raise ConfigError(f"model.lora_rank must be >= 1 and model.lora_alpha > 0, got {m.lora_rank}, "
                              f"{m.lora_alpha}")
        if m.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
    if m.tokenizer not in ("byte", "bpe"):
        raise ConfigError(f"model.tokenizer must be 'byte' or 'bpe', got {m.tokenizer!r}")
    if t.init not in ("base", "scratch"):
        raise ConfigError(f"train.init must be 'base' or 'scratch', got {t.init!r}")
    _positive(t, "train", "batch_size", "train_length", "lr", "base_lr")
    if t.steps < 0 or t.base_steps < 0 or t.warmup_steps < 0:
        raise ConfigError("train.steps, train.base_steps and train.warmup_steps must be >= 0")
    for key in ("curriculum_start", "curriculum_floor"):
        if not 0 < t[key] <= 1:
            raise ConfigError(f"train.{key} must be in (0, 1], got {t[key]}")
    if not t.mixture or any(w < 0 for w in t.mixture.values()) or sum(t.mixture.values()) <= 0:
        raise ConfigError(f"train.mixture needs non-negative weights with a positive sum, got {dict(t.mixture)}")
    for name in t.mixture:
        tasks.get(name)
    if not e.lengths:
        raise ConfigError("eval.lengths is empty")
    if any(n <= 0 for n in e.lengths):
        raise ConfigError(f"eval.lengths must be positive token counts, got {list(e.lengths)}")
    _positive(e, "eval", "n", "chunk_size")
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device} but this machine has no CUDA device (use device=cpu)")
    if cfg.inject_nan_at_step is not None and not 1 <= cfg.inject_nan_at_step <= t.steps:
        raise ConfigError(f"inject_nan_at_step must be a step of the cell's training, 1..train.steps={t.steps}, "
                          f"got {cfg.inject_nan_at_step}")
    if cfg.logger.name not in ("none", "wandb"):
        raise ConfigError(f"logger.name={cfg.logger.name!r} is not supported (known: none, wandb)")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")


def _known_keys_only(node: DictConfig, prefix: str) -> None:
    """Hydra's `+key=value` appends even to a typed node; a key its schema lacks would be silently ignored."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = {f.name for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in fields:
            raise ConfigError(f"unknown key {prefix}{key} (known in {prefix.rstrip('.') or 'the top level'}: "
                              f"{', '.join(sorted(fields))})")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _known_keys_only(child, f"{prefix}{key}.")


def _positive(node: Any, prefix: str, *keys: str) -> None:
    for k in keys:
        if node[k] <= 0:
            raise ConfigError(f"{prefix}.{k} must be > 0, got {node[k]}")

