"""`make perf` / `python -m bench.perf [overrides]`: time and memory scaling per mechanism -> results/perf/."""

from bench.perf.runner import main

if __name__ == "__main__":
    main()
