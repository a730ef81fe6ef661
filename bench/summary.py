"""`python -m bench.summary [SWEEP]`: rewrite results/<sweep>/summary.md from its records.jsonl."""

from __future__ import annotations

import argparse

from bench.results.records import records_path
from bench.results.summary import write_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep", nargs="?", default="default")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    path = records_path(args.results_dir, args.sweep)
    if not path.exists():
        raise SystemExit(f"error: no records at {path}; run the sweep first")
    write_summary(path)


if __name__ == "__main__":
    main()
