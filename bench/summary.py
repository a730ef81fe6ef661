"""`python -m bench.summary [SWEEP]`: rewrite results/<sweep>/summary.md from its records.jsonl (and the cells its
manifest.json says did not finish)."""

from __future__ import annotations

import argparse
import sys

from bench.results.records import records_path
from bench.results.summary import MissingRecords, RecordsError, write_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep", nargs="?", default="default")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    path = records_path(args.results_dir, args.sweep)
    try:
        write_summary(path, require=True)
    except MissingRecords as e:
        raise SystemExit(f"error: {e}") from None
    except RecordsError as e:  # a damaged or empty store: one line naming the file and how to recover
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
