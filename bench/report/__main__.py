"""`python -m bench.report [SWEEP ...]`: rebuild results/<sweep>/report/ from the sweeps' records."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bench.report import build_report
from bench.results.records import records_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweeps", nargs="*", default=["default"], help="sweep names under --results-dir")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", help="report folder (default: results/<sweep>/report, sweeps joined by '+')")
    parser.add_argument("--threshold", type=float, default=0.5, help="score that defines the effective length")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = [records_path(args.results_dir, s) for s in args.sweeps]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"error: no records at {', '.join(missing)}; run the sweep first")
    out = Path(args.out) if args.out else Path(args.results_dir) / "+".join(args.sweeps) / "report"
    print(build_report(files, out, args.threshold))


if __name__ == "__main__":
    main()
