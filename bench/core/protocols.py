"""The two interfaces tasks are written against (docs/design.md): a tokenizer, and a language model that carries
memory across the chunks it is fed. Tasks import these and nothing from the models layer, so a task runs on any
model that meets them: our backbone, a Hugging Face model, a RAG wrapper, or a user's own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Tokenizer(Protocol):
    name: str  # "byte", "bpe", "hf", ...: part of the model's label in records
    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    fingerprint: str  # changes whenever the id mapping does: part of every checkpoint and data key

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


@runtime_checkable
class LongContextLM(Protocol):
    """What a task scores. Every call streams its tokens chunk by chunk carrying the model's state, so a task
    measures what the mechanism remembers, never a re-read of the context."""

    tokenizer: Tokenizer

    def loglikelihood(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """Summed log-probability of `continuation` after `context`, and whether greedy decoding yields it."""
        ...

    def rolling_nll(self, tokens: list[int]) -> Tensor:
        """Per-token NLL of `tokens` (each predicted from <bos> and everything before it), memory carried."""
        ...

    def generate(self, context: list[int], max_new_tokens: int, stop: list[int] | None = None) -> list[int]:
        """Greedy continuation of `context`, stopping at any id in `stop` or end-of-sequence."""
        ...

    def generate_batch(self, contexts: list[list[int]], max_new_tokens: int, stop: list[int] | None = None
                       ) -> list[list[int]]:
        """`generate` for several contexts at once (a model may batch those of equal length)."""
        ...

    def state_bytes_after(self, n_tokens: int) -> int:
        """Bytes the model carries after streaming `n_tokens`: the memory cost the records report."""
        ...


@runtime_checkable
class TrainableLM(LongContextLM, Protocol):
    """A LongContextLM whose weights can be trained at test time: what a memory in the weights (`weights_lora`)
    needs from its reader, beyond reading."""

    model: nn.Module  # the module adapters attach to
    adapter_targets: list[str] | None  # names of the linear layers LoRA attaches to (None: peft's default for it)

    def token_loss(self, rows: Tensor) -> Tensor:
        """Mean next-token NLL over rows (B, T) of token ids, each row predicting its tokens 1.. from those before;
        differentiable."""
        ...
