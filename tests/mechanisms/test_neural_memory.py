"""Neural memory (Titans / TTT): the chunk's closed-form update equals the paper's token-by-token recurrence in
float64 (hand-derived gradients for the linear memory, autograd for the MLP), a chunk's tokens read only earlier
chunks, and the outer parameters learn through the inner updates. Chunking invariance, causality and bounded state
come from the shared suites (test_invariants.py)."""

import pytest
import torch

from mechanisms.neural_memory import chunk_update, memory_read
from tests.helpers.mechanism_cases import build
from tests.helpers.streaming import stream

D, H = 32, 4


def literal_recurrence(weights, momentum, k, v, gates, step_bound, gradient):
    """The token loop: S_t = eta_t S_{t-1} - (1 - eta_t) theta_t grad l_t(W_0), W_t = (1 - alpha_t) W_{t-1} + S_t,
    every gradient at the chunk's starting weights W_0 (mini-batch gradient descent)."""
    start = weights
    for t in range(k.shape[2]):
        theta = step_bound * torch.sigmoid(gates[:, :, t, 0])[..., None, None]
        eta = torch.sigmoid(gates[:, :, t, 1])[..., None, None]
        alpha = torch.sigmoid(gates[:, :, t, 2])[..., None, None]
        grads = gradient(start, k[:, :, t], v[:, :, t])
        momentum = tuple(eta * s - (1 - eta) * theta * g for s, g in zip(momentum, grads, strict=True))
        weights = tuple((1 - alpha) * w + s for w, s in zip(weights, momentum, strict=True))
    return weights, momentum


def linear_gradient(weights, k, v):
    """grad_W 1/2 ||k W - v||^2 = k^T (k W - v), by hand: the TTT-Linear / delta-rule form."""
    (w,) = weights
    residual = (k.unsqueeze(-2) @ w).squeeze(-2) - v
    return (k.unsqueeze(-1) * residual.unsqueeze(-2),)


def autograd_gradient(weights, k, v):
    """The same gradient for any memory, by autograd on each batch row and head's own loss."""
    leaves = tuple(w.detach().requires_grad_() for w in weights)
    loss = 0.5 * (memory_read(leaves, k.unsqueeze(-2)).squeeze(-2) - v).pow(2).sum()
    return torch.autograd.grad(loss, leaves)


