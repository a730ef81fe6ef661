"""The capacity frontier: state settings read from the runs (numeric options that vary are points, other options
curves), the best learning rate per cell, seeds pooled into one interval, and decisive pairs only between curves
that carry the same state."""

from pathlib import Path

import pytest

from bench.models.tokenizers import ByteTokenizer
from bench.report import build_report
from bench.report.capacity import decisive_pairs, frontier_table, learning_rates, settings, span_split
from bench.report.samples import load_samples
from bench.report.tables import baseline_overview, estimates, reference_scores
from bench.results.records import RunInfo, append_records, read_records, records_path
from bench.results.samples import sample_rows, write_samples
from bench.results.summary import cells
from tasks.base import TaskData
from tasks.mqar import MqarOptions, MqarTask
from tests.helpers.recall import RecallLM

STATE = 4096


def write_runs(tmp: Path, runs: list[tuple]) -> Path:
    """A store of MQAR runs (mechanism, options, model-name suffix, recall reach, state bytes, seeds) scored by
    RecallLM, which recalls a value only when its key is at most `reach` tokens back."""
    path = records_path(tmp, "cap")
    task = MqarTask(MqarOptions(name="mqar", num_kv_pairs=[8]), ByteTokenizer(), TaskData(None, tmp / "cache"))
    for i, (mech, options, lr, reach, state, seeds) in enumerate(runs):
        results = task.evaluate(RecallLM(reach), [128], n=30, seed=0)
        for seed in seeds:
            info = RunInfo(sweep="cap", mechanism=mech, options=options, task="mqar", model=f"tiny-scratch100{lr}",
                           seed=seed, train_length=128, config_hash=f"h{i}-{seed}", run_id=f"r{i}{seed}",
                           git_sha="abc", created_at="2026-11-29T00:00:00+00:00")
            write_samples(path, info.config_hash, sample_rows(info.config_hash, "mqar", results))
            append_records(path, [info.record(context_length=c.context_length, metric=c.metric, value=c.value,
                                              n=c.n, subtask=c.subtask, data_hash=c.data_hash, state_bytes=state)
                                  for c in results])
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Windows of 8 and 32 tokens at two learning rates (3e-3 recalls twice as far at W=8, half as far at W=32),
    two Infini-like update rules at the same state, each run at three training seeds."""
    seeds = (1, 2, 3)
    return write_runs(tmp_path_factory.mktemp("frontier"), [
        ("sliding_window", {"window": 8}, "", 8, 8 * 64, seeds),
        ("sliding_window", {"window": 8}, "@lr0.003", 16, 8 * 64, seeds),
        ("sliding_window", {"window": 32}, "", 32, 32 * 64, seeds),
        ("sliding_window", {"window": 32}, "@lr0.003", 16, 32 * 64, seeds),
        ("infini", {"segment": 8, "update": "linear"}, "", 4, STATE, seeds),
        ("infini", {"segment": 8, "update": "delta"}, "", 10**6, STATE, seeds),
        ("full", {}, "", 10**6, 64 * STATE, seeds), ("full", {}, "@lr0.003", 10**6, 64 * STATE, seeds)])


def test_settings_split_knobs_from_curves(store):
    meta = settings(cells(read_records(store))).set_index("mechanism")
    assert set(meta["curve"]) == {"sliding_window", "infini(update=linear)", "infini(update=delta)", "full"}
    window = meta[meta["curve"] == "sliding_window"]
    assert set(window["point"]) == {"window=8", "window=32"} and set(window["lr"]) == {"default", "0.003"}
    assert (meta[meta["curve"].str.startswith("infini")]["point"] == "").all()  # segment does not vary: no knob


def test_best_learning_rate_per_cell_and_pooled_seeds(store):
    df = cells(read_records(store))
    table = frontier_table(df, estimates(df, load_samples([store])))
    window = table[table["curve"] == "sliding_window"].set_index("point")
    assert window.loc["window=8", "lr"] == "0.003" and window.loc["window=32", "lr"] == "default"
    assert window.loc["window=8", "mean"] < window.loc["window=32", "mean"]
    assert (table["n"] == 3 * 30).all()  # three seeds of 30 rows behind every point
    assert (table["low"] <= table["mean"]).all() and (table["mean"] <= table["high"]).all()
    assert (table["seeds"] == 3).all() and decisive_pairs(table, min_seeds=4).empty  # fewer seeds: no claim
    decisive = decisive_pairs(table)
    assert len(decisive) == 1 and decisive.iloc[0]["better"] == "infini(update=delta)"
    assert decisive.iloc[0]["better_state_bytes"] == decisive.iloc[0]["worse_state_bytes"] == STATE
    near = table.assign(state_bytes=table["state_bytes"].where(table["curve"] != "infini(update=linear)", STATE * 1.05))
    assert len(decisive_pairs(near)) == 1 and decisive_pairs(near, equal_state=1.01).empty  # within 10%: equal


def test_a_rate_probed_on_one_seed_is_compared_on_it_but_never_replaces_a_claim(tmp_path):
    """W=32 at 3e-3 (3 seeds) recalls half as far as at 1e-3, which ran on seed 1 only: the frontier keeps the
    3-seed rate, and the learning-rate table shows the probe winning on the seed both rates share."""
    store = write_runs(tmp_path, [("sliding_window", {"window": 32}, "@lr0.003", 16, 32 * 64, (1, 2, 3)),
                                  ("sliding_window", {"window": 32}, "", 32, 32 * 64, (1,)),
                                  ("sliding_window", {"window": 8}, "", 8, 8 * 64, (1,)),
                                  ("sliding_window", {"window": 8}, "@lr0.003", 4, 8 * 64, (1,))])
    df = cells(read_records(store))
    table = frontier_table(df, estimates(df, load_samples([store]))).set_index("point")
    assert table.loc["window=32", "lr"] == "0.003" and table.loc["window=32", "seeds"] == 3
    assert table.loc["window=8", "lr"] == "default"  # no rate has 3 seeds: the best probe is shown, as a probe
    rates = learning_rates(df, table.reset_index()).set_index(["point", "lr"])
    probe, claim = rates.loc[("window=32", "default")], rates.loc[("window=32", "0.003")]
    assert probe["shared_seeds"] == claim["shared_seeds"] == 1 and (probe["seeds"], claim["seeds"]) == (1, 3)
    assert probe["mean_on_shared"] > claim["mean_on_shared"] and claim["shown"] and not probe["shown"]
    assert rates.loc[("window=8", "default"), "shown"] and not rates.loc[("window=8", "0.003"), "shown"]
    assert probe["tuned"] and not claim["tuned"] and rates.loc[("window=8", "default"), "tuned"]


def test_the_tuning_rate_is_chosen_per_setting_over_its_pair_counts(tmp_path):
    """On the tuning seed, 1e-3 is a little better at 4 pairs and far worse at 32: each cell's best rate differs,
    but the setting's rate is the one better over its pair counts."""
    path = records_path(tmp_path, "cap")
    for lr, values in (("", {4: 0.70, 32: 0.10}), ("@lr0.003", {4: 0.69, 32: 0.40})):
        info = RunInfo(sweep="cap", mechanism="sliding_window", options={"window": 32}, task="mqar",
                       model=f"tiny-scratch100{lr}", seed=1, train_length=128, config_hash=f"h{lr}", run_id=f"r{lr}",
                       git_sha="abc", created_at="2026-11-29T00:00:00+00:00")
        append_records(path, [info.record(context_length=128, metric="exact_match", value=v, n=100, subtask=f"kv{k}",
                                          data_hash=f"d{k}", state_bytes=2048) for k, v in values.items()])
    write_runs(tmp_path, [("sliding_window", {"window": 8}, "", 8, 512, (1,))])  # a second point: a knob varies
    df = cells(read_records(path))
    rates = learning_rates(df, frontier_table(df, estimates(df))).set_index(["task", "lr"])
    assert rates.loc[("mqar/kv4", "default"), "mean_on_shared"] > rates.loc[("mqar/kv4", "0.003"), "mean_on_shared"]
    assert rates.xs("0.003", level="lr")["tuned"].all() and not rates.xs("default", level="lr")["tuned"].any()
    assert rates.loc[("mqar/kv4", "0.003"), "setting_mean"] == pytest.approx((0.69 + 0.40) / 2)


