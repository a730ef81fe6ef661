"""Values that type-check but cannot work: each raises ConfigError naming the key, before anything runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import mechanisms
import tasks
from bench.core.errors import ConfigError
from bench.core.precision import AUTOCAST_DTYPES as TRAINING_PRECISIONS
from bench.models.hf import DTYPES
from tasks.base import EVAL_SEED_OFFSET
from tasks.data.corpus import corpus_options


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
        if not m.path:
            raise ConfigError("model=hf needs model.path (a local folder or a hub id)")
        on_hf = [n for n in mechanisms.names() if mechanisms.get(n).hf_support != "none"]
        if cfg.mechanism.name not in on_hf:
            raise ConfigError(f"mechanism={cfg.mechanism.name} is not available on Hugging Face models (available: "
                              f"{', '.join(on_hf)})")
        if m.lora_rank < 1 or m.lora_alpha <= 0:
            raise ConfigError(f"model.lora_rank must be >= 1 and model.lora_alpha > 0, got {m.lora_rank}, "
                              f"{m.lora_alpha}")
        if m.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
    if m.tokenizer not in ("byte", "bpe"):
        raise ConfigError(f"model.tokenizer must be 'byte' or 'bpe', got {m.tokenizer!r}")
    if t.precision not in TRAINING_PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {t.precision!r}")
    if t.init not in ("base", "scratch"):
        raise ConfigError(f"train.init must be 'base' or 'scratch', got {t.init!r}")
    _finite(t, "train", "lr", "base_lr", "min_lr_ratio", "weight_decay", "grad_clip", "curriculum_start",
            "curriculum_floor")
    _positive(t, "train", "batch_size", "train_length", "lr", "base_lr", "grad_clip")
    if t.steps < 0 or t.base_steps < 0 or t.warmup_steps < 0:
        raise ConfigError("train.steps, train.base_steps and train.warmup_steps must be >= 0")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1] (the LR's floor as a fraction of its peak), got "
                          f"{t.min_lr_ratio}")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
    for key in ("seed", "base_seed"):
        if t[key] is not None and not 0 <= t[key] < EVAL_SEED_OFFSET:
            raise ConfigError(f"train.{key} must be in [0, {EVAL_SEED_OFFSET}) (evaluation seeds live above it), "
                              f"got {t[key]}")
    for key in ("curriculum_start", "curriculum_floor"):
        if not 0 < t[key] <= 1:
            raise ConfigError(f"train.{key} must be in (0, 1], got {t[key]}")
    if not t.mixture or any(not math.isfinite(w) or w < 0 for w in t.mixture.values()) or \
            sum(t.mixture.values()) <= 0:
        raise ConfigError(f"train.mixture needs non-negative weights with a positive sum, got {dict(t.mixture)}")
    for name in t.mixture:
        tasks.get(name)
    if not e.lengths:
        raise ConfigError("eval.lengths is empty")
    if any(n <= 0 for n in e.lengths):
        raise ConfigError(f"eval.lengths must be positive token counts, got {list(e.lengths)}")
    if len(set(e.lengths)) != len(e.lengths):
        raise ConfigError(f"eval.lengths lists a length twice ({list(e.lengths)}): each cell would be recorded twice")
    _positive(e, "eval", "n", "chunk_size")
    _check_device(str(cfg.device))
    if not _is_path_component(cfg.sweep_name):
        raise ConfigError(f"sweep_name={cfg.sweep_name!r} must be a plain folder name (it becomes "
                          f"{cfg.results_dir}/<sweep_name>/): no '/', '..' or absolute path")
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


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not a device (use cpu, cuda, cuda:N or mps)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but this machine has no CUDA device (use device=cpu)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device} but this machine has no MPS device (use device=cpu)")


def _is_path_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _finite(node: Any, prefix: str, *keys: str) -> None:
    for k in keys:
        if not math.isfinite(node[k]):
            raise ConfigError(f"{prefix}.{k} must be a finite number, got {node[k]}")


def _positive(node: Any, prefix: str, *keys: str) -> None:
    for k in keys:
        if node[k] <= 0:
            raise ConfigError(f"{prefix}.{k} must be > 0, got {node[k]}")

