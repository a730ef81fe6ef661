"""The training protocols (`train.init`), each trained once and cached under a content hash of everything it
depends on:

- `base` (default): one full-attention base model per configuration, then every mechanism continues from its
  weights with the same budget — the controlled-study protocol.
- `scratch`: each mechanism from random initialisation with the same budget (Zoology-style).
- On a Hugging Face model: the mechanism inside every layer, trained with LoRA (`trained_lora`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import mechanisms
import tasks
from bench.core import stopwatch
from bench.core.errors import ConfigError
from bench.core.hashing import content_hash
from bench.core.precision import AUTOCAST_DTYPES
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.hf_mechanisms import MechanismLM, add_lora
from bench.training import checkpoints
from bench.training.loop import train
from bench.training.mixture import MIN_UNITS_PER_SEQUENCE, Mixture, training_shape
from tasks.base import Task, TaskData

log = logging.getLogger(__name__)
# Bump when a training stream changes: it invalidates cached checkpoints. v6: mixture tasks drawn in sorted order.
DATA_VERSION = "mixture-v6"
LORA_VERSION = "hf-lora-v2"  # v2: trained tensors are named after the shared layer stack (blocks.<i>.mixer...)


@dataclass
class TrainJob:
    """Everything one training run depends on; its hash names the checkpoint."""

    spec: BackboneSpec
    mechanism: str
    options: dict[str, Any]
    steps: int
    lr: float
    init_from: str | None  # hash of the checkpoint it continues from, if any

    def key(self, train_cfg: dict[str, Any], tokenizer_fingerprint: str, corpus_hash: str) -> str:
        return content_hash([dataclasses.asdict(self), train_cfg, tokenizer_fingerprint, corpus_hash, DATA_VERSION],
                            20)


def unkeyed_precision(key: str, value: Any) -> bool:
    """Plain float32 training stays out of checkpoint keys (the option came after the checkpoints it would rename);
    a mixed precision is another recipe and keys its own."""
    return key == "precision" and AUTOCAST_DTYPES[value] is None


def transfer_weights(model: Backbone, base_state: dict[str, torch.Tensor]) -> list[str]:
    """Load base weights; every model parameter must come from the base except mechanism-specific additions,
    which are returned (they keep their fresh initialisation). A mixer with no counterpart to attention's weights
    (`continues_base_attention` False) leaves them out and starts its own fresh."""
    if not mechanisms.get(model.mechanism).continues_base_attention:
        base_state = {k: v for k, v in base_state.items() if ".mixer." not in k}
    result = model.load_state_dict(base_state, strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"base checkpoint has weights the {model.mechanism} model lacks: {result.unexpected_keys}")
    return list(result.missing_keys)


def mixture_tasks(mixture: dict[str, float], tokenizer: Any, data: TaskData) -> dict[str, Task]:
    """The tasks the mixture draws from (weight > 0) with their default options; those that read text read
    `data`'s corpus. A task given weight 0 is not built, so its fixed text does not raise the curriculum's
    shortest row (MQAR alone trained from 109 tokens, passkey's prompt, instead of its own 4)."""
    return {name: tasks.get(name)(tasks.get(name).Options(name=name), tokenizer, data)
            for name, weight in mixture.items() if weight > 0}


def trained_model(cfg: Any, spec: BackboneSpec, tokenizer: Any, options: dict[str, Any], data: TaskData
                  ) -> tuple[Backbone, str]:
    """The model for this run, from the checkpoint cache or trained now; returns (model, checkpoint key)."""
    t = cfg.train
    skip = ("steps", "base_steps", "lr", "base_lr", "init", "base_seed")
    train_cfg = {k: v for k, v in dict(t).items() if k not in skip and not unkeyed_precision(k, v)}
    base_seed = t.seed if t.get("base_seed") is None else t.base_seed  # the shared base's seed
    length, batch = training_shape(t, options)
    mechanism_shape = {"train_length": length, "batch_size": batch}  # the base model trains as configured
    if (length, batch) != (t.train_length, t.batch_size):
        log.info("%s: %d-token units need %d-token training rows: training at length %d, batch %d (same tokens "
                 "per step)", options["name"], length // MIN_UNITS_PER_SEQUENCE, length, length, batch)
    streams = mixture_tasks(t.mixture, tokenizer, data)
    cache = Path(cfg.cache_dir) / "checkpoints"
    device = torch.device(cfg.device)
    mechanism = options["name"]
    mech_options = {k: v for k, v in options.items() if k != "name"}

    def obtain(job: TrainJob, label: str, init_state: dict | None, seed: int, nan_at_step: int | None = None,
               shape: dict[str, int] | None = None, phase: str = "train") -> tuple[Backbone, str]:
        """The job's model, cached or trained now; training time counts as `phase` (stopwatch)."""
        shape = shape or {}
        key = job.key(train_cfg | shape | {"seed": seed}, tokenizer.fingerprint, data.corpus.hash)
        path = cache / f"{key}.pt"
        model = Backbone(spec, job.mechanism, job.options).to(device)  # before the cache check: same RNG stream

        def load(state: dict[str, torch.Tensor]) -> Backbone:
            model.load_state_dict(state)
            return model.eval()

        def fit() -> tuple[Backbone, dict[str, torch.Tensor], dict[str, Any]]:
            if init_state is not None:
                added = transfer_weights(model, init_state)
                if added:
                    log.info("%s: new parameters initialised fresh: %s", label, added)
            torch.manual_seed(seed)
            mixture = Mixture(streams, dict(t.mixture), seed + (1 if init_state is not None else 0))
            log.info("%s: training %d steps (lr %g) -> %s", label, job.steps, job.lr, path)
            with stopwatch.phase(phase):
                losses = train(model, mixture, OmegaConf.merge(t, shape, {"seed": seed}), job.steps, job.lr, label,
                               nan_at_step)
            final = sum(losses[-20:]) / max(1, len(losses[-20:]))
            log.info("%s: final loss %.4f", label, final)
            meta = {"job": json.loads(json.dumps(dataclasses.asdict(job))), "final_loss": final}
            return model, model.state_dict(), meta

        return checkpoints.cached(path, label, load, fit, use_cache=nan_at_step is None), key

    if t.init == "scratch":
        job = TrainJob(spec, mechanism, mech_options, t.steps, t.lr, None)
        return obtain(job, f"{mechanism} (scratch)", None, t.seed, cfg.inject_nan_at_step, mechanism_shape)
    torch.manual_seed(base_seed)
    base_job = TrainJob(spec, "full", {}, t.base_steps, t.base_lr, None)
    base, base_key = obtain(base_job, f"base (full attention, seed {base_seed})", None, base_seed, phase="base")
    torch.manual_seed(t.seed)  # the mechanism's fresh parameters (FAM's memory) follow the training seed
    job = TrainJob(spec, mechanism, mech_options, t.steps, t.lr, base_key)
    return obtain(job, f"{mechanism} (from base)", base.state_dict(), t.seed, cfg.inject_nan_at_step,
                  mechanism_shape)


def trained_lora(cfg: Any, hf_model: Any, tokenizer: Any, options: dict[str, Any], data: TaskData
                 ) -> tuple[MechanismLM, str]:
    """The HF model with `options['name']` inside every layer, LoRA-trained on the mixture for `train.steps`; only
    the trained tensors are cached, under a hash of the model, mechanism, training config, tokenizer and corpus."""
    t, m = cfg.train, cfg.model
    name = options["name"]
    mech_options = {k: v for k, v in options.items() if k != "name"}
    model = MechanismLM(hf_model, name, mech_options)
    trainable = add_lora(model, m.lora_rank, m.lora_alpha)
    model.to(cfg.device)
    length, batch = training_shape(t, options)
    t = OmegaConf.merge(t, {"train_length": length, "batch_size": batch})
    train_cfg = {k: v for k, v in dict(t).items()
                 if k not in ("base_steps", "base_lr", "init", "base_seed") and not unkeyed_precision(k, v)}
    key = content_hash([LORA_VERSION, m.path, m.dtype, m.lora_rank, m.lora_alpha, name, mech_options, train_cfg,
                        tokenizer.fingerprint, data.corpus.hash], 20)
    path = Path(cfg.cache_dir) / "checkpoints" / f"hf-{key}.pt"
    label = f"{name} (LoRA on {m.path})"

    def load(state: dict[str, torch.Tensor]) -> MechanismLM:
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys or set(trainable) - set(state):
            raise ConfigError(f"LoRA checkpoint {path} does not fit the model (delete it to retrain)")
        return model.eval()

    def fit() -> tuple[MechanismLM, dict[str, torch.Tensor], dict[str, Any]]:
        log.info("%s: LoRA rank %d, %d trainable tensors (%d parameters), %d steps", label, m.lora_rank,
                 len(trainable), sum(p.numel() for p in model.parameters() if p.requires_grad), t.steps)
        torch.manual_seed(t.seed)
        with stopwatch.phase("train"):
            train(model, Mixture(mixture_tasks(t.mixture, tokenizer, data), dict(t.mixture), t.seed + 1), t,
                  t.steps, t.lr, label, cfg.inject_nan_at_step)
        state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        return model.eval(), state, {"trainable": json.loads(json.dumps(trainable))}

    return checkpoints.cached(path, label, load, fit, use_cache=cfg.inject_nan_at_step is None), key
