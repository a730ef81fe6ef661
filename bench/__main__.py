"""`python -m bench`: the Hydra app. Single run: `python -m bench mechanism=sliding_window task=passkey`;
sweep: `python -m bench -m mechanism=full,sliding_window` or the preset `python -m bench -m sweep=default`."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from bench.config import register_configs
from bench.train import TrainingDiverged
from mechanisms.base import ConfigError

register_configs()
log = logging.getLogger("bench")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from bench.run import run

    try:
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
