"""A mechanism from a separate installed package (entry-point group `memorybench.mechanisms`) is a first-class
mechanism: `mechanism=<name>` composes from its Options dataclass, it runs in a sweep, the shared invariant suites
test it, and the sanity gates, perf and HF support read its capabilities — without a file of this repo edited.

The throwaway package is "installed" the way pip leaves a package: its module plus a `.dist-info` folder with
`entry_points.txt`, on the path of the subprocess that uses it (so this test process's registry stays clean)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.results.records import read_records
from tests.helpers.sweeps import ROOT, command

PLUGIN = textwrap.dedent('''
    """An exponential moving average of the values: the smallest bounded recurrent memory there is."""
    import dataclasses

    import torch
    from torch import nn

    from bench.core.errors import ConfigError
    from mechanisms import Mechanism, MechanismOptions, register


    @dataclasses.dataclass
    class EMAOptions(MechanismOptions):
        decay: float = 0.9  # weight of the past at each token

        def validate(self):
            if not 0 < self.decay < 1:
                raise ConfigError(f"mechanism.decay must lie in (0, 1), got {self.decay}")


    @register
    class EMAMixer(Mechanism):
        name = "ema_plugin"
        Options = EMAOptions
        display_order = 50
        perf_options = {"decay": 0.5}

        def __init__(self, d_model, n_heads, layer_idx=0, **options):
            super().__init__(d_model, n_heads, layer_idx, **options)
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # the base model's weights load into it
            self.out = nn.Linear(d_model, d_model, bias=False)

        def init_state(self, batch_size, device, dtype):
            return torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)

        def forward(self, x, state, positions):
            values, a, out = self.qkv(x)[..., 2 * self.d_model:], self.options.decay, []
            for t in range(x.shape[1]):
                state = a * state + (1 - a) * values[:, t]
                out.append(state)
            return self.out(torch.stack(out, 1)), state
''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "ema_plugin_pkg").mkdir()
    (site / "ema_plugin_pkg" / "__init__.py").write_text("")
    (site / "ema_plugin_pkg" / "ema.py").write_text(PLUGIN)
    info = site / "ema_plugin_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ema-plugin-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[memorybench.mechanisms]\nema_plugin = ema_plugin_pkg.ema\n")
    return site


def with_plugin(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_an_installed_plugin_is_registered_with_its_capabilities(plugin_path):
    script = textwrap.dedent('''
        import mechanisms
        from bench.config.schema import register_configs
        from bench.harness.preflight import compose_job
        from bench.perf.runner import PerfConfig
        from bench.report.sanity import bounded
        from bench.results.summary import ordered
        register_configs()
        assert "ema_plugin" in mechanisms.names()
        cfg = compose_job(["mechanism=ema_plugin", "mechanism.decay=0.5"])
        assert cfg.mechanism.name == "ema_plugin" and cfg.mechanism.decay == 0.5
        assert bounded("ema_plugin") is True                       # the bounded-state gate judges it
        assert "ema_plugin" in PerfConfig().mechanisms             # make perf measures it
        assert ordered(["ema_plugin", "rag", "full"]) == ["full", "rag", "ema_plugin"]
        assert mechanisms.get("ema_plugin").hf_support == "none"   # refused on HF models, by its own default
        print("ok")
    ''')
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=with_plugin(plugin_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.slow
def test_an_installed_plugin_runs_in_a_sweep_and_passes_the_shared_invariants(plugin_path, tmp_path):
    env = with_plugin(plugin_path)
    sweep = subprocess.run(command(tmp_path, "-m", "sweep=smoke", "mechanism=ema_plugin", "task=passkey,perplexity"),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    rows = read_records(tmp_path / "results" / "smoke" / "records.jsonl")
    assert {r["mechanism"] for r in rows} == {"ema_plugin"} and {r["task"] for r in rows} == {"passkey", "perplexity"}
    report = subprocess.run([sys.executable, "-m", "bench.report", "smoke", "--results-dir", str(tmp_path / "results")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    invariants = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "ema_plugin",
                                 str(ROOT / "tests" / "mechanisms")], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=900)
    assert invariants.returncode == 0, invariants.stdout[-3000:]
    assert int(re.search(r"(\d+) passed", invariants.stdout).group(1)) >= 3, invariants.stdout[-3000:]
