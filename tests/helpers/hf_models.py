"""Tiny Hugging Face models built from a config and saved to a folder, offline: stand-ins for hub models."""

from pathlib import Path

import torch

from bench.models.tokenizers import BPETokenizer
from tasks.passkey import PasskeyTask


def save_tiny(kind: str, folder: Path, sliding_window: int | None = None, seed: int = 0) -> Path:
    """A 2-layer `llama` or `mistral` with random weights and a small BPE tokenizer, saved with save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    bpe = BPETokenizer.train(PasskeyTask.tokenizer_texts(), 300)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tok, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>")
    common = dict(vocab_size=bpe.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=bpe.bos_id, eos_token_id=bpe.eos_id, pad_token_id=bpe.pad_id)
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=sliding_window))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
