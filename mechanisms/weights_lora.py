"""Memory in the weights: fine-tune LoRA adapters on the context at test time, then answer without it (PEFT as
memory; dynamic evaluation, Krause et al. 2018, for perplexity). A model-level mechanism, like RAG: it wraps the
sweep's reader model (`reader_mechanism`, the same checkpoint that mechanism's cells use) and is a `LongContextLM`.

Per context (a passkey or long-QA prompt): the adapters are reset to their fresh initialisation (B = 0, so the
reader is unchanged), trained for `steps` Adam steps on next-token loss over the context without its question (the
first `keep_prefix` tokens, the instruction, plus the document), cut into rows of at most `train_window` tokens;
then the reader sees only [instruction + the last `keep_recent` tokens of the document + the question] (the last
`question_tokens` tokens) and answers from what its weights kept. Adapters never carry from one sample to the next.

Perplexity (`rolling_nll`): per document, adapters reset, then every `stride` tokens the next window is scored after
[the last `keep_recent` tokens] with the weights trained on everything before it, and the adapters take `steps`
steps on that window alone (memory accumulates across the document, as dynamic evaluation does; Krause et al. take
one step per segment, here `steps` as for a context, so one setting governs both).
Task cost: each `loglikelihood` or `generate` call adapts anew, so a task that asks several questions of one
context (MQAR's per-query scoring) pays the adaptation once per question.

What this memory costs is recorded with its accuracy (`stats()`): test-time training seconds and a FLOP estimate
per adaptation (one per context; one per window for perplexity), 4 x reader parameters x tokens trained per step
(2 for the forward pass, 2 for the backward pass's activation gradients: the reader's weights are frozen, and the
adapters' own gradients and attention's quadratic term are left out), and the adaptation loss at its first and last
step. Adapters are kept in float32 whatever the reader's dtype (Adam's moments underflow in float16).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bench.core.errors import ConfigError, one_line
from bench.core.protocols import TrainableLM
from mechanisms.base import MechanismOptions, ModelLevel
from mechanisms.registry import register


@dataclasses.dataclass
class WeightsLoRAOptions(MechanismOptions):
    steps: int = 20  # Adam steps per context
    lr: float = 1e-3
    rank: int = 8
    alpha: float = 16.0
    # Module names LoRA attaches to; empty: the reader's own choice (our backbone: the attention projections qkv and
    # out; a Hugging Face model: peft's default targets for its architecture).
    target_modules: list[str] = dataclasses.field(default_factory=list)
    keep_prefix: int = 32  # the instruction stays in the reader's input, as with RAG (rag.py, keep_prefix)
    question_tokens: int = 16  # the context's last tokens: the question, read after adaptation
    keep_recent: int = 0  # document tokens kept before the question (0: the question alone)
    train_window: int = 256  # longest training row (the reader's training length)
    stride: int = 64  # perplexity: tokens scored per adaptation
    init_seed: int = 0  # the adapters' fresh initialisation (LoRA's A), the same for every context

    def validate(self) -> None:
        for key in ("steps", "keep_prefix", "question_tokens", "keep_recent"):
            if getattr(self, key) < 0:
                raise ConfigError(f"mechanism.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("rank", "train_window", "stride"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mechanism.{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"mechanism.lr must be > 0, got {self.lr}")


@register
class WeightsLoRA(ModelLevel):
    name = "weights_lora"
    display_order = 8
    Options = WeightsLoRAOptions
    reader_mechanism = "full"
    bounded_state = True  # the adapters: the same bytes at any length
    compute_options = ("steps", "lr")  # test-time training spent per context; the state is the adapters (rank)

    def __init__(self, reader: Any, **options: Any) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        self.options = self.Options(name=self.name, **options)
        self.options.validate()
        if not isinstance(reader, TrainableLM):
            raise ConfigError(f"mechanism=weights_lora needs a reader it can train; {type(reader).__name__} is not "
                              "a TrainableLM (bench/core/protocols.py)")
        self.reader, self.tokenizer, o = reader, reader.tokenizer, self.options
        targets = list(o.target_modules) or reader.adapter_targets
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.init_seed)
            try:
                inject_adapter_in_model(LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=0.0,
                                                   target_modules=targets), reader.model)
            except ValueError as e:  # peft: no module matched
                raise ConfigError(f"mechanism.target_modules={targets} does not fit the reader: "
                                  f"{one_line(e)}") from None
        self.adapters = {n: p for n, p in reader.model.named_parameters() if "lora_" in n}
        for p in self.adapters.values():  # peft gives them the base layer's dtype; Adam needs float32
            p.data = p.data.float()
        for name, p in reader.model.named_parameters():
            p.requires_grad_(name in self.adapters)
        self.fresh = {n: p.detach().clone() for n, p in self.adapters.items()}
        self.n_params = sum(p.numel() for n, p in reader.model.named_parameters() if n not in self.adapters)
        self.cost = {"adaptations": 0, "seconds": 0.0, "flops": 0.0, "loss_first": 0.0, "loss_last": 0.0}

    # -- the memory: reset, adapt ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Fresh adapters: the same initialisation for every context, nothing carried from the last one."""
        with torch.no_grad():
            for n, p in self.adapters.items():
                p.copy_(self.fresh[n])
        self.optimizer = torch.optim.Adam(self.adapters.values(), lr=self.options.lr)

    def adapt(self, tokens: list[int]) -> None:
        """`steps` steps of next-token loss on `tokens`, in rows of <bos> + at most `train_window` tokens."""
        o = self.options
        if not o.steps or len(tokens) < 1:
            return
        rows = self._rows(tokens)
        started = time.perf_counter()
        with torch.enable_grad():
            for step in range(o.steps):
                loss = self.reader.token_loss(rows)
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if step == 0:
                    self.cost["loss_first"] += loss.item()
                if step == o.steps - 1:
                    self.cost["loss_last"] += loss.item()
        self.cost["seconds"] += time.perf_counter() - started
        self.cost["flops"] += 4.0 * self.n_params * rows[:, 1:].numel() * o.steps
        self.cost["adaptations"] += 1

    def _rows(self, tokens: list[int]) -> Tensor:
        """Equal-length rows covering `tokens`: windows of `train_window` from the start, the last one ending at
        the end (overlapping its predecessor), each led by <bos>."""
        w = min(self.options.train_window, len(tokens))
        starts = list(range(0, len(tokens) - w + 1, w))
        if starts[-1] + w < len(tokens):
            starts.append(len(tokens) - w)
        rows = [[self.tokenizer.bos_id, *tokens[s : s + w]] for s in starts]
        return torch.tensor(rows, device=next(self.reader.model.parameters()).device)

    def _split(self, context: list[int]) -> tuple[list[int], list[int]]:
        """(what the adapters learn: instruction + document, what the reader then sees: instruction + recent +
        question)."""
        o = self.options
        q = min(o.question_tokens, len(context))
        p = min(o.keep_prefix, len(context) - q)
        body = context[: len(context) - q]
        recent = body[max(p, len(body) - o.keep_recent) :] if o.keep_recent else []
        return body, context[:p] + recent + context[len(context) - q :]

    def _memorize(self, context: list[int]) -> list[int]:
        self.reset()
        body, reader_input = self._split(context)
        self.adapt(body)
        return reader_input

    # -- LongContextLM -----------------------------------------------------------------------------------------
    def generate_batch(self, contexts: list[list[int]], max_new_tokens: int, stop: list[int] | None = None):
        """Each context adapted on and answered in turn (seconds each on CPU: a bar shows where a cell stands)."""
        bar = tqdm(contexts, desc=f"weights_lora: adapting to {len(contexts)} contexts", leave=False, disable=None)
        return [self.reader.generate(self._memorize(c), max_new_tokens, stop) for c in bar]

    def generate(self, context: list[int], max_new_tokens: int, stop: list[int] | None = None) -> list[int]:
        return self.generate_batch([context], max_new_tokens, stop)[0]

    def loglikelihood(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        return self.reader.loglikelihood(self._memorize(context), continuation)

    def rolling_nll(self, tokens: list[int]) -> Tensor:
        o = self.options
        self.reset()
        out = []
        for i in range(0, len(tokens), o.stride):
            window = tokens[i : i + o.stride]
            recent = tokens[max(0, i - o.keep_recent) : i] if o.keep_recent else []
            out.append(self.reader.rolling_nll(recent + window)[len(recent) :])
            if i + o.stride < len(tokens):
                self.adapt(window)
        return torch.cat(out) if out else torch.zeros(0)

    def state_bytes_after(self, n_tokens: int) -> int:
        """The adapters, whatever the length (the reader's transient cache for the question is not memory)."""
        return sum(p.numel() * p.element_size() for p in self.adapters.values())

    def stats(self) -> dict[str, float]:
        n = self.cost["adaptations"]
        if not n:
            return {}
        return {"test_time.seconds_per_adaptation": self.cost["seconds"] / n,
                "test_time.flops_per_adaptation": self.cost["flops"] / n,
                "test_time.loss_first_step": self.cost["loss_first"] / n,
                "test_time.loss_last_step": self.cost["loss_last"] / n}
