"""Each verdict cell links to the prompts behind it: a page per mechanism and family listing the samples it got
wrong, with prediction, gold and positions."""

import numpy as np

from bench.report import build_report
from bench.report.samples import load_samples
from bench.results.records import records_path
from tests.helpers.stores import write_study


def test_verdict_cells_link_to_the_missed_samples(tmp_path):
    truth = {"full": {128: 1.0, 512: 0.5}, "sliding_window": {128: 0.3, 512: 0.0}}
    write_study(tmp_path, "swp", truth, np.random.default_rng(0), n=50)
    page = build_report([records_path(tmp_path, "swp")], tmp_path / "swp" / "report")
    text = page.read_text()
    assert '<a href="samples/sliding_window_passkey.html">' in text  # the verdict cell of the window
    misses = (page.parent / "samples" / "sliding_window_passkey.html").read_text()
    samples = load_samples([records_path(tmp_path, "swp")])
    window = samples[samples["config_hash"].str.startswith("sliding_window")]
    missed = int((window["exact_match"] < 1).sum())  # 3 seeds x 50 samples x 2 lengths drawn at rates 0.3 / 0
    assert 150 < missed < 300 and misses.count("<td>99999</td>") == missed  # every miss listed, no hit
    assert f"{missed} of 300 samples not fully right" in misses and "12345" in misses and "needle" in misses
    full = (page.parent / "samples" / "full_passkey.html").read_text()
    assert "<td>128</td>" not in full  # full never misses at 128 (rate 1.0): only 512 rows listed
    stale = page.parent / "samples" / "old-label_passkey.html"  # a label an earlier report had
    stale.write_text("stale")
    build_report([records_path(tmp_path, "swp")], tmp_path / "swp" / "report")
    assert not stale.exists() and (page.parent / "samples" / "full_passkey.html").exists()
