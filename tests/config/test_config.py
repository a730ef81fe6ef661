"""Config composition through Hydra's compose API: every group option composes against its schema, presets
resolve, and the schema rejects unknown keys and wrong types."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

import mechanisms
import tasks
from bench.config import register_configs, validate
from bench.train import MIN_UNITS_PER_SEQUENCE, training_shape
from mechanisms.base import ConfigError

CONF = str(Path(__file__).resolve().parent.parent / "conf")
register_configs()


def make(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", mechanisms.names())
def test_every_mechanism_has_a_yaml_that_validates(name):
    cfg = make(f"mechanism={name}")
    assert cfg.mechanism.name == name
    validate(cfg)


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_has_a_yaml_that_validates(name):
    cfg = make(f"task={name}")
    assert cfg.task.name == name
    validate(cfg)


def test_default_sweep_preset_sets_the_comparison():
    cfg = make("sweep=default")
    assert cfg.sweep_name == "default" and cfg.model.tokenizer == "bpe" and cfg.mechanism.name == "full"
    validate(cfg)


@pytest.mark.parametrize("mechanism", mechanisms.names())
def test_training_rows_hold_the_recipes_segments_at_the_same_tokens_per_step(mechanism):
    """Every mechanism of the default sweep trains on rows of >= 8 segments/blocks, and a raised length costs
    batch rows, not tokens: the comparison keeps one token budget per step."""
    cfg = make("sweep=default", f"mechanism={mechanism}")
    options = dict(cfg.mechanism)
    unit = mechanisms.options(**options).memory_unit()
    length, batch = training_shape(cfg.train, options)
    assert length >= cfg.train.train_length and length * batch == cfg.train.train_length * cfg.train.batch_size
    if unit:
        assert length >= MIN_UNITS_PER_SEQUENCE * unit
    else:
        assert (length, batch) == (cfg.train.train_length, cfg.train.batch_size)


def test_a_long_enough_training_length_is_left_as_configured():
    cfg = make("mechanism=infini", "mechanism.segment=16", "train.train_length=300", "train.batch_size=5")
    assert training_shape(cfg.train, dict(cfg.mechanism)) == (300, 5)
    cfg = make("mechanism=fam", "mechanism.block=100", "train.train_length=300", "train.batch_size=5")
    assert training_shape(cfg.train, dict(cfg.mechanism)) == (800, 1)


def test_typed_schema_rejects_unknown_keys_and_wrong_types():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        make("train.lrr=1")
    with pytest.raises(ConfigCompositionException):
        make("train.batch_size=many")
    with pytest.raises(ConfigCompositionException):
        make("mechanism=sliding_window", "mechanism.windw=3")


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.n_heads=3"], "model.d_model"),
        (["train.init=warm"], "train.init"),
        (["+train.mixture.nope=1.0"], "nope"),
        (["train.mixture={passkey: -1.0}"], "train.mixture"),
        (["eval.lengths=[]"], "eval.lengths"),
        (["mechanism=sliding_window", "mechanism.sinks=-1"], "mechanism.sinks"),
        (["task.depths=[-0.1]"], "task.depths"),
        (["train.curriculum_floor=0"], "train.curriculum_floor"),
    ],
)
def test_impossible_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make(*overrides))


def test_cuda_device_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="device=cuda"):
        validate(make("device=cuda"))
