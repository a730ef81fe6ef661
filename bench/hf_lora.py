"""Memory mechanisms inside a pretrained Hugging Face model, by continued training with LoRA — how both memory papers
worked (Infini-attention continually pretrained an LLM; TransformerFAM fine-tuned Flan-PaLM with LoRA).

`MechanismLM` keeps the HF model's embeddings, norms, feed-forward blocks and head, and replaces each layer's
attention with one of our mechanisms whose projections are the layer's own q/k/v/o weights (grouped K/V heads
repeated to full heads, which computes the same thing). It has our backbone's interface (`forward(tokens, states,
start) -> logits, states`), so `bench.train` trains it and `StreamingLM` streams it. With mechanism `full` it
reproduces the HF model's logits (tested), which checks the weight mapping.

Training: LoRA adapters (peft) on every mechanism's `qkv` and `out` projections plus the mechanism's own new
parameters (Infini's gates, FAM's initial memory) train on the sweep's training mixture; all pretrained weights
stay frozen. Only the trained tensors are cached, under a hash of the model, mechanism, training config, tokenizer
and corpus. Supported: Llama / Mistral / Qwen2-style decoders (pre-norm `input_layernorm`, `mlp`,
`post_attention_layernorm`) with hidden = heads x head_dim, no attention bias, and plain RoPE.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mechanisms
from bench.hashing import content_hash
from mechanisms.base import ConfigError

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


class MechanismLM(nn.Module):
    def __init__(self, hf_model: Any, mechanism: str, options: dict[str, Any]) -> None:
        super().__init__()
        _check_supported(hf_model)
        c = hf_model.config
        self.mechanism, self.hf = mechanism, hf_model
        self.embed = hf_model.get_input_embeddings()
        options = {**options, "rope_base": _rope_theta(c)}
        self.mixers = nn.ModuleList()
        for i, layer in enumerate(hf_model.model.layers):
            mixer = mechanisms.build(mechanism, c.hidden_size, c.num_attention_heads, i, **options)
            _copy_attention(layer.self_attn, mixer, c.num_attention_heads, c.num_key_value_heads)
            mixer.bind_block(layer.input_layernorm, _feed_forward(layer))
            self.mixers.append(mixer)
            layer.self_attn = nn.Identity()  # its weights now live in the mixer
        self.layers = hf_model.model.layers

    def init_states(self, batch_size: int, device=None, dtype=None) -> list[Any]:
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        return [m.init_state(batch_size, device, dtype) for m in self.mixers]

    def forward(self, tokens: Tensor, states: list[Any] | None = None, start: int = 0) -> tuple[Tensor, list[Any]]:
        if states is None:
            states = self.init_states(tokens.shape[0])
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x, new_states = self.embed(tokens), []
        for layer, mixer, state in zip(self.layers, self.mixers, states, strict=True):
            mixed, state = mixer(layer.input_layernorm(x), state, positions)
            x = x + mixed
            x = x + layer.mlp(layer.post_attention_layernorm(x))
            new_states.append(state)
        return self.hf.lm_head(self.hf.model.norm(x)), new_states

    def state_nbytes(self, states: list[Any]) -> int:
        return sum(m.state_nbytes(s) for m, s in zip(self.mixers, states, strict=True))

    def stats(self) -> dict[str, float]:
        return {f"layer{i}.{k}": v for i, m in enumerate(self.mixers) for k, v in m.stats().items()}


def _feed_forward(layer: Any):
    def feed_forward(x: Tensor) -> Tensor:
        return layer.mlp(layer.post_attention_layernorm(x))

    return feed_forward


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
    return name.startswith("mixers.") and not name.endswith(("qkv.weight", "out.weight"))


def trained(cfg: Any, hf_model: Any, tokenizer: Any, options: dict[str, Any], data: Any) -> tuple[MechanismLM, str]:
    """The HF model with `options['name']` inside, LoRA-trained on the mixture for `train.steps` (cached)."""
    from omegaconf import OmegaConf

    import tasks
    from bench.train import CorruptCheckpoint, Mixture, load_checkpoint, save_checkpoint, train, training_shape

    t, m = cfg.train, cfg.model
    name = options["name"]
    mech_options = {k: v for k, v in options.items() if k != "name"}
    model = MechanismLM(hf_model, name, mech_options)
    trainable = add_lora(model, m.lora_rank, m.lora_alpha)
    model.to(cfg.device)
    length, batch = training_shape(t, options)
    t = OmegaConf.merge(t, {"train_length": length, "batch_size": batch})
    train_cfg = {k: v for k, v in dict(t).items() if k not in ("base_steps", "base_lr", "init")}
    key = content_hash(["hf-lora-v1", m.path, m.dtype, m.lora_rank, m.lora_alpha, name, mech_options, train_cfg,
                        tokenizer.fingerprint, data.corpus.hash], 20)
    path = Path(cfg.cache_dir) / "checkpoints" / f"hf-{key}.pt"
    if path.exists():
        try:
            state = load_checkpoint(path)["state_dict"]
        except CorruptCheckpoint as e:
            log.warning("%s; deleting it and retraining", e)
            path.unlink(missing_ok=True)
        else:
            model.load_state_dict(state, strict=False)
            log.info("%s on %s: cached LoRA checkpoint %s", name, m.path, path)
            return model.eval(), key
    log.info("%s on %s: LoRA rank %d, %d trainable tensors (%d parameters), %d steps", name, m.path, m.lora_rank,
             len(trainable), sum(p.numel() for p in model.parameters() if p.requires_grad), t.steps)
    mixture_tasks = {n: tasks.get(n)(tasks.get(n).Options(name=n), tokenizer, data) for n in t.mixture}
    torch.manual_seed(t.seed)
    train(model, Mixture(mixture_tasks, dict(t.mixture), t.seed + 1), t, t.steps, t.lr, f"{name} (LoRA on {m.path})",
          cfg.inject_nan_at_step)
    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_checkpoint(_Holder(state), path, {"trainable": json.loads(json.dumps(trainable))})
    return model.eval(), key


class _Holder:
    """What save_checkpoint needs of a model: a state dict (here only the trained tensors)."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Tensor]:
        return self._state
