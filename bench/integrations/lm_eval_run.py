"""Run lm-evaluation-harness tasks against one of our mechanisms, memory carried across each document:

    python -m bench.lm_eval_run --tasks memorybench_passkey_248 --include-path exported/ mechanism=fam
    python -m bench.lm_eval_run --tasks wikitext --include-defaults mechanism=infini      # lm-eval's own tasks (online)

Arguments other than the flags below are our config overrides: they pick (train, or load from the cache) the model
exactly as `python -m bench` would. Prints lm-eval's table; `--output` also writes its results as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench.core.errors import ConfigError
from bench.integrations.lm_eval_model import MemoryBenchLM, lm_from_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments are our config overrides, e.g. mechanism=fam.")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include-path", type=Path, help="folder of task YAMLs (e.g. from bench.export_lm_eval)")
    parser.add_argument("--include-defaults", action="store_true",
                        help="also index lm-eval's built-in tasks (slower; their data usually needs the hub)")
    parser.add_argument("--limit", type=float, help="documents per task (a fraction if < 1)")
    parser.add_argument("--output", type=Path, help="write lm-eval's results here as JSON")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    if args.include_path is None and not args.include_defaults:
        print("error: give --include-path (our exported tasks) and/or --include-defaults", file=sys.stderr)
        return 2
    manager = TaskManager(include_path=str(args.include_path) if args.include_path else None,
                          include_defaults=args.include_defaults)
    names = args.tasks.split(",")
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        print(f"error: lm-eval does not know the task(s) {', '.join(unknown)} in the given paths", file=sys.stderr)
        return 2
    try:
        model = MemoryBenchLM(lm_from_overrides(overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = simple_evaluate(model=model, tasks=names, task_manager=manager, limit=args.limit, log_samples=False,
                              bootstrap_iters=0)
    print(make_table(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({k: results[k] for k in ("results", "configs", "versions")},
                                          indent=2, default=str))
    return 0

