"""`python -m bench.export_lm_eval --out DIR [overrides]`: our tasks' exact samples as lm-eval task YAML + jsonl."""

from bench.integrations.lm_eval_export import main

if __name__ == "__main__":
    raise SystemExit(main())
