"""What a cell will cost before it runs: the memory evaluation at the longest `eval.lengths` needs, estimated from
the model itself (its carried state measured at two short lengths and extrapolated, plus the logits a scored
sequence keeps), so that an absurd length fails up front in one line instead of running for hours or dying of
memory at the end of a sweep."""

from __future__ import annotations

import psutil
import torch
from omegaconf import DictConfig, OmegaConf

import mechanisms
from bench.core.errors import ConfigError
from bench.core.protocols import Tokenizer
from bench.harness.factory import backbone_spec
from bench.models.backbone import Backbone

PROBE_LENGTHS = (64, 128)
HEADROOM = 0.8  # of the memory available now: the rest is the process, the data and the allocator's slack


def evaluation_bytes(cfg: DictConfig, tokenizer: Tokenizer) -> int:
    """Bytes streaming the longest evaluation length takes on our backbone: the state it carries then (linear
    extrapolation of two probes: exact for a KV cache, flat for bounded memories), the fp32 logits of the whole
    sequence (a scored sequence keeps them) and one chunk's attention scores against everything carried."""
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    name = options.pop("name")
    if mechanisms.is_model_level(name):
        name, options = mechanisms.get(name).reader_mechanism, {}  # its reader never sees more than its window
    spec = backbone_spec(cfg, tokenizer)
    model = Backbone(spec, name, options).eval()
    sizes = []
    with torch.no_grad():
        for n in PROBE_LENGTHS:
            _, states = model(torch.zeros(1, n, dtype=torch.long))
            sizes.append(model.state_nbytes(states))
    length = max(cfg.eval.lengths)
    per_token = (sizes[1] - sizes[0]) / (PROBE_LENGTHS[1] - PROBE_LENGTHS[0])
    state = sizes[1] + per_token * max(0, length - PROBE_LENGTHS[1])
    logits = length * spec.vocab_size * 4
    cached_tokens = state / (2 * spec.n_layers * spec.d_model * 4)  # as if it were all fp32 K/V
    scores = min(length, cfg.eval.chunk_size) * spec.n_heads * cached_tokens * 4  # one layer's, at a time
    return int(state + logits + scores)


def check_memory(cfg: DictConfig, tokenizer: Tokenizer) -> None:
    if cfg.model.name == "hf":  # a pretrained model's cost depends on its own config; not estimated here
        return
    needed = evaluation_bytes(cfg, tokenizer)
    if str(cfg.device).startswith("cuda"):
        available = torch.cuda.mem_get_info(torch.device(cfg.device))[0]
        where = f"free on {cfg.device}"
    else:
        available, where = psutil.virtual_memory().available, "available on this machine"
    if needed > HEADROOM * available:
        raise ConfigError(f"eval.lengths: {max(cfg.eval.lengths)} tokens with mechanism={cfg.mechanism.name} would "
                          f"need about {needed / 2**30:.1f} GiB to evaluate (carried state + logits); "
                          f"{available / 2**30:.1f} GiB are {where}")
