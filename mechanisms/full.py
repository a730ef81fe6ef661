"""Full causal softmax attention with RoPE; its state is the whole KV cache, so memory grows with context."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechanisms.base import Mechanism, MechanismOptions
from mechanisms.registry import register
from mechanisms.rope import apply_rope


@dataclasses.dataclass
class KVCache:
    k: Tensor  # (B, H, S, head_dim), keys already rotated at their absolute positions
    v: Tensor


@dataclasses.dataclass
class FullOptions(MechanismOptions):
    rope_base: float = 10000.0


@register
class FullAttention(Mechanism):
    name = "full"
    Options = FullOptions
    bounded_state = False  # the KV cache grows with every token
    hf_support = "training_free"
    display_order = 0

    @classmethod
    def reference_mask(cls, options, length, device):
        i = torch.arange(length, device=device)
        return i[None, :] <= i[:, None]

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def init_state(self, batch_size, device, dtype) -> KVCache:
        empty = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty.clone())

    def forward(self, x: Tensor, state: KVCache, positions: Tensor) -> tuple[Tensor, KVCache]:
        q, k, v = split_heads(self.qkv(x), self.n_heads)
        q = apply_rope(q, positions, self.options.rope_base)
        k = apply_rope(k, positions, self.options.rope_base)
        k_all, v_all = torch.cat([state.k, k], dim=2), torch.cat([state.v, v], dim=2)
        past = state.k.shape[2]
        if past == 0:
            y = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        else:  # queries sit after `past` cached keys: causal mask aligned bottom-right
            t = x.shape[1]
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        return self.out(merge_heads(y)), KVCache(k_all, v_all)


def split_heads(qkv: Tensor, n_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, T, 3D) -> three (B, H, T, D/H) tensors."""
    b, t, three_d = qkv.shape
    head_dim = three_d // (3 * n_heads)
    return qkv.view(b, t, 3, n_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(y: Tensor) -> Tensor:
    """(B, H, T, Dh) -> (B, T, H*Dh); transpose before reshape (a reshape alone mixes time and heads)."""
    b, h, t, dh = y.shape
    return y.transpose(1, 2).reshape(b, t, h * dh)
