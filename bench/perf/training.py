"""Training step throughput: one optimizer step (forward, backward, clipping, AdamW) of the default model on a
batch of the default training shape, per mechanism and training precision, all interleaved in every repeat.

FLOPs are counted as model FLOPs of full causal attention at that shape (PaLM's convention, causal half):
6 * parameters per token (the tied head counted once, as a matmul) + 6 * layers * d_model * length per token for
the attention scores and values. The share of the same process's fp32 matmul rate says how close a step runs to
what the machine can do; for a windowed mechanism the same count is a reference, not its own work."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.core.precision import autocast
from bench.models.backbone import Backbone, BackboneSpec
from bench.training.loop import param_groups
from bench.training.mixture import training_shape


def model_flops_per_step(spec: BackboneSpec, params: int, batch: int, length: int) -> float:
    return batch * length * (6 * params + 6 * spec.n_layers * spec.d_model * length)


def step_runner(name: str, options: dict, spec: BackboneSpec, train_cfg, precision: str, device: torch.device,
                seed: int) -> tuple[Callable[[], None], float, int]:
    """A closure running one training step, its model FLOPs and its tokens (the mechanism's own training shape)."""
    length, batch = training_shape(train_cfg, {"name": name, **options})
    torch.manual_seed(seed)
    model = Backbone(spec, name, options).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay, train_cfg.lr), lr=train_cfg.lr,
                            betas=(0.9, 0.95))
    tokens = torch.randint(0, spec.vocab_size, (batch, length + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def step() -> None:
        with autocast(precision, device):
            logits, _ = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()

    params = sum(p.numel() for p in model.parameters())
    return step, model_flops_per_step(spec, params, batch, length), batch * length


def time_steps(runners: dict[tuple[str, str], Callable[[], None]], repeats: int,
               sync: Callable[[], None]) -> dict[tuple[str, str], float]:
    """Median seconds per step of each runner, interleaved, after one warm-up step each."""
    for run in runners.values():
        run()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(ts) for key, ts in times.items()}
