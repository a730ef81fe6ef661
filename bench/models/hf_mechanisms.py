"""Memory mechanisms inside a pretrained Hugging Face model, by continued training with LoRA — how both memory papers
worked (Infini-attention continually pretrained an LLM; TransformerFAM fine-tuned Flan-PaLM with LoRA).

`MechanismLM` keeps the HF model's embeddings, norms, feed-forward blocks and head, and replaces each layer's
attention with one of our mechanisms whose projections are the layer's own q/k/v/o weights (grouped K/V heads
repeated to full heads, which computes the same thing). It is our backbone's layer stack (`LayerStack`) over the
HF layer's own modules, so the training loop trains it and `StreamingLM` streams it. With mechanism `full` it
reproduces the HF model's logits (tested), which checks the weight mapping.

Training: LoRA adapters (peft) on every mechanism's `qkv` and `out` projections plus the mechanism's own new
parameters (Infini's gates, FAM's initial memory) train on the sweep's training mixture; all pretrained weights
stay frozen. Only the trained tensors are cached, under a hash of the model, mechanism, training config, tokenizer
and corpus. Supported: Llama / Mistral-style decoders (pre-norm `input_layernorm`, `mlp`,
`post_attention_layernorm`) with hidden = heads x head_dim, no attention bias, and plain RoPE.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

import mechanisms
from bench.core.errors import ConfigError
from bench.models.backbone import Block, LayerStack

log = logging.getLogger(__name__)
LORA_TARGETS = ["qkv", "out"]


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default" or getattr(config, "rope_scaling", None) not in (None, params):
        raise ConfigError(f"{config.model_type}: scaled RoPE ({params.get('rope_type')}) is not supported by our "
                          "mechanisms (they use plain RoPE)")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_supported(model: Any) -> None:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    problems = []
    if head_dim * c.num_attention_heads != c.hidden_size:
        problems.append(f"head_dim {head_dim} x {c.num_attention_heads} heads != hidden size {c.hidden_size}")
    if getattr(c, "attention_bias", False) or getattr(model.model.layers[0].self_attn.q_proj, "bias", None) is not None:
        problems.append("attention projections with bias")
    layer = model.model.layers[0]
    if not all(hasattr(layer, name) for name in ("input_layernorm", "post_attention_layernorm", "mlp")):
        problems.append("not a pre-norm decoder with input_layernorm / mlp / post_attention_layernorm")
    if problems:
        raise ConfigError(f"{c.model_type}: cannot host our mechanisms: {'; '.join(problems)}")


class MechanismLM(LayerStack):
    def __init__(self, hf_model: Any, mechanism: str, options: dict[str, Any]) -> None:
        super().__init__()
        _check_supported(hf_model)
        c = hf_model.config
        self.mechanism, self.hf = mechanism, hf_model
        self.embed = hf_model.get_input_embeddings()
        options = {**options, "rope_base": _rope_theta(c)}
        blocks = []
        for i, layer in enumerate(hf_model.model.layers):
            mixer = mechanisms.build(mechanism, c.hidden_size, c.num_attention_heads, i, **options)
            _copy_attention(layer.self_attn, mixer, c.num_attention_heads, c.num_key_value_heads)
            blocks.append(Block(layer.input_layernorm, mixer, layer.post_attention_layernorm, layer.mlp))
            layer.self_attn = nn.Identity()  # its weights now live in the mixer
        self.blocks = nn.ModuleList(blocks)

    def final_norm(self, x: Tensor) -> Tensor:
        return self.hf.model.norm(x)

    def head_logits(self, x: Tensor) -> Tensor:
        return self.hf.lm_head(self.final_norm(x))


@torch.no_grad()
def _copy_attention(attn: Any, mixer: nn.Module, heads: int, kv_heads: int) -> None:
    """HF q/k/v/o -> our fused qkv and out; grouped K/V heads repeated so head h reads K/V head h // (heads/kv)."""
    repeat = heads // kv_heads

    def expand(w: Tensor) -> Tensor:
        return w.view(kv_heads, -1, w.shape[-1]).repeat_interleave(repeat, dim=0).reshape(-1, w.shape[-1])

    mixer.qkv.weight.copy_(torch.cat([attn.q_proj.weight, expand(attn.k_proj.weight), expand(attn.v_proj.weight)]))
    mixer.out.weight.copy_(attn.o_proj.weight)
    mixer.to(attn.q_proj.weight.dtype)


def add_lora(model: MechanismLM, rank: int, alpha: float) -> list[str]:
    """LoRA on the mixers' projections; freezes every pretrained weight. Returns the trainable parameter names."""
    from peft import LoraConfig, inject_adapter_in_model

    new = {name for name, _ in model.named_parameters() if _is_mechanism_addition(name)}
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS), model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name or name in new
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _is_mechanism_addition(name: str) -> bool:
    """Parameters a mechanism adds to attention (gates, initial memories): everything in a mixer but projections."""
    return ".mixer." in name and not name.endswith(("qkv.weight", "out.weight"))
