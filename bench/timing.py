"""`python -m bench.timing SWEEP PHASE=SECONDS ...`: record the wall time of steps around a sweep (setup, sweep,
report: what `make bench` times) in results/<sweep>/timing.json and rewrite its summary.md, whose "Wall time"
section then covers the whole run."""

from __future__ import annotations

import argparse
import sys

from bench.core.errors import ConfigError
from bench.results.phases import PHASES, record_phases
from bench.results.records import records_path
from bench.results.summary import RecordsError, write_summary


def parse(pairs: list[str]) -> dict[str, float]:
    """PHASE=SECONDS pairs; which phases exist and what a valid time is, `record_phases` checks."""
    seconds = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            seconds[name] = float(value)  # a pair without "=" has an empty value, which float() refuses
        except ValueError:
            raise ConfigError(f"{pair!r}: expected PHASE=SECONDS, PHASE one of {', '.join(PHASES)}") from None
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep")
    parser.add_argument("phases", nargs="+", metavar="PHASE=SECONDS")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args()
    path = records_path(args.results_dir, args.sweep)
    try:
        written = record_phases(path, parse(args.phases))
        if path.exists():
            write_summary(path)
    except (ConfigError, RecordsError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wall time -> {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
