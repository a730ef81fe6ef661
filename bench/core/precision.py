"""Training precisions (`train.precision`): the dtype the forward pass autocasts to, None for plain float32.

Mixed precision in the usual sense: parameters, optimizer state, gradients and the loss stay float32; matmuls and
attention run in the lower precision. Only bfloat16 is offered: float16 would need loss scaling to train."""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the training forward pass runs in."""
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
