"""Gated DeltaNet: the chunked (WY) form equals the literal token recurrence in float64 for any block size and
starting state, the recurrence equals flash-linear-attention's naive reference (fla-core, a test-only extra), and
the layer's two forms agree. Chunking invariance, causality and bounded state come from test_invariants.py."""

import pytest
import torch

from mechanisms.gated_deltanet import chunked_delta_rule, recurrent_delta_rule
from tests.helpers.recurrences import assert_forms_agree_and_train, fla_layout, fla_naive


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
    """fla-core's `naive_recurrent_gated_delta_rule`: same q, k, v, beta, log-decay and initial state."""
    naive = fla_naive("gated_delta_rule")
    q, k, v, beta, log_alpha, memory = inputs(t=17)
    ours, our_memory = recurrent_delta_rule(q, k, v, beta, log_alpha, memory)
    theirs, their_memory = naive.naive_recurrent_gated_delta_rule(
        fla_layout(q), fla_layout(k), fla_layout(v), fla_layout(beta), fla_layout(log_alpha), scale=1.0,
        initial_state=memory.float(), output_final_state=True)
    torch.testing.assert_close(ours.float(), theirs.transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_memory.float(), their_memory, atol=1e-5, rtol=1e-5)


def test_the_layers_two_forms_agree_in_any_chunking_and_train():
    assert_forms_agree_and_train("gated_deltanet")