def random_chunk(shapes, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, d = 2, 3, 5
    weights = tuple(torch.randn(b, h, *s, generator=g, dtype=torch.float64) for s in shapes)
    momentum = tuple(0.3 * torch.randn(b, h, *s, generator=g, dtype=torch.float64) for s in shapes)
    k = torch.nn.functional.normalize(torch.randn(b, h, c, d, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(b, h, c, shapes[-1][-1], generator=g, dtype=torch.float64)
    gates = torch.randn(b, h, c, 3, generator=g, dtype=torch.float64)
    return weights, momentum, k, v, gates


@pytest.mark.parametrize("chunks", [1, 4])
def test_linear_update_equals_the_hand_derived_token_recurrence(chunks):
    weights, momentum, *_ = random_chunk([(5, 4)])
    expected_w, expected_s = weights, momentum
    for s in range(chunks):
        _, _, k, v, gates = random_chunk([(5, 4)], seed=s + 1)
        weights, momentum, _ = chunk_update(weights, momentum, k, v, gates, 0.8)
        expected_w, expected_s = literal_recurrence(expected_w, expected_s, k, v, gates, 0.8, linear_gradient)
    torch.testing.assert_close(weights, expected_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(momentum, expected_s, atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunks", [1, 3])
def test_mlp_update_equals_the_token_recurrence_with_autograd_gradients(chunks):
    shapes = [(5, 9), (9, 4)]
    weights, momentum, *_ = random_chunk(shapes)
    expected_w, expected_s = weights, momentum
    for s in range(chunks):
        _, _, k, v, gates = random_chunk(shapes, seed=s + 1)
        weights, momentum, losses = chunk_update(weights, momentum, k, v, gates, 0.3)
        expected_w, expected_s = literal_recurrence(expected_w, expected_s, k, v, gates, 0.3, autograd_gradient)
    torch.testing.assert_close(weights, expected_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(momentum, expected_s, atol=1e-12, rtol=0)


def test_with_no_momentum_and_no_forgetting_the_linear_memory_is_the_delta_rule_on_the_chunk_mean():
    """eta -> 0, alpha -> 0: W_C = W_0 - theta * sum_i k_i^T (k_i W_0 - v_i) (TTT-Linear, one step)."""
    weights, momentum, k, v, gates = random_chunk([(5, 4)])
    gates[..., 0], gates[..., 1], gates[..., 2] = 0.0, -60.0, -60.0  # theta = bound / 2; eta, alpha ~ 1e-26
    (w,), _, _ = chunk_update(weights, momentum, k, v, gates, 0.8)
    (w0,) = weights
    expected = w0 - 0.4 * k.transpose(-1, -2) @ (k @ w0 - v)
    torch.testing.assert_close(w, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("memory", ["linear", "mlp"])
def test_a_chunk_reads_only_earlier_chunks(memory):
    """With a one-token window the output at t is its own token plus the memory read; the memory a chunk reads was
    written by earlier chunks, so changing an earlier token of the *same* chunk changes nothing at t, while changing
    a token of the previous chunk does."""
    m = build("neural_memory", {"chunk": 6, "window": 6, "memory": memory}, D, H, torch.float64)
    m.options.window = 1  # past validation on purpose: isolate the memory path
    x = torch.randn(1, 30, D, dtype=torch.float64)
    t = 22  # chunk 3 holds 18..23
    same_chunk, previous_chunk = x.clone(), x.clone()
    same_chunk[:, 19] += 1.0
    previous_chunk[:, 14] += 1.0
    y = stream(m, x, [30])[0]
    torch.testing.assert_close(stream(m, same_chunk, [30])[0][:, t], y[:, t], atol=0, rtol=0)
    assert not torch.allclose(stream(m, previous_chunk, [30])[0][:, t], y[:, t])


@pytest.mark.parametrize("memory", ["linear", "mlp"])
def test_gradients_reach_the_outer_parameters_through_the_inner_updates(memory):
    """A loss on the last chunk only (which reads the memory written before it) reaches the projections that
    write keys and values, the learning-rate / momentum / forgetting gates and the initial memory."""
    m = build("neural_memory", {"chunk": 6, "window": 6, "memory": memory}, D, H)
    x = torch.randn(2, 24, D)
    y, _ = stream(m, x, [24])
    y[:, 18:].pow(2).sum().backward()
    d = D
    write_k, write_v = m.memory_qkv.weight.grad[d:2 * d], m.memory_qkv.weight.grad[2 * d:]
    gate_rows = m.memory_gates.weight.grad.view(H, 3, D)
    assert write_k.abs().sum() > 0 and write_v.abs().sum() > 0
    for which in range(3):  # theta, eta, alpha
        assert gate_rows[:, which].abs().sum() > 0, which
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.initial_memory)
    assert m.gate.grad.abs().sum() > 0


def test_stats_report_what_the_updates_achieved_on_their_own_chunks():
    m = build("neural_memory", {"chunk": 8, "window": 8, "memory": "linear", "inner_lr": 1.0}, D, H)
    m.eval()
    with torch.no_grad():
        stream(m, torch.randn(1, 64, D), [64])
    stats = m.stats()
    assert 0 < stats["inner_loss_after"] < stats["inner_loss_before"]
    assert 0 < stats["gate_memory_weight"] < 0.1


class Fixed(torch.nn.Module):
    """Stands in for one of titans-pytorch's projections: returns a given tensor (our gates) whatever it is fed."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


@pytest.mark.parametrize("depth", [1, 2])
def test_chunk_update_matches_titans_pytorch_on_the_same_weights_and_inputs(depth):
    """lucidrains' titans-pytorch (a test-only extra) stores a sequence with every per-token gradient at the weights
    the call starts from, then scans momentum and forgetting token by token with chunk_size=1: one of our chunks.
    Its projections are replaced by our keys, values and gates; its loss is mean-over-dim squared error, so its
    learning rate is ours x dim / 2. depth 1 is the linear memory, depth 2 the GELU MLP."""
    from titans_pytorch import NeuralMemory as TitansMemory
    from titans_pytorch.memory_models import MemoryMLP

    torch.manual_seed(0)
    b, c, d, bound = 2, 9, 6, 0.3
    shapes = [(d, d)] if depth == 1 else [(d, 2 * d), (2 * d, d)]
    weights, momentum, *_ = random_chunk(shapes, c=c)
    weights = tuple(w[:, :1].float() for w in weights)  # one head
    momentum = tuple(s[:, :1].float() for s in momentum)
    k = torch.nn.functional.normalize(torch.randn(b, 1, c, d), dim=-1)
    v, gates = torch.randn(b, 1, c, d), torch.randn(b, 1, c, 3)
    ours_w, ours_s, _ = chunk_update(weights, momentum, k, v, gates, bound)

    theirs = TitansMemory(d, chunk_size=1, heads=1, model=MemoryMLP(d, depth, expansion_factor=2.0), momentum=True,
                          pre_rmsnorm=False, qk_rmsnorm=False, mem_model_norm_add_residual=False,
                          qkv_receives_diff_views=True, adaptive_step_transform=lambda lr: lr)
    theirs.to_keys, theirs.to_values = torch.nn.Identity(), torch.nn.Identity()
    # their surprise has no 1 - eta (Titans' formula; ours is an average): it goes into their per-token rate
    rate = bound * torch.sigmoid(gates[:, 0, :, 0]) * torch.sigmoid(-gates[:, 0, :, 1]) * d / 2
    theirs.to_adaptive_step = Fixed(rate)  # (b h) n
    theirs.to_momentum = Fixed(gates[:, 0, :, 1].reshape(1, b, c, 1))  # o (b h) n 1, logits
    theirs.to_decay_factor = Fixed(gates[:, 0, :, 2].reshape(b, c, 1))  # (b h) n 1, logits
    names = theirs.memory_model_parameter_names
    start = {n: w[:, 0] for n, w in zip(names, weights, strict=True)}
    past = (dict(start), {n: s[:, 0].unsqueeze(0) for n, s in zip(names, momentum, strict=True)})
    with torch.no_grad():
        _, state, _ = theirs.store_memories(torch.stack([k[:, 0], v[:, 0]]), weights=start, past_state=past)
    last_update, last_momentum = state.states
    for n, w, s in zip(names, ours_w, ours_s, strict=True):
        torch.testing.assert_close(w[:, 0], last_update[n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s[:, 0], last_momentum[n][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory,momentum", [("linear", 0.9), ("linear", 0.999), ("mlp", 0.999)])
def test_the_memory_stays_bounded_on_long_correlated_inputs(memory, momentum):
    """Inputs sharing one direction make every key alike: the worst case for a summed inner step. At the default
    rates, and with momentum near 1, the weights stay finite and of the order of their start over 4K tokens
    (Titans' undamped momentum reached 1e8 within 2K tokens here)."""
    m = build("neural_memory", {"memory": memory, "momentum_init": momentum}, 64, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4096, 64, generator=g) + 2.0 * torch.randn(1, 1, 64, generator=g)
    with torch.no_grad():
        y, state = stream(m, x, [512] * 8)
    assert torch.isfinite(y).all()
    assert max(w.norm().item() for w in state.weights) < 100
