"""Training: AdamW with warm-up + cosine decay on a weighted mixture of the tasks' training streams, with
checkpoints cached under a content hash so a sweep trains each model once.

Protocols (`train.init`): `base` pretrains one full-attention model per sweep and gives every mechanism the same
continued-training budget from its weights (the controlled-study protocol); `scratch` trains each mechanism from
random initialisation under the same budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm.auto import tqdm

import mechanisms
import tasks
from bench.hashing import content_hash
from bench.model import Backbone, BackboneSpec
from mechanisms.base import ConfigError, Mechanism
from tasks.base import Task, TaskData, train_rng

log = logging.getLogger(__name__)
MIN_UNITS_PER_SEQUENCE = 8  # segments/blocks per training sequence for memory to learn (DESIGN.md, recipes)
DATA_VERSION = "mixture-v5"  # bump when a training stream's format changes: invalidates cached checkpoints


class TrainingDiverged(RuntimeError):
    """Loss became NaN/inf; the message names mechanism, step and loss."""


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


class Mixture:
    """Draws training batches: one length per batch (a short-to-long curriculum), one task per sample."""

    def __init__(self, task_objs: dict[str, Task], weights: dict[str, float], seed: int) -> None:
        self.tasks = task_objs
        self.names = [n for n in weights if weights[n] > 0]
        self.weights = [weights[n] for n in self.names]
        self.rng = train_rng(seed)

    def batch(self, batch_size: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, weights = [], []
        for _ in range(batch_size):
            task = self.tasks[self.rng.choices(self.names, self.weights)[0]]
            tokens, w = task.training_sample(self.rng, length)
            rows.append(tokens)
            weights.append(w)
        t = torch.tensor(rows)
        return t[:, :-1], t[:, 1:], torch.tensor(weights)


def training_shape(train_cfg: Any, options: dict[str, Any]) -> tuple[int, int]:
    """(train_length, batch_size) the mechanism of `options` trains with. Memory only learns to cross boundaries
    it sees in training, so the recipe wants >= MIN_UNITS_PER_SEQUENCE segments/blocks per sequence (DESIGN.md):
    a shorter `train.train_length` is raised to hold them, and the batch shrinks in proportion so that a step sees
    the same number of tokens as every other mechanism's (the comparison keeps one token budget)."""
    name, rest = options["name"], {k: v for k, v in options.items() if k != "name"}
    unit = mechanisms.options(name, **rest).memory_unit()
    length, batch = train_cfg.train_length, train_cfg.batch_size
    if not unit or length >= MIN_UNITS_PER_SEQUENCE * unit:
        return length, batch
    raised = MIN_UNITS_PER_SEQUENCE * unit
    return raised, max(1, batch * length // raised)


def curriculum_length(
    step: int, steps: int, min_length: int, max_length: int, start: float, floor: float, rng: random.Random
) -> int:
    """The bound grows linearly from `start` * max to max over the first 60% of steps; the length is drawn
    uniformly in [floor * bound, bound]. Measured: with floor 0.25 the longest distances were too rare and full
    attention missed needles at depth 0 of its own training length (0.70 exact match)."""
    frac = min(1.0, step / max(1.0, 0.6 * steps))
    hi = max(min_length, int(max_length * (start + (1 - start) * frac)))
    lo = max(min_length, int(hi * floor))
    return rng.randint(lo, hi)


def lr_at(step: int, steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def param_groups(model: Backbone, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """Decay matrices only (not norms, embeddings or 1-D scalars); parameters a mechanism asks to move faster
    (`Mechanism.lr_multipliers`) get their own group with a scaled LR and no decay."""
    multiplier: dict[str, float] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, Mechanism):
            for param_name, mult in module.lr_multipliers().items():
                multiplier[f"{module_name}.{param_name}"] = mult
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        decay = weight_decay if p.ndim >= 2 and "embed" not in name and name not in multiplier else 0.0
        groups.setdefault((multiplier.get(name, 1.0), decay), []).append(p)
    return [
        {"params": params, "weight_decay": decay, "lr_mult": mult, "lr": lr * mult}
        for (mult, decay), params in sorted(groups.items())
    ]


def train(model: Backbone, mixture: Mixture, cfg: Any, steps: int, lr: float, desc: str,
          nan_at_step: int | None = None) -> list[float]:
    """Run `steps` optimizer steps in place; returns the loss curve. Raises TrainingDiverged on NaN/inf
    (`nan_at_step` injects one, to exercise that path end to end)."""
    device = model.embed.weight.device
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, lr), lr=lr, betas=(0.9, 0.95))
    min_len = max(t.min_length() for t in mixture.tasks.values()) + 8
    if cfg.train_length < min_len:
        raise ConfigError(f"train.train_length={cfg.train_length} is shorter than the tasks need ({min_len})")
    length_rng = random.Random(f"lengths:{cfg.seed}")
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True, disable=None)
    for step in bar:
        length = curriculum_length(
            step, steps, min_len, cfg.train_length, cfg.curriculum_start, cfg.curriculum_floor, length_rng
        )
        x, y, w = (t.to(device) for t in mixture.batch(cfg.batch_size, length))
        for group in opt.param_groups:
            group["lr"] = group["lr_mult"] * lr_at(step, steps, lr, cfg.warmup_steps, cfg.min_lr_ratio)
        logits, _ = model(x)
        per_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        loss = (per_token * w.reshape(-1)).sum() / w.sum()
        if step + 1 == nan_at_step:  # steps count from 1, as in the logs
            loss = loss * float("nan")
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{desc}: loss is {loss.item()} at step {step + 1} of {steps}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", len=length)
        if step % 250 == 0 or step == steps - 1:  # tqdm is silent without a terminal; logs still show progress
            log.info("%s: step %d/%d loss %.4f (length %d)", desc, step + 1, steps, losses[-1], length)
    model.eval()
    return losses


