"""Check a whole command line before any job starts: expand the sweep the way Hydra's basic sweeper will, compose
every job's config and validate it, so an impossible cell fails the sweep at once in one line naming the key —
not after hours of training the cells before it, and not as a multi-line Hydra or OmegaConf trace.
"""

from __future__ import annotations

import logging

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from bench.config.schema import CONF_DIR
from bench.config.validate import validate
from bench.core.errors import ConfigError, one_line
from bench.harness.factory import build_task, make_tokenizer

MULTIRUN_FLAGS = ("-m", "--multirun")


def hydra_handles_itself(argv: list[str]) -> bool:
    """Flags other than --multirun (--help, --cfg job, --info, ...) are Hydra's own business."""
    return any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in argv)


def job_configs(argv: list[str]) -> list[DictConfig]:
    """Each job's composed config, as the basic sweeper will launch them (a plain run is one job)."""
    args = [a for a in argv if a not in MULTIRUN_FLAGS]
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(args)
    plain = [a for a, o in zip(args, parsed, strict=True) if not o.is_sweep_override()]
    top = compose_job(plain, with_hydra=True)
    multirun = any(a in MULTIRUN_FLAGS for a in argv) or top.hydra.mode == RunMode.MULTIRUN
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        key = sweeps[0].get_key_element()
        raise ConfigError(f"{key} lists several values ({sweeps[0].input_line}); add -m to sweep over them")
    params = [f"{k}={v}" for k, v in (top.hydra.sweeper.get("params") or {}).items()] if multirun else []
    if not sweeps and not params:  # one job: the composition above is its config
        with open_dict(top):
            del top["hydra"]
        return [top]
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(params + args), None)[0]
    return [compose_job(overrides) for overrides in jobs]


def compose_job(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=with_hydra)


def check(argv: list[str]) -> list[DictConfig]:
    """Validate every job of this command line and return their configs ([] for a command Hydra answers itself,
    such as --help). Raises ConfigError (one line)."""

    if hydra_handles_itself(argv):
        return []
    import datasets

    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # warnings come again, in the job's own log, if the config is valid
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # reading a corpus to check it: a failure must print one line, not bars
    try:
        jobs = job_configs(argv)
        for cfg in jobs:
            validate(cfg)
            build_task(cfg, make_tokenizer(cfg))
    except ConfigError:
        raise
    except Exception as e:  # Hydra's and OmegaConf's errors, reduced to their one informative line
        raise ConfigError(one_line(e)) from None
    finally:
        logging.disable(quiet)
        if bars:
            datasets.enable_progress_bars()
    return jobs
