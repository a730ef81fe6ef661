"""The optimisation loop: AdamW with warm-up + cosine decay over a short-to-long length curriculum, on batches from
a `Mixture`. Models are anything with our backbone's interface (`forward(tokens) -> logits, states`)."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.core.errors import ConfigError
from bench.core.precision import autocast
from bench.training.mixture import Mixture, min_training_length
from bench.training.prefetch import Ahead
from mechanisms.base import Mechanism

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Loss became NaN/inf; the message names mechanism, step and loss."""


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


def batches(mixture: Mixture, cfg: Any, steps: int, min_len: int
            ) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """(length, (inputs, targets, weights)) of every step in order: the curriculum's length, then its batch."""
    length_rng = random.Random(f"lengths:{cfg.seed}")
    for step in range(steps):
        length = curriculum_length(
            step, steps, min_len, cfg.train_length, cfg.curriculum_start, cfg.curriculum_floor, length_rng
        )
        yield length, mixture.batch(cfg.batch_size, length)


def lr_at(step: int, steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def param_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
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


def train(model: nn.Module, mixture: Mixture, cfg: Any, steps: int, lr: float, desc: str,
          nan_at_step: int | None = None) -> list[float]:
    """Run `steps` optimizer steps in place; returns the loss curve. Raises TrainingDiverged on NaN/inf
    (`nan_at_step` injects one, to exercise that path end to end)."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, lr), lr=lr, betas=(0.9, 0.95))
    min_len = min_training_length(mixture.tasks.values())
    if cfg.train_length < min_len:
        raise ConfigError(f"train.train_length={cfg.train_length} is shorter than the tasks need ({min_len})")
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True, disable=None)
    with Ahead(batches(mixture, cfg, steps, min_len)) as stream:  # the next batches are drawn during this step
        for step, (length, batch) in zip(bar, stream, strict=True):
            x, y, w = (t.to(device) for t in batch)
            for group in opt.param_groups:
                group["lr"] = group["lr_mult"] * lr_at(step, steps, lr, cfg.warmup_steps, cfg.min_lr_ratio)
            with autocast(cfg.precision, device):
                logits, _ = model(x)
            per_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                        reduction="none")
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
