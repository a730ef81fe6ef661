"""`python -m bench`: the Hydra app. Single run: `python -m bench mechanism=sliding_window task=passkey`;
sweep: `python -m bench -m mechanism=full,sliding_window` or the preset `python -m bench -m sweep=default`.

Every job of the command line is composed and validated first (bench/harness/preflight.py): bad input exits 2 with one
line, before anything is trained or written. In a sweep, a cell that fails (NaN loss, a bug) is marked `failed` in
the manifest with its reason and the sweep goes on; the command then exits 3 naming the failed cells.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.config.schema import register_configs
from bench.core.errors import ConfigError, one_line
from bench.core.hashing import content_hash
from bench.harness.preflight import check, replace_whole_dicts
from bench.harness.runner import cell_identity, run
from bench.results.manifest import Manifest, is_alive_elsewhere, manifest_path
from bench.results.records import records_path
from bench.training.loop import TrainingDiverged

register_configs()
log = logging.getLogger("bench")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
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
    except Exception:
        if not sweeping:
            raise
        log.exception("cell %s / %s failed, the sweep goes on", cfg.mechanism.name, cfg.task.name)


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = replace_whole_dicts(sys.argv[1:] if from_shell else argv)
    if from_shell:
        sys.argv = [sys.argv[0], *argv]  # what Hydra's own parser reads
    try:
        jobs = check(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # what stops Hydra (a launcher) reaches us, not its trace printer
    stopped = None
    try:
        hydra_main()
    except Exception as e:  # the launcher broke off (a joblib worker killed, a cluster error) or a single run failed
        if len(jobs) == 1:
            log.exception("the run failed")  # one cell: its traceback is the useful part, in the log
        stopped = f"the sweep stopped: {one_line(e)}; "
    failed = failed_cells(jobs)
    if failed or stopped:
        print(f"error: {stopped or ''}{len(failed)} cell(s) did not finish (rerun the command to retry them)"
              + (": " + "; ".join(failed) if failed else ""), file=sys.stderr)
        return 3
    return 0


def failed_cells(jobs: list[DictConfig]) -> list[str]:
    """The command's cells that did not finish: marked failed, left `running` by a process that is gone, or with
    no manifest entry at all (a job that failed before it could write one, e.g. on an unwritable store). Read
    from the manifest, not from this process, because launchers such as joblib and submitit run the jobs in other
    processes (or on other machines). A cell another live process is running is not a failure of this command."""
    failed = []
    for cfg in jobs:
        records_file = records_path(cfg.results_dir, cfg.sweep_name)
        entry = Manifest(manifest_path(records_file)).get(content_hash(cell_identity(cfg)))
        label = f"{cfg.mechanism.name} / {cfg.task.name}"
        if entry is None:
            failed.append(f"{label}: failed before it reached the manifest (see the log above)")
        elif entry.status == "failed":
            failed.append(f"{entry.mechanism} / {entry.task}: {entry.error}")
        elif entry.status == "running" and not is_alive_elsewhere(entry):
            failed.append(f"{entry.mechanism} / {entry.task}: its process ended without finishing (killed?)")
    return failed


if __name__ == "__main__":
    sys.exit(main())
