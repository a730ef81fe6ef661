"""Typed, strict configuration: dataclasses registered in Hydra's ConfigStore.

Every group (model, train, eval, logger) has a schema, and each mechanism / task registers its own options
dataclass as `schema/mechanism/<name>` / `schema/task/<name>`, which its YAML extends. Hydra then rejects an unknown
key or a wrong type at compose time; `bench.config.validate` rejects values that type-check but cannot work.
These dataclasses are the one source of defaults: a YAML in conf/ sets only what differs, with its reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import mechanisms
import tasks
from tasks.data.corpus import SOURCES

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Field metadata of an option added after records existed: at its default it is left out of the cell identity, so
# adding it changes no recorded cell's config hash.
NEUTRAL_DEFAULT = {"identity": "omitted at its default"}


def neutral_defaults() -> dict[tuple[str, str], Any]:
    """(group, key) -> default of every option marked NEUTRAL_DEFAULT in the group schemas."""
    groups = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
    return {(group, f.name): f.default for group, schema in groups.items() for f in dataclasses.fields(schema)
            if f.metadata.get("identity") == NEUTRAL_DEFAULT["identity"]}


@dataclass
class ModelConfig:
    name: str = "tiny"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 384
    # bpe (trained on the tasks' text, cached) | byte. With bytes the key phrase "key is" shares its last 4 bytes
    # with the filler's "sky is", and a byte-level model did not learn passkey retrieval in the CPU budget.
    tokenizer: str = "bpe"
    # 1024: every name and place of the long-QA stories is one token; at 512 the corpus's merges left "kitchen" in
    # 5 pieces and "bedroom" / "bathroom" sharing their first one. Corpus text packs 2.8 characters per token.
    bpe_vocab_size: int = 1024
    path: str = ""  # name=hf: a pretrained causal LM, folder or hub id (bench/models/hf.py), with its tokenizer
    dtype: str = "float32"  # name=hf: float32 | bfloat16 | float16
    lora_rank: int = 8  # name=hf, hf_support "lora": LoRA on attention projections (bench/models/hf_mechanisms.py)
    lora_alpha: float = 16.0


@dataclass
class TrainConfig:
    init: str = "base"  # base: continue from one cached full-attention base model | scratch
    base_steps: int = 2500  # pretraining steps of the shared base model (init=base)
    steps: int = 150  # steps every mechanism gets (continued training, or from scratch)
    batch_size: int = 32
    train_length: int = 256  # longest training sequence, tokens
    curriculum_start: float = 0.25  # the length bound grows from this fraction of train_length over 60% of steps
    curriculum_floor: float = 0.5  # shortest length drawn, as a fraction of the current bound
    lr: float = 1e-3
    base_lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # task name -> weight. Copy rows form the induction/copy circuit retrieval builds on; long-QA rows supervise
    # facts, question and answer (not the filler); a little perplexity keeps the LM's text statistics.
    mixture: dict[str, float] = field(
        default_factory=lambda: {"copy": 0.35, "passkey": 0.2, "longqa": 0.4, "perplexity": 0.05})
    seed: int = 1234  # training data and init; evaluation seeds are drawn from a disjoint range
    # init=base: the seed of the shared base model. None: train.seed (each training seed pretrains its own base).
    # Set, every train.seed continues the same base (the controlled protocol: seeds vary the continued training).
    base_seed: int | None = field(default=None, metadata=NEUTRAL_DEFAULT)
    # float32 | bfloat16: bfloat16 autocasts the forward pass while training (weights, optimizer state and loss
    # stay float32). It pays where bfloat16 matmuls are fast (GPUs; CPUs with AMX: 1.3x a default step measured,
    # docs/performance.md) and costs elsewhere; it is a different recipe, so it keys its own checkpoints.
    precision: str = field(default="float32", metadata=NEUTRAL_DEFAULT)


@dataclass
class EvalConfig:
    # 8 tokens short of multiples of 32 (the default segment/block size): at needle depth 1 the needle's second copy
    # of the key, the question and the answer then share one segment/block, so the depth-1 cells test each
    # mechanism's local path and the shallower depths its memory of earlier segments/blocks.
    lengths: list[int] = field(default_factory=lambda: [120, 248, 504])
    n: int = 20  # samples per cell
    chunk_size: int = 512  # tokens per forward call while streaming
    seed: int = 0


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "memorybench"
    entity: str | None = None
    mode: str = "offline"  # wandb mode when WANDB_MODE is unset: offline | online | disabled
    dir: str = "outputs"  # where wandb writes its run folders


@dataclass
class Config:
    mechanism: Any = MISSING
    task: Any = MISSING
    corpus: Any = MISSING  # the text perplexity, the training mixture and long-QA filler read (tasks/data/corpus.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep_name: str = "adhoc"
    device: str = "cpu"
    results_dir: str = "results"
    cache_dir: str = ".cache"
    force: bool = False  # rerun cells the sweep's records already hold (their records are replaced)
    inject_nan_at_step: int | None = None  # fault injection: this step's loss (from 1) in the cell's training is NaN


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in mechanisms.names():
        cs.store(group="schema/mechanism", name=name, node=mechanisms.get(name).Options)
        if not (CONF_DIR / "mechanism" / f"{name}.yaml").exists():  # e.g. a plugin's: its dataclass is the entry
            cs.store(group="mechanism", name=name, node=mechanisms.get(name).Options(name=name))
    for name in tasks.names():
        cs.store(group="schema/task", name=name, node=tasks.get(name).Options)
        if not (CONF_DIR / "task" / f"{name}.yaml").exists():
            cs.store(group="task", name=name, node=tasks.get(name).Options(name=name))
    for source, options in SOURCES.items():
        cs.store(group="schema/corpus", name=source, node=options)
    # `${registered:mechanisms}` / `${registered:tasks}` in a sweep preset: every registered name, in display
    # order, so a preset such as conf/sweep/smoke.yaml covers a new mechanism or task without being edited
    OmegaConf.register_new_resolver("registered", registered, replace=True)


def registered(kind: str) -> str:
    if kind == "mechanisms":
        return ",".join(sorted(mechanisms.names(), key=lambda n: (mechanisms.get(n).display_order, n)))
    if kind == "tasks":
        return ",".join(tasks.names())
    raise ValueError(f"${{registered:{kind}}}: known kinds are mechanisms and tasks")
