"""memorybench inside other tools: lm-eval both ways (our models as an lm-eval model; our tasks exported as lm-eval
tasks)."""
