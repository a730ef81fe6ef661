"""The project's Hydra config composed in-process (Hydra's compose API), as `python -m bench` composes it."""

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bench.config.schema import register_configs
from tests.helpers import CONF

register_configs()


def make(*overrides: str) -> DictConfig:
    """conf/config.yaml with `overrides`, checked against the typed schema (not yet by `validate`)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))
