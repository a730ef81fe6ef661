"""Check a whole command line before any job starts: expand the sweep the way Hydra's basic sweeper will, compose
every job's config and validate it, so an impossible cell fails the sweep at once in one line naming the key —
not after hours of training the cells before it, and not as a multi-line Hydra or OmegaConf trace. Beyond the
values: the task fits the eval lengths, the training rows fit the mixture's tasks, the evaluation fits in memory,
and the results store and cache can be read and written.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import mechanisms
from bench.config.schema import CONF_DIR
from bench.config.validate import validate
from bench.core.errors import ConfigError, one_line
from bench.harness.budget import check_memory
from bench.harness.factory import build_task, make_tokenizer, task_data
from bench.results.records import read_records, records_path
from bench.training.mixture import min_training_length
from bench.training.protocols import mixture_tasks

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


WHOLE_DICTS = ("train.mixture",)  # dict-valued options a user gives whole: what they write is the whole value


def replace_whole_dicts(argv: list[str]) -> list[str]:
    """Hydra merges a dict given on the command line into the one it overrides, so `train.mixture={passkey:1.0}`
    would still train on every default task. For the options in WHOLE_DICTS the given dict is the whole value: the
    keys it leaves out are written back with weight 0, keys the default lacks are added, and the recorded config
    says exactly what was asked. The dict becomes one override per key (Hydra refuses a new key inside a dict
    override)."""
    parser = OverridesParser.create()
    out, base = [], None
    for arg in argv:
        try:
            (override,) = [] if arg.startswith("-") else parser.parse_overrides([arg])
        except Exception:  # not an override (a flag) or malformed: the check reports it in one line
            out.append(arg)
            continue
        value = override.value()
        if override.key_or_group not in WHOLE_DICTS or override.is_sweep_override() or not isinstance(value, dict):
            out.append(arg)
            continue
        if base is None:  # the config as composed without these overrides: which keys would merge in
            others = [a for a in argv if not a.startswith("-") and a.split("=", 1)[0] not in WHOLE_DICTS]
            base = compose_job(_plain(parser, others))
        present = OmegaConf.select(base, override.key_or_group) or {}
        key = override.key_or_group
        out += [f"{key}.{k}=0" for k in present if k not in value]
        # a key the default lacks (a task outside the default mixture, e.g. mqar) is added with '+'
        out += [f"{'' if k in present else '+'}{key}.{k}={v}" for k, v in value.items()]
    return out


def _plain(parser: OverridesParser, args: list[str]) -> list[str]:
    try:
        parsed = parser.parse_overrides(args)
    except Exception:
        return []
    return [a for a, o in zip(args, parsed, strict=True) if not o.is_sweep_override()]


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
            tokenizer = make_tokenizer(cfg)
            build_task(cfg, tokenizer)
            check_training_length(cfg, tokenizer)
            check_memory(cfg, tokenizer)
        for results_dir, sweep, cache_dir in sorted({(c.results_dir, c.sweep_name, c.cache_dir) for c in jobs}):
            check_store(Path(results_dir), sweep, Path(cache_dir))
    except ConfigError:
        raise
    except Exception as e:  # Hydra's and OmegaConf's errors, reduced to their one informative line
        raise ConfigError(one_line(e)) from None
    finally:
        logging.disable(quiet)
        if bars:
            datasets.enable_progress_bars()
    return jobs


def check_training_length(cfg: DictConfig, tokenizer) -> None:
    """Rows of `train.train_length` must hold every mixture task's fixed text (training would refuse them late)."""
    if cfg.model.name == "hf" and mechanisms.get(cfg.mechanism.name).hf_support != "lora":
        return  # a training-free adapter trains nothing
    needed = min_training_length(mixture_tasks(cfg.train.mixture, tokenizer, task_data(cfg)).values())
    if cfg.train.train_length < needed:
        raise ConfigError(f"train.train_length={cfg.train.train_length} is shorter than the training mixture's tasks "
                          f"need ({needed} tokens)")


def check_store(results_dir: Path, sweep: str, cache_dir: Path) -> None:
    """The sweep's records parse, and the results and cache folders can be written (checked by creating and
    removing a temp file in the nearest existing folder: nothing is left behind)."""
    records = records_path(results_dir, sweep)
    if records.exists() and not records.is_file():
        raise ConfigError(f"{records} is not a file; move it away (the sweep's records are written there)")
    try:
        read_records(records)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{one_line(e)}: fix or delete that line (a rerun recomputes any cell whose records are "
                          "gone)") from None
    for key, folder in (("results_dir", results_dir / sweep), ("cache_dir", cache_dir)):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{key}={folder.parent if key == 'results_dir' else folder}: {existing} is a file, "
                              "not a folder")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            raise ConfigError(f"{key}: cannot write in {existing} ({e.strerror or type(e).__name__})") from None
