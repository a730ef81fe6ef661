"""The CUDA path computes what the CPU path computes, for every per-layer mechanism in the registry: same weights,
same inputs, streamed in unaligned chunks (so cached-chunk paths run), outputs and gradients compared. Skipped
without CUDA; the suite's CPU tests cannot see a kernel choice or a device mix-up that only CUDA takes."""

import pytest
import torch

from tests.helpers.mechanism_cases import build, cases, memory_unit, params
from tests.helpers.streaming import stream

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
D, H = 32, 4


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 matmuls would differ from the CPU by ~1e-3 by design, not by a bug."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("name,opts", params(cases()))
def test_cuda_matches_cpu(name, opts):
    total = max(60, 3 * memory_unit(name, opts) + 7)
    sizes = [5, 17, 1, total - 23]
    cpu = build(name, opts, D, H, torch.float32, 0)
    gpu = build(name, opts, D, H, torch.float32, 0).cuda()
    x = torch.randn(2, total, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the streaming (evaluation) path
        torch.testing.assert_close(stream(gpu, x.cuda(), sizes)[0].cpu(), stream(cpu, x, sizes)[0],
                                   atol=2e-5, rtol=1e-4)
    # the training path: whole sequence, gradients to every parameter
    stream(cpu, x, [total])[0].square().sum().backward()
    stream(gpu, x.cuda(), [total])[0].square().sum().backward()
    for (param_name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        if p_cpu.grad is None:
            assert p_gpu.grad is None, param_name
            continue
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-4, rtol=1e-3, msg=param_name)
