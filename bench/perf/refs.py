"""Reference points for `make perf`, not used by the suite itself: naive dense-mask versions of the windowed
mechanisms (what a straightforward implementation does: a T x T mask into SDPA) and the `infini-transformer-pytorch`
peer, built at the default model's size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import mechanisms
from bench.models.backbone import BackboneSpec, Block
from mechanisms.full import merge_heads, split_heads
from mechanisms.rope import apply_rope


def visible(name: str, options: dict[str, Any], length: int, device: torch.device) -> torch.Tensor:
    """(T, T) boolean: may query i attend key j — the mechanism's own `reference_mask`."""
    mask = mechanisms.get(name).reference_mask(mechanisms.options(name, **options), length, device)
    if mask is None:
        raise ValueError(f"no dense-mask reference for {name}")
    return mask


def dense_mask_forward(block: Block, name: str, options: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    """A transformer layer of the windowed mechanism `name` computed the naive way: its own norms, projections and
    feed-forward, attention through a materialised T x T mask built on every call."""
    mixer, length = block.mixer, x.shape[1]
    positions = torch.arange(length, device=x.device)
    q, k, v = split_heads(mixer.qkv(block.norm1(x)), mixer.n_heads)
    q, k = apply_rope(q, positions, mixer.options.rope_base), apply_rope(k, positions, mixer.options.rope_base)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible(name, options, length, x.device))
    h = x + mixer.out(merge_heads(y))
    return h + block.feed_forward(h)


def dense_mask_layer(name: str, options: dict[str, Any], d_model: int, heads: int, length: int,
                     device: torch.device) -> Callable[[], None]:
    spec = BackboneSpec(512, d_model, 1, heads, 3 * d_model)
    block = Block.build(spec, mechanisms.build(name, d_model, heads, **options)).to(device).eval()
    x = torch.randn(1, length, d_model, device=device)

    def run() -> None:
        dense_mask_forward(block, name, options, x)

    return run


def peer_infini_stream(segment: int, model_cfg: Any, length: int, device: torch.device
                       ) -> Callable[[], int] | None:
    """infini-transformer-pytorch at the default model's size (d, depth, heads, head size, FF width), fed one
    segment per call as its own wrapper does; None when the optional package is not installed."""
    try:
        from infini_transformer_pytorch import InfiniTransformer
    except ImportError:
        return None
    m = model_cfg
    model = InfiniTransformer(num_tokens=m.bpe_vocab_size, dim=m.d_model, depth=m.n_layers,
                              dim_head=m.d_model // m.n_heads, heads=m.n_heads,
                              ff_mult=m.mlp_hidden * 3 / (2 * m.d_model)).to(device).eval()
    tokens = torch.randint(0, m.bpe_vocab_size, (1, length), device=device)

    def run() -> int:
        memories = None
        for start in range(0, length, segment):
            logits, _, memories = model(tokens[:, start:start + segment], past_memories=memories,
                                        return_new_memories=True)
            del logits
        return sum(t.numel() * t.element_size() for layer in memories for t in layer)

    return run
