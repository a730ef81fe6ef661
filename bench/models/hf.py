"""Pretrained Hugging Face causal LMs (`model=hf model.path=<folder or hub id>`) behind the same `LongContextLM`
contract as our backbone, with the mechanisms applied as training-free adapters:

How a mechanism runs here is its class's `hf_support` (mechanisms/base.py; the harness's factory reads it):

- `full`: the model as it is, streamed chunk by chunk through its KV cache.
- `sliding_window` (+ `sinks`): every query sees the last `window` keys including itself (plus the first `sinks`
  tokens), the convention of our own mechanism and of transformers' Mistral. It is imposed by an explicit 4-D
  mask per chunk and by evicting older keys from the cache after each chunk, so the carried state is bounded.
  Keys keep the absolute positions they were rotated with when cached (Mistral's convention), so the adapter is
  checked against transformers' native Mistral sliding window on the same weights
  (tests/integrations/test_hf_models.py).
- `rag`, `rag_dense`: retrieval in front of this model as the reader.
- `infini`, `fam`, `bswa`: the mechanism replaces each layer's attention (with the layer's own projection weights)
  and is trained with LoRA on the training mixture (bench/models/hf_mechanisms.py).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.errors import ConfigError, one_line
from bench.models.streaming import StreamingLM

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFTokenizer:
    """A transformers tokenizer with our tokenizer interface (ids without special tokens; bos/eos/pad ids)."""

    name = "hf"

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ConfigError(f"the tokenizer of {tokenizer.name_or_path} has no end-of-sequence token")
        self.vocab_size = len(tokenizer)
        vocab = sorted(tokenizer.get_vocab().items())
        self.fingerprint = "hf-" + hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(path: str) -> HFTokenizer:
    from transformers import AutoTokenizer

    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(path))
    except OSError as e:  # not a folder, not in the cache, offline
        raise ConfigError(f"model.path={path}: cannot load its tokenizer ({one_line(e)})") from None


def load_model(path: str, device: str = "cpu", dtype: str = "float32") -> Any:
    """The model in eval mode with SDPA attention; a hub id needs HF_HUB_OFFLINE=0 or a warm cache."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation="sdpa")
    except OSError as e:
        raise ConfigError(f"model.path={path}: cannot load a causal LM ({one_line(e)})") from None
    return model.to(device).eval()


def _crop(cache: Any, keep: Tensor) -> None:
    """Keep only the cached keys/values at indices `keep` (along the sequence axis) in every layer."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, keep)
        layer.values = layer.values.index_select(-2, keep)


class HFStreamingLM(StreamingLM):
    """StreamingLM over a transformers model; the state carried between chunks is (KV cache, cached positions)."""

    adapter_targets = None  # peft's LoRA targets for the architecture (TrainableLM)

    def __init__(self, model: Any, tokenizer: HFTokenizer, chunk_size: int = 512, window: int | None = None,
                 sinks: int = 0) -> None:
        self.model, self.tokenizer, self.chunk_size = model.eval(), tokenizer, chunk_size
        self.window, self.sinks = window, sinks

    def token_loss(self, rows: Tensor) -> Tensor:
        logits = self.model(input_ids=rows[:, :-1]).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _mask(self, query_pos: Tensor, key_pos: Tensor, batch: int) -> Tensor:
        """Additive (B, 1, T, K) mask: 0 where the query may attend the key, the dtype's minimum elsewhere."""
        allowed = key_pos[None, :] <= query_pos[:, None]
        allowed &= (query_pos[:, None] - key_pos[None, :] < self.window) | (key_pos[None, :] < self.sinks)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None].expand(batch, 1, -1, -1)

    @torch.no_grad()
    def _stream(self, tokens: Tensor, states=None, start: int = 0) -> tuple[Tensor, Any, int]:
        from transformers import DynamicCache

        cache, cached_pos = states if states is not None else (DynamicCache(), tokens.new_zeros(0))
        batch, logits = tokens.shape[0], []
        for i in range(0, tokens.shape[1], self.chunk_size):
            chunk = tokens[:, i : i + self.chunk_size]
            pos = torch.arange(start + i, start + i + chunk.shape[1], device=tokens.device)
            kwargs: dict[str, Any] = {"position_ids": pos[None].expand(batch, -1)}
            if self.window is not None:
                key_pos = torch.cat([cached_pos, pos])
                kwargs["attention_mask"] = self._mask(pos, key_pos, batch)
            out = self.model(input_ids=chunk, past_key_values=cache, use_cache=True, **kwargs)
            cache, cached_pos = out.past_key_values, torch.cat([cached_pos, pos])
            if self.window is not None:  # evict what no later query can see: keep sinks + the last window - 1
                keep = ((cached_pos < self.sinks) | (cached_pos > pos[-1] + 1 - self.window)).nonzero().squeeze(-1)
                _crop(cache, keep)
                cached_pos = cached_pos[keep]
            logits.append(out.logits)
        return torch.cat(logits, dim=1), (cache, cached_pos), start + tokens.shape[1]

    def _repeat_states(self, states: Any, rows: int) -> Any:
        cache, cached_pos = states
        cache.batch_repeat_interleave(rows)  # transformers' own: every layer's keys and values, in place
        return cache, cached_pos

    @torch.no_grad()
    def state_bytes_after(self, n_tokens: int) -> int:
        ids = torch.full((1, n_tokens), self.tokenizer.bos_id, device=self.device)
        _, (cache, _), _ = self._stream(ids)
        return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


class NoStats:
    """What `run` asks of a model for introspection: an HF model used as it is has no mechanism statistics."""

    def stats(self) -> dict[str, float]:
        return {}