def test_recall_splits_at_the_local_span(store):
    """W=8 with reach 8 recalls inside its window and nothing beyond twice it; the 3e-3 run (reach 16) recalls
    between W and 2W; mechanisms without a span option (here none) would be left out."""
    df = cells(read_records(store))
    split = span_split(df, load_samples([store])).set_index("mechanism")
    w8 = split.loc[[m for m in split.index if "window=8" in m and "@lr" not in m][0]]
    w8_fast = split.loc[[m for m in split.index if "window=8" in m and "@lr" in m][0]]
    assert w8["span"] == 8 and w8["inside"] >= 0.9 and w8["to_2x"] == 0 and w8["beyond_2x"] == 0
    assert min(w8["queries_inside"], w8["queries_to_2x"], w8["queries_beyond_2x"]) > 0
    assert w8["to_2x"] < w8_fast["to_2x"] and w8_fast["beyond_2x"] == 0
    infini = split.loc[[m for m in split.index if "delta" in m][0]]
    assert infini["span"] == 8 and infini["beyond_2x"] == 1.0  # segment is its span; it recalls everything


def test_own_span_verdicts_when_full_attention_ran_at_two_learning_rates(store):
    """No run is labelled plain 'full' (its labels carry the learning rate), yet the regimes, and with them the
    verdicts of Infini against the window of its segment, are found."""
    df = cells(read_records(store))
    assert not (df["mechanism"] == "full").any()
    table = baseline_overview(df, load_samples([store]))
    delta = [row for row in table.index if "delta" in row and "window=8" in row and "@lr" not in row]
    assert delta and table.loc[delta[0]].str.startswith("better").all()
    assert reference_scores(df) == {"mqar/kv8": 1.0}  # the calibration gate reads the reference's best run


