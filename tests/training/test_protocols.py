"""The training protocol's timing: a cell that trains the shared base model and its own counts both, apart; a cell
whose models are cached counts neither; another seed over the same base counts only its own training."""

from __future__ import annotations

from omegaconf import OmegaConf

from bench.core import stopwatch
from bench.harness.factory import backbone_spec
from bench.models.tokenizers import ByteTokenizer
from bench.training.protocols import trained_model
from tests.helpers.config import make

TINY = ("model.tokenizer=byte", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.mlp_hidden=64",
        "train.base_steps=3", "train.steps=2", "train.batch_size=2", "train.train_length=128",
        "train.warmup_steps=1", "train.base_seed=7", "mechanism=sliding_window", "train.mixture.copy=1",
        "train.mixture.passkey=0", "train.mixture.longqa=0", "train.mixture.perplexity=0")


def test_training_time_is_split_between_the_shared_base_and_the_cells_own_model(tmp_path, task_data):
    def spent(seed: int) -> dict[str, float]:
        cfg = make(*TINY, f"train.seed={seed}", f"cache_dir={tmp_path}")
        tokenizer = ByteTokenizer()
        with stopwatch.collecting() as seconds:
            trained_model(cfg, backbone_spec(cfg, tokenizer), tokenizer,
                          OmegaConf.to_container(cfg.mechanism, resolve=True), task_data)
        return seconds

    first = spent(1)
    assert set(first) == {"base", "train"} and first["base"] > 0 and first["train"] > 0
    assert spent(1) == {}  # both checkpoints cached
    assert set(spent(2)) == {"train"}  # the same base, cached; this seed's own model trained
