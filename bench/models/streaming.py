"""`LongContextLM` (docs/design.md) over the backbone: every call streams tokens chunk by chunk, carrying the
per-layer states, so what a task measures is what the mechanism remembers — never a re-read of the context."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.protocols import LongContextLM, Tokenizer  # noqa: F401  (LongContextLM: what this implements)
from bench.models.backbone import Backbone


class StreamingLM:
    """Backbone + tokenizer; `chunk_size` is how many tokens one forward call sees (the memory boundary)."""

    adapter_targets: list[str] | None = ["qkv", "out"]  # the mixers' attention projections (TrainableLM)

    def __init__(self, model: Backbone, tokenizer: Tokenizer, chunk_size: int = 512) -> None:
        self.model, self.tokenizer, self.chunk_size = model.eval(), tokenizer, chunk_size

    def token_loss(self, rows: Tensor) -> Tensor:
        """Mean next-token NLL of rows (B, T), with gradients (TrainableLM: test-time training)."""
        logits, _ = self.model(rows[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten())

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @torch.no_grad()
    def _stream(self, tokens: Tensor, states=None, start: int = 0) -> tuple[Tensor, list, int]:
        """Feed tokens (B, T) in chunks; returns logits (B, T, V), states and the next position."""
        logits = []
        for i in range(0, tokens.shape[1], self.chunk_size):
            out, states = self.model(tokens[:, i : i + self.chunk_size], states, start + i)
            logits.append(out)
        return torch.cat(logits, dim=1), states, start + tokens.shape[1]

    @torch.no_grad()
    def _prefill(self, ids: Tensor) -> tuple[Tensor, Any, int]:
        """`_stream(ids)` for prompts of equal length, with the prefix that every row shares (passkey prompts share
        all the filler before the needle) streamed once at batch 1 and its states repeated to every row. Chunking
        never changes a mechanism's outputs (the contract), so this is the batched stream to float tolerance
        (tested for every mechanism); the logits returned cover the unshared positions only (at least the last)."""
        rows, length = ids.shape
        agree = (ids == ids[:1]).all(dim=0).long()
        shared = min(int(agree.cumprod(dim=0).sum()), length - 1)
        if rows == 1 or shared == 0:
            return self._stream(ids)
        _, states, pos = self._stream(ids[:1, :shared])
        return self._stream(ids[:, shared:], self._repeat_states(states, rows), pos)

    def _repeat_states(self, states: Any, rows: int) -> Any:
        return self.model.repeat_states(states, rows)

    def rolling_nll(self, tokens: list[int]) -> Tensor:
        """Per-token NLL (len(tokens),), each token predicted from <bos> + everything before it."""
        ids = torch.tensor([[self.tokenizer.bos_id, *tokens]], device=self.device)
        logits, _, _ = self._stream(ids[:, :-1])
        return F.cross_entropy(logits[0].float(), ids[0, 1:], reduction="none").cpu()

    def loglikelihood(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Summed log-probability of `continuation` after `context`, and whether greedy decoding produces it."""
        ids = torch.tensor([[self.tokenizer.bos_id, *context, *continuation]], device=self.device)
        logits, _, _ = self._stream(ids[:, :-1])
        cont_logits, targets = logits[0, len(context) :].float(), ids[0, len(context) + 1 :]
        nll = F.cross_entropy(cont_logits, targets, reduction="sum")
        return -float(nll), bool((cont_logits.argmax(-1) == targets).all())

    @torch.no_grad()
    def state_bytes_after(self, n_tokens: int) -> int:
        """Bytes the model carries after streaming `n_tokens` (batch 1): the memory cost at that length."""
        ids = torch.full((1, n_tokens), self.tokenizer.bos_id, device=self.device)
        _, states, _ = self._stream(ids)
        return self.model.state_nbytes(states)

    def generate(self, context: list[int], max_new_tokens: int, stop: list[int] | None = None) -> list[int]:
        return self.generate_batch([context], max_new_tokens, stop)[0]

    @torch.no_grad()
    def generate_batch(
        self, contexts: list[list[int]], max_new_tokens: int, stop: list[int] | None = None
    ) -> list[list[int]]:
        """Greedy decoding, one token at a time through the carried states. Contexts of equal length run as one
        batch; others fall back to one at a time."""
        if len({len(c) for c in contexts}) > 1:
            return [self.generate_batch([c], max_new_tokens, stop)[0] for c in contexts]
        stop_set = set(stop or []) | {self.tokenizer.eos_id}
        ids = torch.tensor([[self.tokenizer.bos_id, *c] for c in contexts], device=self.device)
        logits, states, pos = self._prefill(ids)
        outputs: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            for i, tok in enumerate(nxt.tolist()):
                if not done[i]:
                    if tok in stop_set:
                        done[i] = True
                    else:
                        outputs[i].append(tok)
            if all(done):
                break
            logits, states, pos = self._stream(nxt[:, None], states, pos)
        return outputs