def save_checkpoint(model: Backbone, path: Path, meta: dict[str, Any]) -> None:
    """Write to a temp file and rename, so a crash never leaves a truncated checkpoint under the final name; the
    file's SHA-256 goes to `<name>.sha256` (written after it) so that a later load detects any corruption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    digest = _sha256(tmp)
    os.replace(tmp, path)
    digest_tmp = _digest_path(path).with_suffix(f".tmp{os.getpid()}")
    digest_tmp.write_text(digest + "\n")
    os.replace(digest_tmp, _digest_path(path))


class CorruptCheckpoint(Exception):
    """A cached checkpoint that fails its hash or cannot be read; the caller retrains."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint, verified against its recorded SHA-256 (a file from before digests were recorded is checked by
    loading it and then gets its digest). Raises CorruptCheckpoint with the reason in one line."""
    digest_file = _digest_path(path)
    if digest_file.exists() and digest_file.read_text().strip() != _sha256(path):
        raise CorruptCheckpoint(f"checkpoint {path} does not match its SHA-256 ({digest_file.name})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or garbled: torch's own trace says nothing useful to a user
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({type(e).__name__})") from None
    if not digest_file.exists():
        digest_file.write_text(_sha256(path) + "\n")
    return checkpoint


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def transfer_weights(model: Backbone, base_state: dict[str, torch.Tensor]) -> list[str]:
    """Load base weights; every model parameter must come from the base except mechanism-specific additions,
    which are returned (they keep their fresh initialisation)."""
    result = model.load_state_dict(base_state, strict=False)
    if result.unexpected_keys:
        raise ConfigError(f"base checkpoint has weights the {model.mechanism} model lacks: {result.unexpected_keys}")
    return list(result.missing_keys)


def trained_model(cfg: Any, spec: BackboneSpec, tokenizer: Any, options: dict[str, Any], data: TaskData
                  ) -> tuple[Backbone, str]:
    """The model for this run, from the checkpoint cache or trained now; returns (model, checkpoint key). The
    mixture's tasks draw with their default options; those that read text read `data`'s corpus."""
    t = cfg.train
    train_cfg = {k: v for k, v in dict(t).items() if k not in ("steps", "base_steps", "lr", "base_lr", "init")}
    length, batch = training_shape(t, options)
    mechanism_shape = {"train_length": length, "batch_size": batch}  # the base model trains as configured
    if (length, batch) != (t.train_length, t.batch_size):
        log.info("%s: %d-token units need %d-token training rows: training at length %d, batch %d (same tokens "
                 "per step)", options["name"], length // MIN_UNITS_PER_SEQUENCE, length, length, batch)
    mixture_tasks = {name: tasks.get(name)(tasks.get(name).Options(name=name), tokenizer, data)
                     for name in t.mixture}
    cache = Path(cfg.cache_dir) / "checkpoints"
    device = torch.device(cfg.device)
    mechanism = options["name"]
    mech_options = {k: v for k, v in options.items() if k != "name"}

    def obtain(job: TrainJob, label: str, init_state: dict | None, nan_at_step: int | None = None,
               shape: dict[str, int] | None = None):
        shape = shape or {}
        key = job.key(train_cfg | shape, tokenizer.fingerprint, data.corpus.hash)
        path = cache / f"{key}.pt"
        model = Backbone(spec, job.mechanism, job.options).to(device)
        if path.exists() and nan_at_step is None:  # an injected fault must happen, not be read from the cache
            try:
                state = load_checkpoint(path)["state_dict"]
            except CorruptCheckpoint as e:
                log.warning("%s; deleting it and retraining", e)
                path.unlink(missing_ok=True)
                _digest_path(path).unlink(missing_ok=True)
            else:
                log.info("%s: cached checkpoint %s", label, path)
                model.load_state_dict(state)
                return model.eval(), key
        if init_state is not None:
            added = transfer_weights(model, init_state)
            if added:
                log.info("%s: new parameters initialised fresh: %s", label, added)
        torch.manual_seed(t.seed)
        mixture = Mixture(mixture_tasks, dict(t.mixture), t.seed + (1 if init_state is not None else 0))
        log.info("%s: training %d steps (lr %g) -> %s", label, job.steps, job.lr, path)
        losses = train(model, mixture, OmegaConf.merge(t, shape), job.steps, job.lr, label, nan_at_step)
        final = sum(losses[-20:]) / max(1, len(losses[-20:]))
        log.info("%s: final loss %.4f", label, final)
        save_checkpoint(model, path, {"job": json.loads(json.dumps(dataclasses.asdict(job))), "final_loss": final})
        return model, key

    if t.init == "scratch":
        job = TrainJob(spec, mechanism, mech_options, t.steps, t.lr, None)
        return obtain(job, f"{mechanism} (scratch)", None, cfg.inject_nan_at_step, mechanism_shape)
    torch.manual_seed(t.seed)
    base_job = TrainJob(spec, "full", {}, t.base_steps, t.base_lr, None)
    base, base_key = obtain(base_job, "base (full attention)", None)
    job = TrainJob(spec, mechanism, mech_options, t.steps, t.lr, base_key)
    return obtain(job, f"{mechanism} (from base)", base.state_dict(), cfg.inject_nan_at_step, mechanism_shape)