def test_report_writes_the_frontier(store, tmp_path):
    build_report([store], tmp_path)
    for table in ("frontier", "frontier_decisive", "recall_by_distance", "recall_by_span"):
        assert (tmp_path / "tables" / f"{table}.csv").exists()
    assert (tmp_path / "plots" / "frontier_mqar_exact_match_128.png").exists()
    assert "Capacity frontier" in (tmp_path / "index.html").read_text()


def test_runs_told_apart_only_by_a_tag_stay_apart_and_odd_model_names_are_read():
    import pandas as pd

    df = pd.DataFrame({"mechanism": ["sw(window=32) [A]", "sw(window=32) [B]", "full a", "full b-lora8-100"],
                       "options": [{"window": 32}, {"window": 32}, {}, {}],
                       "model": ["t-scratch100", "t-scratch100", "hf-a", "hf-b-lora8-100"]})
    meta = settings(df).set_index("mechanism")
    assert meta.loc["sw(window=32) [A]", "setting"] != meta.loc["sw(window=32) [B]", "setting"]
    assert (meta.loc["full a", "point"], meta.loc["full b-lora8-100", "point"]) == ("a", "b, lora8, 100")


def test_compute_options_start_curves_and_state_options_place_points():
    """weights_lora's test-time `steps` sets what an answer costs, not what it carries: a curve per value, the rank
    (the adapters' bytes) a point on each, so the frontier does not zigzag between budgets at one state."""
    import pandas as pd

    runs = [(rank, steps) for rank in (4, 16) for steps in (20, 60)]
    df = pd.DataFrame({"mechanism": [f"weights_lora(rank={r}, steps={s})" for r, s in runs],
                       "options": [{"rank": r, "steps": s, "lr": 0.01} for r, s in runs],
                       "model": ["t-scratch100@lr0.003"] * len(runs)})
    meta = settings(df).set_index("mechanism")
    assert set(meta["curve"]) == {"weights_lora(steps=20)", "weights_lora(steps=60)"}
    assert set(meta["point"]) == {"rank=4", "rank=16"}


def test_two_state_knobs_draw_a_curve_per_value_of_the_one_with_fewer_values():
    """Infini swept over segment (8, 16) and heads (1, 2, 4): heads place the points, each segment is a curve, so
    no line joins two points that differ in both knobs."""
    import pandas as pd

    runs = [(8, 2), (16, 1), (16, 2), (16, 4)]
    df = pd.DataFrame({"mechanism": [f"infini(segment={g}) h{h}" for g, h in runs],
                       "options": [{"segment": g, "update": "delta"} for g, _ in runs],
                       "model": [f"tiny-d64-l2-h{h}-scratch100@lr0.003" for _, h in runs]})
    meta = settings(df).set_index("mechanism")
    assert set(meta["curve"]) == {"infini(segment=8)", "infini(segment=16)"}
    assert set(meta[meta["curve"] == "infini(segment=16)"]["point"]) == {"h1", "h2", "h4"}
