"""`python -m bench.lm_eval_run --tasks ... [overrides]`: lm-eval tasks against one of our mechanisms (memory
carried across each document). Named so that no module of ours shadows the `lm_eval` package."""

from bench.integrations.lm_eval_run import main

if __name__ == "__main__":
    raise SystemExit(main())
