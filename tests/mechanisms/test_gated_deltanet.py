"""Gated DeltaNet: the chunked (WY) form equals the literal token recurrence in float64 for any block size and
starting state, the recurrence equals flash-linear-attention's naive reference (fla-core, a test-only extra), and
the layer's two forms agree. Chunking invariance, causality and bounded state come from test_invariants.py."""

import importlib.util
from pathlib import Path

import pytest
import torch

from mechanisms.gated_deltanet import chunked_delta_rule, recurrent_delta_rule
from tests.helpers.mechanism_cases import build
from tests.helpers.streaming import stream


def inputs(t=23, dk=5, dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h = 2, 3
    q = torch.randn(b, h, t, dk, generator=g, dtype=torch.float64) / dk**0.5
    k = torch.nn.functional.normalize(torch.randn(b, h, t, dk, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(b, h, t, dv, generator=g, dtype=torch.float64)
    beta = torch.rand(b, h, t, generator=g, dtype=torch.float64)
    log_alpha = -torch.rand(b, h, t, generator=g, dtype=torch.float64)
    memory = torch.randn(b, h, dk, dv, generator=g, dtype=torch.float64)
    return q, k, v, beta, log_alpha, memory


@pytest.mark.parametrize("chunk", [1, 4, 8, 23, 64])
def test_chunked_form_equals_the_token_recurrence(chunk):
    args = inputs()
    expected, expected_memory = recurrent_delta_rule(*args)
    got, memory = chunked_delta_rule(*args, chunk)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(memory, expected_memory, atol=1e-12, rtol=0)


def test_the_recurrence_is_the_gated_delta_rule_of_flash_linear_attention():
    """fla-core's `naive_recurrent_gated_delta_rule` (pure PyTorch; loaded from its file, since the package itself
    imports triton): same q, k, v, beta, log-decay and initial state, its (B, T, H, D) layout."""
    spec = importlib.util.find_spec("fla")
    path = Path(spec.submodule_search_locations[0]) / "ops" / "gated_delta_rule" / "naive.py"
    module_spec = importlib.util.spec_from_file_location("fla_gated_delta_naive", path)
    naive = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(naive)
    q, k, v, beta, log_alpha, memory = inputs(t=17)
    ours, our_memory = recurrent_delta_rule(q, k, v, beta, log_alpha, memory)
    def layout(x):
        return x.transpose(1, 2).contiguous()

    theirs, their_memory = naive.naive_recurrent_gated_delta_rule(
        layout(q), layout(k), layout(v), layout(beta), layout(log_alpha), scale=1.0,
        initial_state=memory, output_final_state=True)
    torch.testing.assert_close(ours.float(), theirs.transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_memory.float(), their_memory, atol=1e-5, rtol=1e-5)


def test_the_layers_two_forms_agree_in_any_chunking():
    D, H = 32, 4
    chunked = build("gated_deltanet", {"chunk": 8}, D, H, torch.float64)
    recurrent = build("gated_deltanet", {"chunk": 8, "form": "recurrent"}, D, H, torch.float64)
    recurrent.load_state_dict(chunked.state_dict())
    x = torch.randn(2, 41, D, dtype=torch.float64)
    expected = stream(recurrent, x, [41])[0]
    for sizes in ([41], [3, 17, 1, 20]):
        torch.testing.assert_close(stream(chunked, x, sizes)[0], expected, atol=1e-10, rtol=0)


def test_gradients_reach_every_parameter():
    m = build("gated_deltanet", {"chunk": 8}, 32, 4)
    stream(m, torch.randn(2, 30, 32), [30])[0].square().sum().backward()
    own = [(n, p) for n, p in m.named_parameters() if not n.startswith("block_parts")]  # the helper's block
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in own), [n for n, p in own if p.grad is None]
