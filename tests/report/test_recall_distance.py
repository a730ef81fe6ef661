"""Recall against key -> query distance, read from per-query outcomes in the samples (mqar): a windowed fixture
model recalls exactly the queries within its reach, and the figure is drawn per task/subtask."""

from bench.models.tokenizers import ByteTokenizer
from bench.report.plots import query_distances, recall_vs_distance
from bench.report.samples import load_samples
from bench.results.records import RunInfo, append_records, read_records, records_path
from bench.results.samples import sample_rows, write_samples
from bench.results.summary import cells
from tasks.base import TaskData
from tasks.mqar import MqarOptions, MqarTask
from tests.helpers.recall import RecallLM


def test_recall_vs_distance_from_the_samples(tmp_path):
    path = records_path(tmp_path, "cap")
    task = MqarTask(MqarOptions(name="mqar", num_kv_pairs=[8]), ByteTokenizer(), TaskData(None, tmp_path / "cache"))
    reach = {"full": 10**6, "sliding_window": 32}
    for mech, r in reach.items():
        results = task.evaluate(RecallLM(r), [128], n=30, seed=0)
        info = RunInfo(sweep="cap", mechanism=mech, options={}, task="mqar", model="tiny", seed=1, train_length=128,
                       config_hash=f"h-{mech}", run_id=mech, git_sha="abc", created_at="2026-11-29T00:00:00+00:00")
        write_samples(path, info.config_hash, sample_rows(info.config_hash, "mqar", results))
        append_records(path, [info.record(context_length=c.context_length, metric=c.metric, value=c.value, n=c.n,
                                          subtask=c.subtask, data_hash=c.data_hash) for c in results])
    df, samples = cells(read_records(path)), load_samples([path])
    queries = query_distances(df, samples)
    assert len(queries) == 2 * 30 * 8 and set(queries["task"]) == {"mqar/kv8"}
    window = queries[queries["mechanism"] == "sliding_window"]
    assert (window["hit"] == (window["distance"] <= 32)).all() and window["hit"].any() and not window["hit"].all()
    assert queries[queries["mechanism"] == "full"]["hit"].all()
    paths = recall_vs_distance(df, samples, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["recall_vs_distance_mqar-kv8.png", "recall_vs_distance_mqar-kv8.svg"]
    assert recall_vs_distance(df, None, tmp_path / "none") == []  # records without samples: no figure
