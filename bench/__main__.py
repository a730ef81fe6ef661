"""`python -m bench`: the Hydra app. Single run: `python -m bench mechanism=sliding_window task=passkey`;
sweep: `python -m bench -m mechanism=full,sliding_window` or the preset `python -m bench -m sweep=default`.

Every job of the command line is composed and validated first (bench/preflight.py): bad input exits 2 with one
line, before anything is trained or written. In a sweep, a cell that fails (NaN loss, a bug) is marked `failed` in
the manifest with its reason and the sweep goes on; the command then exits 3 naming the failed cells.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.config import register_configs
from bench.preflight import check, one_line
from bench.train import TrainingDiverged
from mechanisms.base import ConfigError

register_configs()
log = logging.getLogger("bench")
FAILED: list[str] = []  # cells of this sweep that failed in this process (the basic launcher runs jobs here)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from bench.run import run

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        if not sweeping:
            print(f"error: training diverged: {e}", file=sys.stderr)
            sys.exit(3)
        log.error("cell failed, the sweep goes on: training diverged: %s", e)
        FAILED.append(f"{cfg.mechanism.name} / {cfg.task.name}: training diverged: {e}")
    except Exception as e:
        if not sweeping:
            raise
        log.exception("cell %s / %s failed, the sweep goes on", cfg.mechanism.name, cfg.task.name)
        FAILED.append(f"{cfg.mechanism.name} / {cfg.task.name}: {one_line(e)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        check(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hydra_main()
    if FAILED:
        print(f"error: {len(FAILED)} cell(s) failed (marked in the sweep's manifest.json): " + "; ".join(FAILED),
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
