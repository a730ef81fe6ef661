"""`logger=wandb`: each job becomes a wandb run (grouped by sweep) holding its config, per-cell metrics, the
records as a table and the report's figures for this job. Records stay the source of truth; wandb mirrors them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench.report import plots, tables
from bench.report.samples import load_samples
from bench.results.records import records_path
from bench.results.summary import cells


def log_job(cfg: DictConfig, rows: list[dict[str, Any]], identity: dict[str, Any], config_hash: str) -> None:
    import wandb  # heavy import (~1 s); only when asked for

    mode = os.environ.get("WANDB_MODE", cfg.logger.mode)
    Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.sweep_name, job_type=cfg.task.name,
        name=f"{cfg.mechanism.name}-{cfg.task.name}-{config_hash[:8]}", config=identity, mode=mode,
        dir=cfg.logger.dir, reinit="finish_previous",
    )
    with run:
        df = cells(rows)
        est = tables.estimates(df, load_samples([records_path(cfg.results_dir, cfg.sweep_name)]))
        for r in est.itertuples(index=False):
            run.summary[f"{r.task}/{r.metric}/{r.context_length}"] = r.mean
        for r in rows:
            if r["context_length"] is None:
                run.summary[f"stats/{r['subtask']}/{r['metric']}"] = r["value"]
        columns = list(rows[0])
        run.log({"records": wandb.Table(columns=columns, data=[[_plain(r[c]) for c in columns] for r in rows])})
        with tempfile.TemporaryDirectory() as tmp:
            figures = plots.write_plots(df, est, Path(tmp))
            run.log({f.stem: wandb.Image(str(f)) for f in figures if f.suffix == ".png"})


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, dict) else value
