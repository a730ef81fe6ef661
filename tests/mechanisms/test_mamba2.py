"""Mamba-2 (SSD): the chunked form equals the literal state-space recurrence in float64, the recurrence is
flash-linear-attention's naive simple-GLA recurrence (the SSD of the paper's duality) on the same inputs, and the
layer's two forms agree in any chunking. Chunking invariance, causality and bounded state: test_invariants.py."""

import pytest
import torch

from mechanisms.gated_deltanet import chunked_delta_rule, recurrent_delta_rule
from tests.helpers.recurrences import assert_forms_agree_and_train, fla_layout, fla_naive


def ssd_inputs(t=23, n=5, p=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h = 2, 3
    c = torch.randn(b, h, t, n, generator=g, dtype=torch.float64)
    bb = torch.randn(b, h, t, n, generator=g, dtype=torch.float64)
    x = torch.randn(b, h, t, p, generator=g, dtype=torch.float64)
    dt = torch.rand(b, h, t, generator=g, dtype=torch.float64) * 0.5
    log_decay = -torch.rand(b, h, t, generator=g, dtype=torch.float64)
    state = torch.randn(b, h, n, p, generator=g, dtype=torch.float64)
    return c, bb, x, dt, log_decay, state


def literal_ssd(c, b, x, dt, log_decay, state):
    """h_t = exp(dt A) h_{t-1} + dt_t B_t x_t^T, y_t = h_t^T C_t, written out token by token."""
    ys = []
    for t in range(c.shape[2]):
        state = log_decay[:, :, t].exp()[..., None, None] * state + dt[:, :, t, None, None] * (
            b[:, :, t].unsqueeze(-1) * x[:, :, t].unsqueeze(-2))
        ys.append(torch.einsum("bhn,bhnp->bhp", c[:, :, t], state))
    return torch.stack(ys, 2), state


@pytest.mark.parametrize("chunk", [1, 5, 23, 64])
def test_chunked_and_recurrent_forms_equal_the_literal_recurrence(chunk):
    args = ssd_inputs()
    expected, expected_state = literal_ssd(*args)
    for got, state in (recurrent_delta_rule(*args, delta=False), chunked_delta_rule(*args, chunk, delta=False)):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(state, expected_state, atol=1e-12, rtol=0)


def test_the_recurrence_is_flash_linear_attentions_simple_gla():
    """fla-core's `naive_recurrent_simple_gla` (S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t) with k = dt B."""
    naive = fla_naive("simple_gla")
    c, b, x, dt, log_decay, state = ssd_inputs(t=17)
    ours, our_state = recurrent_delta_rule(c, b, x, dt, log_decay, state, delta=False)
    theirs, their_state = naive.naive_recurrent_simple_gla(
        fla_layout(c), fla_layout(b * dt.unsqueeze(-1)), fla_layout(x), fla_layout(log_decay), scale=1.0,
        initial_state=state.float(), output_final_state=True)
    torch.testing.assert_close(ours.float(), theirs.transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_state.float(), their_state, atol=1e-5, rtol=1e-5)


def test_the_layers_two_forms_agree_in_any_chunking_and_train():
    assert_forms_agree_and_train("mamba2")
