"""Config composition through Hydra's compose API: every group option composes against its schema, presets
resolve, and the schema rejects unknown keys and wrong types."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

import mechanisms
import tasks
from bench.config.validate import validate
from bench.core.errors import ConfigError
from bench.harness.preflight import job_configs
from tests.helpers import CONF
from tests.helpers.config import make


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
        (["train.precision=float16"], "train.precision"),
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


@pytest.mark.slow  # ~1 s per job composed: the presets hold ~200 jobs
@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "sweep").glob("*.yaml")))
def test_every_sweep_preset_composes_every_job_and_validates(preset):
    """A preset is a study: each of its jobs, as the sweeper will launch them, composes against the schema and
    passes the value checks (a typo in a preset would otherwise surface hours into a study)."""
    jobs = job_configs(["-m", f"sweep={preset}"])
    assert jobs
    for job in jobs:
        validate(job)
