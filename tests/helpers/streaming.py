"""Shared test helper: feed a sequence through one mechanism in given chunk sizes, carrying its state."""

import torch


def stream(m, x, sizes, start=0):
    """Outputs for x (B, T, D) fed in chunks of `sizes` (summing to T) from absolute position `start`, and the
    final state."""
    assert sum(sizes) == x.shape[1]
    state, outs, p = m.init_state(x.shape[0], x.device, x.dtype), [], 0
    for size in sizes:
        y, state = m(x[:, p : p + size], state, torch.arange(start + p, start + p + size, device=x.device))
        outs.append(y)
        p += size
    return torch.cat(outs, dim=1), state
