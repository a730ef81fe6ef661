"""The report: CI math on known cases, tables, every figure, the dashboard (and in a real headless browser)."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bench.report import build_report, plots, sanity, tables
from bench.report.stats import estimate, paired_difference, wilson
from bench.results.records import FIELDS
from bench.results.summary import cells

LENGTHS, DEPTHS = [128, 256, 512], [0.0, 0.5, 1.0]


def record(mechanism, options, length, metric, value, depth=None, n=20, task="passkey", **extra):
    r = dict.fromkeys(FIELDS)
    r.update(run_id=mechanism, sweep="synthetic", mechanism=mechanism, options=options, task=task, model="tiny",
             seed=1, train_length=256, context_length=length, depth=depth, metric=metric, value=value, n=n,
             state_bytes=1000 * (length if mechanism == "full" else 64), tokens_per_s=1e4 / (1 + length / 1000),
             config_hash=f"{mechanism}-{task}", data_hash=f"{task}-{length}-{depth}", git_sha="abc",
             created_at="2026-11-22T00:00:00Z")
    r.update(extra)
    return r


def synthetic_records():
    scores = {"full": lambda L, d: 1.0 if L <= 256 else 0.6,
              "sliding_window": lambda L, d: 1.0 if d == 1.0 else 0.0,
              "infini": lambda L, d: 0.35 if d == 1.0 else 0.05}
    options = {"full": {}, "sliding_window": {"window": 64}, "infini": {"segment": 64, "update": "linear"}}
    rows = []
    for mech, score in scores.items():
        for length in LENGTHS:
            for depth in DEPTHS:
                rows.append(record(mech, options[mech], length, "exact_match", score(length, depth), depth))
            rows.append(record(mech, options[mech], length, "ppl", 20 + length / (100 if mech == "full" else 300),
                               task="perplexity", n=5000))
        if mech == "infini":
            rows.append(record(mech, options[mech], 128, "gate_memory_weight", 0.7, subtask="layer0", n=1)
                        | {"context_length": None, "state_bytes": None, "tokens_per_s": None, "data_hash": None})
    return rows


def frame(rows):
    return cells(rows)


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
    small = estimate(pd.DataFrame({"value": [0.5], "n": [20], "seed": [1]}))
    large = estimate(pd.DataFrame({"value": [0.5], "n": [2000], "seed": [1]}))
    assert small.low < 0.5 < small.high and large.low < 0.5 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    certain = estimate(pd.DataFrame({"value": [1.0, 1.0], "n": [20, 30], "seed": [1, 1]}))
    # 50 of 50 right is not certainty: the Wilson floor, as for per-sample intervals (bench/report/stats.py)
    assert (certain.mean, certain.high, certain.n) == (1.0, 1.0, 50)
    assert certain.low == pytest.approx(wilson(1.0, 50)[0]) and 0.9 < certain.low < 0.95
    seeds = estimate(pd.DataFrame({"value": [0.2, 0.4, 0.6], "n": [10, 10, 10], "seed": [1, 2, 3]}))
    assert seeds.mean == pytest.approx(0.4) and 0.2 <= seeds.low < 0.4 < seeds.high <= 0.6
    unbounded = estimate(pd.DataFrame({"value": [25.0], "n": [100], "seed": [1]}))
    assert unbounded.mean == 25.0 and np.isnan(unbounded.low)


def test_paired_difference_sign():
    ref = pd.DataFrame({"value": [0.9, 0.8], "n": [50, 50], "seed": [1, 1], "data_hash": ["a", "b"],
                        "depth": [0.0, 1.0], "subtask": [None, None]})
    worse = ref.assign(value=[0.1, 0.2])
    d = paired_difference(worse, ref)
    assert d.mean == pytest.approx(-0.7) and d.high < 0 and tables.verdict(d, "exact_match") == "worse"
    assert tables.verdict(paired_difference(ref, worse), "exact_match") == "better"
    assert tables.verdict(paired_difference(ref, ref), "exact_match") == "tie"
    assert tables.verdict(paired_difference(worse, ref), "ppl") == "better"  # lower perplexity wins
    assert paired_difference(worse.assign(data_hash=["x", "y"]), ref) is None  # different samples never pair


def test_effective_length_is_the_longest_length_that_stays_above_threshold():
    est = tables.estimates(frame(synthetic_records()))
    eff = tables.effective_length(est, 0.9).set_index(["task", "metric", "mechanism"])["effective_length"]
    assert eff[("passkey", "exact_match", "full")] == 256
    assert eff[("passkey", "exact_match", "infini")] == 0
    assert ("perplexity", "ppl", "full") not in eff.index  # lower-is-better metrics have no threshold length


def test_tables_mark_the_best_value_per_column():
    est = tables.estimates(frame(synthetic_records()))
    md = tables.wide(est, "passkey", "exact_match", ("**", "**"))
    assert md.loc["full", "128"].startswith("**1.000") and not md.loc["infini", "128"].startswith("**")
    ppl = tables.wide(est, "perplexity", "ppl", ("**", "**"))
    assert ppl.loc["infini", "512"].startswith("**")  # lowest perplexity is best


def test_sanity_gates_pass_and_fail_on_known_data():
    df = frame(synthetic_records())
    gates = [g.status for g in sanity.evaluate_gates(df)]
    assert gates == ["pass", "n/a", "pass", "pass", "pass"]  # no long-QA records here
    broken = frame([r | {"value": 0.0} if r["mechanism"] == "full" else r for r in synthetic_records()])
    assert sanity.full_in_length(broken).status == "fail"
    qa = [record("full", {}, length, "exact_match", value, task="longqa", subtask=family)
          for length, value in ((128, 0.9), (256, 0.8), (512, 0.1)) for family in ("single_fact", "two_facts")]
    assert sanity.full_single_fact(frame(qa)).status == "pass"  # 512 is beyond the training length: not counted
    assert sanity.full_single_fact(frame([r | {"value": 0.5} for r in qa])).status == "fail"
    exploded = frame([r | {"value": float("inf")} if r["task"] == "perplexity" and r["mechanism"] == "infini"
                      and r["context_length"] == 512 else r for r in synthetic_records()])
    gate = sanity.perplexity_finite_beyond_training(exploded)
    assert gate.status == "fail" and "infini @ 512" in gate.detail


def test_report_writes_every_table_figure_and_the_dashboard(tmp_path):
    path = tmp_path / "records.jsonl"
    qa = [record(m, o, 128, "exact_match", 0.5, task="longqa", subtask="single_fact")
          for m, o in (("full", {}), ("infini", {"segment": 64, "update": "linear"}))]
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records() + qa))
    page = build_report([path], tmp_path / "report")
    figures = sorted(p.name for p in (tmp_path / "report" / "plots").iterdir())
    stems = {"accuracy_vs_length_passkey_exact_match", "depth_heatmap_passkey", "perplexity_by_position_perplexity",
             "quality_vs_state_passkey_exact_match", "efficiency", "accuracy_vs_length_longqa-single_fact_exact_match",
             "quality_vs_state_longqa-single_fact_exact_match", "quality_vs_cost_passkey_exact_match",
             "quality_vs_cost_longqa-single_fact_exact_match"}
    assert figures == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    assert all((tmp_path / "report" / "plots" / f).stat().st_size > 1000 for f in figures)
    for name in ("passkey_exact_match.md", "passkey_exact_match.csv", "passkey_exact_match.tex",
                 "paired_vs_full.csv", "effective_length.md", "longqa-single_fact_exact_match.md"):
        assert (tmp_path / "report" / "tables" / name).stat().st_size > 0
    text = page.read_text()
    for mech in ("full", "sliding_window", "infini"):
        assert f">{mech}<" in text
    assert "gate_memory_weight" in text and text.count('class="pass"') == 4


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_dashboard_renders_in_headless_chromium_without_console_errors(tmp_path):
    path = tmp_path / "records.jsonl"
    qa = [record(m, o, 128, "exact_match", 0.5, task="longqa", subtask="single_fact")
          for m, o in (("full", {}), ("infini", {"segment": 64, "update": "linear"}))]
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_records() + qa))
    page = build_report([path], tmp_path / "report")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "dashboard.png"
    done = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert shot.stat().st_size > 10_000
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert all(f">{m}<" in dom for m in ("full", "sliding_window", "infini"))


def test_runs_of_one_mechanism_that_differ_are_never_averaged_together():
    base = record("infini", {"segment": 64, "update": "linear"}, 128, "exact_match", 0.5, 1.0)
    rows = [base,
            base | {"options": {"segment": 64, "update": "delta"}, "config_hash": "b"},
            base | {"model": "tiny-base1500+600", "config_hash": "c"},
            base | {"sweep": "other", "config_hash": "d"}]
    rows[0]["model"] = rows[1]["model"] = rows[3]["model"] = "tiny-base1500+150"
    labels = list(cells(rows)["mechanism"])
    assert len(set(labels)) == 4
    assert labels[1] == "infini(update=delta) base1500+150" and labels[2] == "infini(update=linear) base1500+600"
    assert labels[0] == "infini(update=linear) base1500+150 [synthetic]" and labels[3].endswith("[other]")


def test_a_family_the_reference_cannot_do_gets_no_verdict():
    """Full attention at 0.35 in its own training length: every difference there is noise, flagged as such."""
    rows = []
    for mech, in_length, beyond in (("full", 0.35, 0.1), ("sliding_window", 0.9, 0.9)):
        for length, value in ((128, in_length), (512, beyond)):
            rows.append({"mechanism": mech, "task": "longqa/single_fact", "metric": "exact_match", "seed": 0,
                         "context_length": length, "train_length": 256, "value": value, "n": 100, "depth": None,
                         "subtask": "single_fact", "data_hash": f"d{length}"})
            rows.append({**rows[-1], "task": "passkey", "subtask": None, "value": 1.0 if mech == "full" else 0.5})
    df = pd.DataFrame(rows)
    assert tables.uncalibrated_tasks(df) == {"longqa/single_fact": pytest.approx(0.35)}
    verdicts = tables.paired(df).set_index(["task", "context_length"])["verdict"]
    assert verdicts[("longqa/single_fact", 128)] == "uncalibrated (full: 0.35)"
    assert verdicts[("longqa/single_fact", 512)] == "uncalibrated (full: 0.35)"
    assert verdicts[("passkey", 128)] == "worse"


def test_the_one_screen_verdict_pools_each_regime_and_leaves_uncalibrated_families_out():
    rows = []
    for mech, value in (("full", 1.0), ("sliding_window", 0.5), ("rag", 1.0)):
        for length in (128, 200, 512):
            for family, ref_score in (("passkey", 1.0), ("longqa/single_fact", 0.3)):
                rows.append({"mechanism": mech, "task": family, "metric": "exact_match", "seed": 0,
                             "context_length": length, "train_length": 256, "n": 100, "depth": None,
                             "subtask": None, "data_hash": f"{family}{length}",
                             "value": ref_score if mech == "full" else value})
    overview = tables.verdict_overview(pd.DataFrame(rows))
    assert list(overview.columns) == ["passkey · in length", "passkey · beyond"]
    assert overview.loc["sliding_window", "passkey · in length"].startswith("worse -0.50")
    assert overview.loc["rag", "passkey · beyond"] == "tie +0.00 [+0.00, +0.00] (probe: 1 seed)"
    assert list(overview.index) == ["sliding_window", "rag"]
    three = pd.DataFrame([{**r, "seed": seed} for r in rows for seed in (1, 2, 3)])
    assert tables.verdict_overview(three).loc["rag", "passkey · beyond"] == "tie +0.00 [+0.00, +0.00]"
    pretrained = pd.DataFrame(rows).assign(model="hf-gpt2")  # nothing was trained: no seed to vary
    assert tables.verdict_overview(pretrained).loc["rag", "passkey · beyond"] == "tie +0.00 [+0.00, +0.00]"
    mixed = pd.concat([pretrained, pd.DataFrame(rows).assign(mechanism=lambda d: d["mechanism"].where(
        d["mechanism"] == "full", d["mechanism"] + "_trained"))])  # a trained pair next to a pretrained one
    assert tables.verdict_overview(mixed).loc["rag_trained", "passkey · beyond"].endswith("(probe: 1 seed)")
    spread = pd.DataFrame([{**r, "seed": {128: 1, 200: 2, 512: 3}[r["context_length"]]} for r in rows])
    assert tables.verdict_overview(spread).loc["rag", "passkey · in length"].endswith("(probe: 1 seed)")


def passkey_runs(runs):
    """Records of (mechanism, options, exact match[, model]) runs at one length in and one beyond a 256-token
    training."""
    return cells([{"mechanism": mech, "options": options, "task": "passkey", "metric": "exact_match", "seed": 0,
                   "context_length": length, "train_length": 256, "n": 100, "depth": None, "subtask": None,
                   "data_hash": f"d{length}", "value": value, "model": model[0] if model else "m", "sweep": "s",
                   "config_hash": f"{mech}{options}{model}", "run_id": "r", "git_sha": "g", "created_at": "t",
                   "state_bytes": None, "tokens_per_s": None}
                  for mech, options, value, *model in runs for length in (128, 512)])


def test_evaluation_cost_charges_a_cell_its_whole_evaluation_time():
    """A memory that trains at test time evaluates fewer tokens per second, so its tokens cost it more."""
    df = passkey_runs((("full", {}, 1.0), ("weights_lora", {}, 0.9)))
    df["tokens_per_s"] = df["mechanism"].map({"full": 1000.0, "weights_lora": 50.0})
    cost = plots.seconds_per_kilotoken(df)
    assert cost["passkey", "full", 512] == pytest.approx(1.0)
    assert cost["passkey", "weights_lora", 128] == pytest.approx(20.0)


def test_memory_mechanisms_are_judged_against_their_own_span_baseline():
    """Infini (segment 64) against the sliding window with W = 64, not the one with W = 128; BSWA has no baseline."""
    table = tables.baseline_overview(passkey_runs((
        ("full", {}, 1.0), ("infini", {"segment": 64}, 0.9), ("sliding_window", {"window": 64}, 0.5),
        ("sliding_window", {"window": 128}, 0.9), ("bswa", {"block": 32, "mem_blocks": 1}, 0.5))))
    assert list(table.index) == ["infini − sliding_window(window=64)"]
    assert table.iloc[0]["passkey · in length"].startswith("better +0.40")


def test_an_own_span_baseline_is_the_run_at_the_same_learning_rate():
    """With the window at two learning rates, Infini at 3e-3 is judged against the window at 3e-3 only."""
    table = tables.baseline_overview(passkey_runs((
        ("full", {}, 1.0, "m@lr0.001"), ("full", {}, 1.0, "m@lr0.003"),
        ("sliding_window", {"window": 16}, 0.9, "m@lr0.001"), ("sliding_window", {"window": 16}, 0.5, "m@lr0.003"),
        ("infini", {"segment": 16}, 0.8, "m@lr0.003"))))
    assert len(table) == 1 and table.index[0].endswith("m@lr0.003"), table.index
    assert table.iloc[0]["passkey · in length"].startswith("better +0.30")


def test_only_runs_of_the_references_budget_are_paired_with_it():
    """Gated DeltaNet after 1000 steps is not judged against full attention after 150: only the 150-step run gets
    a verdict."""
    runs = passkey_runs((("full", {}, 1.0, "m+150"), ("gated_deltanet", {}, 0.0, "m+150"),
                         ("gated_deltanet", {}, 1.0, "m+1000")))
    pairs = tables.paired(runs)
    assert not pairs.empty and set(pairs["mechanism"]) == {"gated_deltanet m+150"}, set(pairs["mechanism"])
    assert (pairs["diff"] < 0).all()

def test_fam_is_judged_against_fam_with_no_feedback_tokens_where_no_bswa_ran():
    """FAM with F = 0 is BSWA bit for bit (`same_as`), so a FAM sweep over F (capacity_fam) carries its own
    baseline: F = 4 is paired with F = 0, and F = 0 is not paired with itself."""
    table = tables.baseline_overview(passkey_runs((
        ("full", {}, 1.0), ("fam", {"block": 16, "fam_tokens": 4}, 0.8), ("fam", {"block": 16, "fam_tokens": 0}, 0.6),
        ("fam", {"block": 32, "fam_tokens": 0}, 0.9))))
    assert len(table) == 1
    pair = table.index[0]
    assert "fam_tokens=4" in pair and pair.split(" − ")[1].startswith("fam(") and "block=16" in pair.split(" − ")[1]
    assert table.iloc[0]["passkey · in length"].startswith("better +0.20")


def test_the_dashboard_leaves_a_probe_verdict_uncoloured():
    """A verdict backed by fewer than MIN_SEEDS training seeds is shown, but not coloured as a finding."""
    from bench.report.dashboard import _verdict_html
    overview = pd.DataFrame({"passkey · beyond": ["better +0.30 [+0.20, +0.40]",
                                                  "better +0.30 [+0.20, +0.40] (probe: 1 seed)"]},
                            index=["rag", "infini"])
    page = _verdict_html(overview)
    assert page.count('class="v-better"') == 1 and page.count('class="v-na"') == 1
