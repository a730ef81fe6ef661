"""Shared test helpers, imported as `from tests.helpers.<module> import ...`; not collected as tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root
CONF = ROOT / "conf"
