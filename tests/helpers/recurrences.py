"""Shared checks of the recurrent mechanisms with a chunked and a recurrent form (Gated DeltaNet, Mamba-2), and the
outside references they are held to: flash-linear-attention's pure-PyTorch naive files (fla-core, a test-only
extra), loaded from their files because the package itself imports triton."""

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

from tests.helpers.mechanism_cases import build
from tests.helpers.streaming import stream


def fla_naive(op: str) -> ModuleType:
    """fla-core's `fla/ops/<op>/naive.py` as a module (only torch and einops are imported there)."""
    root = Path(importlib.util.find_spec("fla").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(f"fla_naive_{op}", root / "ops" / op / "naive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fla_layout(t: torch.Tensor) -> torch.Tensor:
    """Ours (B, H, T, ...) -> fla's (B, T, H, ...), float32."""
    return t.transpose(1, 2).contiguous().float()


def assert_forms_agree_and_train(name: str, d_model: int = 32, n_heads: int = 4) -> None:
    """The layer's chunked form equals its recurrent form (same weights, float64) in any chunking, and a loss on
    its outputs reaches every parameter it owns."""
    chunked = build(name, {"chunk": 8}, d_model, n_heads, torch.float64)
    recurrent = build(name, {"chunk": 8, "form": "recurrent"}, d_model, n_heads, torch.float64)
    recurrent.load_state_dict(chunked.state_dict())
    x = torch.randn(2, 41, d_model, dtype=torch.float64)
    expected = stream(recurrent, x, [41])[0]
    for sizes in ([41], [3, 17, 1, 20]):
        torch.testing.assert_close(stream(chunked, x, sizes)[0], expected, atol=1e-10, rtol=0)
    stream(chunked, x, [41])[0].square().sum().backward()
    own = [(n, p) for n, p in chunked.named_parameters() if not n.startswith("block_parts")]  # not the helper's block
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in own), [n for n, p in own if p.grad is None]
