"""Our models inside lm-evaluation-harness: an lm-eval model named `memorybench` over any `LongContextLM`.

The one thing it does differently from lm-eval's own Hugging Face model: `loglikelihood_rolling` streams the whole
document through the model once, with the mechanism's memory carried from chunk to chunk (`rolling_nll`). lm-eval's
HF model cuts a long document into windows of the model's maximum length and scores each window from an empty
context, which erases exactly what this suite measures.

Build it from a `LongContextLM` (`MemoryBenchLM(lm)`), or from our config overrides, which train or load the cached
checkpoint exactly as `python -m bench` does. Importing this module registers the model name, so in Python
    simple_evaluate(model="memorybench", model_args="overrides=mechanism=fam train.steps=150", tasks=[...])
works too; from the shell, `python -m bench.lm_eval_run` runs any lm-eval task this way.
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from bench.config.schema import register_configs
from bench.config.validate import validate
from bench.harness.factory import backbone_spec, make_tokenizer, model_and_lm
from bench.harness.preflight import compose_job

log = logging.getLogger(__name__)


@register_model("memorybench")
class MemoryBenchLM(LM):
    def __init__(self, lm: Any = None, overrides: str = "", batch_size: Any = None, device: Any = None,
                 **unused: Any) -> None:
        super().__init__()
        if lm is None:
            lm = lm_from_overrides(overrides.split(), device)
        elif overrides:
            raise ValueError("give either a LongContextLM or config overrides, not both")
        if unused:
            log.info("memorybench: ignoring lm-eval arguments %s", sorted(unused))
        self.lm, self.tokenizer = lm, lm.tokenizer

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        out = []
        for request in tqdm(requests, desc="memorybench loglikelihood", disable=None):
            context, continuation = request.args
            result = self.lm.loglikelihood(self._encode(context), self._encode(continuation))
            out.append(result)
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Summed log-probability of each document, memory carried across the whole of it."""
        out = []
        for request in tqdm(requests, desc="memorybench rolling loglikelihood", disable=None):
            (text,) = request.args
            out.append(-float(self.lm.rolling_nll(self._encode(text)).double().sum()))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, out[-1])
        return out

    def generate_until(self, requests) -> list[str]:
        """Greedy decoding (what our tasks score), cut at the first stop string."""
        out = []
        for request in tqdm(requests, desc="memorybench generate", disable=None):
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", 256))
            text = self.tokenizer.decode(self.lm.generate(self._encode(context), max_new))
            cuts = [text.find(stop) for stop in until if stop and stop in text]
            out.append(text[: min(cuts)] if cuts else text)
            self.cache_hook.add_partial("generate_until", request.args, out[-1])
        return out


def lm_from_overrides(overrides: list[str], device: Any = None) -> Any:
    """The `LongContextLM` a `python -m bench` command line would evaluate (the checkpoint trained or loaded from
    the cache), validated the same way."""
    from omegaconf import OmegaConf

    register_configs()
    if device:
        overrides = [*overrides, f"device={device}"]
    cfg = compose_job(overrides)
    validate(cfg)
    tokenizer = make_tokenizer(cfg)
    options = OmegaConf.to_container(cfg.mechanism, resolve=True)
    _, checkpoint, lm = model_and_lm(cfg, backbone_spec(cfg, tokenizer), tokenizer, options)
    log.info("memorybench: %s, checkpoint %s", cfg.mechanism.name, checkpoint)
    return lm
