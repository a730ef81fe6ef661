"""TransformerFAM (Hwang et al. 2024, arXiv 2404.09173): Block Sliding Window Attention plus F feedback-memory
(FAM) tokens per layer that compress each block and carry it forward; `bswa` is the paper's baseline with F = 0.

Block Sliding Window Attention (BSWA): the sequence is cut into blocks of b tokens aligned to absolute positions
(block τ holds positions [τb, (τ+1)b)). A token attends to the m previous blocks in full and causally to its own
block — so it sees between m·b + 1 and (m+1)·b keys.

FAM, per layer, with no new projection weights (the layer's own norm, Q/K/V/O and feed-forward):
    block tokens of block τ attend  [m previous blocks, F_{τ-1}, causal current block]
    FAM queries (from F_{τ-1}) attend [F_{τ-1}, the whole current block]         -> attention output O_F
    A_F = F_{τ-1} + O_F          (zero residual on the first update: A_F = O_F for block 0)
    F_τ = FF(LN(A_F)) + A_F      (the block's own pre-FF norm and feed-forward)
F_{-1}, read by block 0, is a learned embedding. FAM lives in the residual stream, like the block's tokens, and is
normalised by the block's pre-attention norm before projection. Positions (RoPE): the FAM compressed from block τ
takes the positions of block τ's last F tokens, [(τ+1)b - F, (τ+1)b), so the FAM read by block τ always sits at
[τb - F, τb) (negative for the learned initial FAM) and the FAM queries updating it sit at [(τ+1)b - F, (τ+1)b).

The FAM update needs the block's norm and feed-forward, which the backbone hands over through `bind_block`.
Streaming state: (FAM, ring of the m previous blocks' rotated K/V, the current partial block's K/V in a b-slot
buffer), the same size at any length. The FAM recurrence runs block by block (cheap: F queries); the block tokens'
attention then runs for all blocks of a chunk at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.errors import ConfigError
from mechanisms.base import Mechanism, MechanismOptions
from mechanisms.full import merge_heads, split_heads
from mechanisms.registry import register
from mechanisms.rope import apply_rope, rope_angles, rotate


def blocks_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float | None = None) -> Tensor:
    """Attention of every block's queries over its own keys: q (B, H, NB, Bq, D), k/v (B, H, NB, S, D), mask
    (NB, Bq, S). SDPA's fused kernels take 4-D inputs only (a 5-D call falls back to the unfused math path, several
    times slower), so the blocks become extra heads."""
    bsz, h, nb, bq, _ = q.shape
    span = k.shape[3]
    y = F.scaled_dot_product_attention(
        q.reshape(bsz, h * nb, bq, -1), k.reshape(bsz, h * nb, span, -1), v.reshape(bsz, h * nb, span, -1),
        attn_mask=mask.unsqueeze(0).expand(h, -1, -1, -1).reshape(1, h * nb, bq, span), scale=scale)
    return y.view(bsz, h, nb, bq, -1)


@dataclasses.dataclass
class FAMState:
    fam: Tensor  # (B, F, D) the FAM the current block reads, in the residual stream
    k: Tensor  # (B, H, m*b, Dh) rotated keys of the m previous blocks, oldest first (zeros before block 0)
    v: Tensor
    block_k: Tensor  # (B, H, b, Dh) rotated keys of the current partial block (slots past its fill unused)
    block_v: Tensor


@dataclasses.dataclass
class FAMOptions(MechanismOptions):
    block: int = 32  # b
    mem_blocks: int = 1  # m: previous blocks visible in full
    fam_tokens: int = 4  # F; 0 = plain BSWA
    rope_base: float = 10000.0

    def validate(self) -> None:
        if self.block < 1:
            raise ConfigError(f"mechanism.block must be >= 1, got {self.block}")
        if self.mem_blocks < 0:
            raise ConfigError(f"mechanism.mem_blocks must be >= 0, got {self.mem_blocks}")
        if not 0 <= self.fam_tokens <= self.block:
            raise ConfigError(f"mechanism.fam_tokens must lie in [0, block={self.block}] (FAM takes the positions "
                              f"of the block's last tokens), got {self.fam_tokens}")

    def memory_unit(self) -> int:
        return self.block


@dataclasses.dataclass
class BSWAOptions(FAMOptions):
    fam_tokens: int = 0

    def validate(self) -> None:
        super().validate()
        if self.fam_tokens != 0:
            raise ConfigError(f"mechanism bswa has no FAM (fam_tokens must be 0, got {self.fam_tokens}); use fam")


@register
class FeedbackAttentionMemory(Mechanism):
    name = "fam"
    hf_support = "lora"
    display_order = 4
    perf_options = {"block": 256, "mem_blocks": 1, "fam_tokens": 16}

    @classmethod
    def span_baseline(cls, options):
        return "bswa", {"block": options.block, "mem_blocks": options.mem_blocks}

    @classmethod
    def same_as(cls, options):
        """With no feedback tokens the layer is BSWA, bit for bit (tests/mechanisms/test_fam.py)."""
        if options.fam_tokens:
            return None
        return "bswa", {k: v for k, v in dataclasses.asdict(options).items() if k != "name"}
    Options = FAMOptions

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, **options) -> None:
        super().__init__(d_model, n_heads, layer_idx, **options)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.fam_init = nn.Parameter(torch.randn(self.options.fam_tokens, d_model) * 0.02)
        self._block_fns: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None = None
        self._share_sum, self._share_count = 0.0, 0
        self._stream_share = [0.0, 0]  # the same, since the last init_state: what a repeated state stands for

    def bind_block(self, pre_norm: Callable[[Tensor], Tensor], feed_forward: Callable[[Tensor], Tensor]) -> None:
        self._block_fns = (pre_norm, feed_forward)  # a tuple, so nn.Module does not register them twice

    def init_state(self, batch_size, device, dtype) -> FAMState:
        h, dh, b, m = self.n_heads, self.head_dim, self.options.block, self.options.mem_blocks
        ring = torch.zeros(batch_size, h, m * b, dh, device=device, dtype=dtype)
        partial = torch.zeros(batch_size, h, b, dh, device=device, dtype=dtype)
        fam = self.fam_init.to(device=device, dtype=dtype).unsqueeze(0).expand(batch_size, -1, -1)
        self._stream_share = [0.0, 0]
        return FAMState(fam, ring, ring.clone(), partial, partial.clone())

    def repeat_state(self, state: FAMState, batch_size: int) -> FAMState:
        """Also counts the attention share of the queries behind the state once per row, as if every row had
        streamed them: a shared prefix read once must not weigh less in `fam_attention_share`."""
        total, count = self._stream_share
        self._share_sum += (batch_size - 1) * total
        self._share_count += (batch_size - 1) * count
        self._stream_share = [batch_size * total, batch_size * count]
        return super().repeat_state(state, batch_size)

    def stats(self) -> dict[str, float]:
        if not self.options.fam_tokens or not self._share_count:
            return {}
        return {"fam_attention_share": self._share_sum / self._share_count}

    # -- the FAM recurrence ------------------------------------------------------------------------------------
    def _fam_qkv(self, fam: Tensor, angles: tuple[Tensor, Tensor], i: int) -> tuple[Tensor, Tensor, Tensor]:
        """Queries and keys/values of the FAM that block cur+i reads; `angles` are the rotations of the FAM
        positions read by blocks cur .. cur+n_blocks (`_fam_angles`): keys sit at row i, queries at row i+1."""
        if self._block_fns is None:
            raise RuntimeError("fam needs its block's norm and feed-forward: call bind_block() (the backbone does)")
        q, k, v = split_heads(self.qkv(self._block_fns[0](fam)), self.n_heads)
        cos, sin = angles
        return rotate(q, cos[i + 1], sin[i + 1]), rotate(k, cos[i], sin[i]), v

    def _fam_angles(self, cur: int, n_blocks: int, device) -> tuple[Tensor, Tensor]:
        """RoPE angles (n_blocks+1, F, Dh) of the FAM read by blocks cur .. cur+n_blocks: positions
        [τb - F, τb) for block τ. Computed once per chunk rather than once per block."""
        b, nf = self.options.block, self.options.fam_tokens
        starts = torch.arange(cur, cur + n_blocks + 1, device=device)[:, None] * b - nf
        positions = (starts + torch.arange(nf, device=device)).flatten()
        cos, sin = rope_angles(positions, self.head_dim, self.options.rope_base)
        return cos.view(n_blocks + 1, nf, -1), sin.view(n_blocks + 1, nf, -1)

    def _fam_update(self, fam, fq, fk, fv, block_k, block_v, block_idx: int) -> Tensor:
        attn = F.scaled_dot_product_attention(fq, torch.cat([fk, block_k], 2), torch.cat([fv, block_v], 2))
        a_f = self.out(merge_heads(attn))
        if block_idx > 0:  # the first update has a zero residual
            a_f = a_f + fam
        return a_f + self._block_fns[1](a_f)

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, state: FAMState, positions: Tensor) -> tuple[Tensor, FAMState]:
        o = self.options
        b, m, nf = o.block, o.mem_blocks, o.fam_tokens
        bsz, t, _ = x.shape
        p0 = int(positions[0])
        cur, filled = divmod(p0, b)
        n_blocks = -(-(filled + t) // b)  # blocks this chunk touches
        n_done = (filled + t) // b  # blocks this chunk completes

        q, k, v = split_heads(self.qkv(x), self.n_heads)
        q, k = apply_rope(q, positions, o.rope_base), apply_rope(k, positions, o.rope_base)
        # key timeline from block cur-m on: ring | partial block | chunk | zero padding to whole blocks (+1 spare)
        pad = (m + n_blocks + 1) * b - (m * b + filled + t)
        tk = F.pad(torch.cat([state.k, state.block_k[:, :, :filled], k], 2), (0, 0, 0, pad))
        tv = F.pad(torch.cat([state.v, state.block_v[:, :, :filled], v], 2), (0, 0, 0, pad))

        fams, fam_k, fam_v = [state.fam], [], []
        angles = self._fam_angles(cur, n_blocks, x.device) if nf else None
        for i in range(n_blocks):
            if nf:
                fq, fk, fv = self._fam_qkv(fams[i], angles, i)
            else:
                fq = fk = fv = q.new_zeros(bsz, self.n_heads, 0, self.head_dim)
            fam_k.append(fk)
            fam_v.append(fv)
            if i < n_done:
                lo = (m + i) * b
                fams.append(fams[i] if not nf else self._fam_update(
                    fams[i], fq, fk, fv, tk[:, :, lo : lo + b], tv[:, :, lo : lo + b], cur + i))

        y = self._block_attention(q, tk, tv, torch.stack(fam_k, 2), torch.stack(fam_v, 2), cur, filled)
        lo = (n_done + m) * b  # new ring: the m blocks before the new current block
        new_state = FAMState(fams[n_done], tk[:, :, lo - m * b : lo], tv[:, :, lo - m * b : lo],
                             tk[:, :, lo : lo + b], tv[:, :, lo : lo + b])
        return self.out(merge_heads(y)), new_state

    def _block_attention(self, q, tk, tv, fk, fv, cur: int, filled: int) -> Tensor:
        """All blocks of the chunk at once: block i's queries see timeline window [i·b, (i+m+1)·b) (masked to
        causal, non-negative positions) plus the FAM it reads. q (B,H,T,Dh); fk/fv (B,H,n_blocks,F,Dh)."""
        b, m = self.options.block, self.options.mem_blocks
        bsz, h, t, dh = q.shape
        n_blocks = fk.shape[2]
        grid = F.pad(q, (0, 0, filled, n_blocks * b - filled - t)).view(bsz, h, n_blocks, b, dh)
        span = (m + 1) * b
        keys = torch.cat([tk[:, :, : (m + n_blocks) * b].unfold(2, span, b).transpose(-1, -2), fk], 3)
        values = torch.cat([tv[:, :, : (m + n_blocks) * b].unfold(2, span, b).transpose(-1, -2), fv], 3)
        block = torch.arange(cur, cur + n_blocks, device=q.device)[:, None, None]
        q_pos = block * b + torch.arange(b, device=q.device)[None, :, None]
        k_pos = (block - m) * b + torch.arange(span, device=q.device)[None, None, :]
        mask = torch.cat([(k_pos <= q_pos) & (k_pos >= 0), q_pos.new_ones(n_blocks, b, fk.shape[3]).bool()], -1)
        nf = fk.shape[3]
        if self.training or not nf:
            y = blocks_attention(grid, keys, values, mask)
        else:  # evaluation also measures the attention mass on FAM keys: one extra value column, 1 on FAM keys,
            # and a zero column on queries and keys so that all three keep one head size (the fused kernels need
            # it) and the scores do not change
            marker = torch.zeros_like(values[..., :1])
            marker[..., -nf:, :] = 1.0
            y = blocks_attention(F.pad(grid, (0, 1)), F.pad(keys, (0, 1)), torch.cat([values, marker], -1), mask,
                                 scale=dh**-0.5)
            share = y[..., -1].flatten(2, 3)[:, :, filled : filled + t]  # (B, H, T) real queries
            total, count = float(share.sum()), share.numel()
            self._share_sum += total
            self._share_count += count
            self._stream_share = [self._stream_share[0] + total, self._stream_share[1] + count]
            y = y[..., :-1]
        return y.reshape(bsz, h, n_blocks * b, dh)[:, :, filled : filled + t]


@register
class BlockSlidingWindow(FeedbackAttentionMemory):
    """BSWA, the TransformerFAM paper's baseline: the same layer with no FAM (F = 0)."""

    name = "bswa"
    Options = BSWAOptions
    display_order = 3
    perf_options = {"block": 256, "mem_blocks": 1}

    @classmethod
    def span_baseline(cls, options):
        return None  # it is the baseline

    @classmethod
    def same_as(cls, options):
        return None  # it is only itself

    @classmethod
    def reference_mask(cls, options, length, device):
        """Causal inside the query's block, plus the `mem_blocks` blocks before it."""
        i = torch.arange(length, device=device)[:, None]
        j = torch.arange(length, device=device)[None, :]
        return (j <= i) & (j // options.block >= i // options.block - options.mem_blocks)
