"""`python -m bench.reproduce COMMITTED RERUN`: whether the sweep RERUN (e.g. the same preset run cold under another
thread count or on another machine, `sweep_name=<rerun>`) reproduces the conclusions of COMMITTED: no decisive
verdict against full attention flips, and >= 95% of its cell means fall inside COMMITTED's intervals. Writes
results/<RERUN>/reproduction.md; exit 0 when they reproduce, 1 when not, 2 for a missing or damaged store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core.atomic import write_text
from bench.report.reproduction import compare, load
from bench.results.records import records_path
from bench.results.summary import MissingRecords, RecordsError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("committed", help="the sweep whose conclusions are checked (e.g. default)")
    parser.add_argument("rerun", help="the sweep that reran it")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    try:
        result = compare(*(load(records_path(args.results_dir, s)) for s in (args.committed, args.rerun)))
    except (MissingRecords, RecordsError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    text = result.markdown(args.committed, args.rerun)
    out = Path(args.results_dir) / args.rerun / "reproduction.md"
    write_text(out, text)
    print(text)
    print(f"-> {out}")
    raise SystemExit(0 if result.holds else 1)


if __name__ == "__main__":
    main()
