"""`python -m bench.report [SWEEP ...]`: rebuild results/<sweep>/report/ from the sweeps' records (and the cells
their manifests say did not finish)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.report import build_report
from bench.results.records import records_path
from bench.results.summary import MissingRecords, RecordsError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweeps", nargs="*", default=["default"], help="sweep names under --results-dir")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", help="report folder (default: results/<sweep>/report, sweeps joined by '+')")
    parser.add_argument("--threshold", type=float, default=0.5, help="score that defines the effective length")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = [records_path(args.results_dir, s) for s in args.sweeps]
    out = Path(args.out) if args.out else Path(args.results_dir) / "+".join(args.sweeps) / "report"
    try:
        page = build_report(files, out, args.threshold)
    except MissingRecords as e:
        raise SystemExit(f"error: {e}") from None
    except RecordsError as e:  # a damaged or empty store: one line naming the file and how to recover
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(page)


if __name__ == "__main__":
    main()
