"""memorybench's test suite, laid out like the packages it tests (tests/mechanisms/ for mechanisms/, tests/harness/
for bench/harness/, ...). A package so that `from tests.helpers.<module> import ...` resolves to this folder under
`--import-mode=importlib` (pyproject.toml puts the repository root on sys.path)."""
