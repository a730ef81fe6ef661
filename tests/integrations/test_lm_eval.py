"""lm-eval both ways: our models as the lm-eval model `memorybench` (memory carried across documents), and our
tasks exported as lm-eval YAML + jsonl run by lm-eval's own CLI on a Hugging Face model. Numbers through lm-eval
equal our harness's numbers on the same data."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bench.integrations.lm_eval_export import export
from bench.integrations.lm_eval_model import MemoryBenchLM
from bench.models.backbone import Backbone, BackboneSpec
from bench.models.streaming import StreamingLM
from bench.models.tokenizers import ByteTokenizer
from tasks.longqa import LongQATask, QAOptions
from tasks.passkey import PasskeyOptions, PasskeyTask
from tasks.perplexity import PerplexityOptions, PerplexityTask
from tests.helpers import corpus_cache
from tests.helpers.hf_models import save_tiny

TOK = ByteTokenizer()


class KeyCopyLM:
    """A stand-in reader that answers some samples right and some wrong, deterministically from the text: copies
    the pass key it finds, except keys that are multiples of 3 (it answers 00000) and keys that are 1 mod 5 (it
    adds a digit: wrong under exact match of the digit run)."""

    tokenizer = TOK

    def generate(self, context, max_new_tokens, stop=None):
        found = re.search(r"pass key is (\d+)", TOK.decode(context))
        key = found.group(1) if found else "00000"
        answer = "00000" if int(key) % 3 == 0 else key + ("7" if int(key) % 5 == 1 else "")
        return TOK.encode(" " + answer + ". The")[:max_new_tokens]

    def generate_batch(self, contexts, max_new_tokens, stop=None):
        return [self.generate(c, max_new_tokens, stop) for c in contexts]

    def state_bytes_after(self, n_tokens):
        return 0


@pytest.fixture(scope="module")
def streaming_lm() -> StreamingLM:
    torch.manual_seed(0)
    return StreamingLM(Backbone(BackboneSpec(TOK.vocab_size, 32, 2, 2, 64), "sliding_window", {"window": 16}),
                       TOK, chunk_size=50)


def evaluate_with_lm_eval(model, names, folder):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder), include_defaults=False)
    return simple_evaluate(model=model, tasks=names, task_manager=manager, log_samples=False,
                           bootstrap_iters=0)["results"]


def test_passkey_export_scores_exactly_like_the_harness(task_data, tmp_path):
    task = PasskeyTask(PasskeyOptions(name="passkey", depths=[0.0, 0.5, 1.0]), TOK, task_data)
    names = export({"passkey": task}, [300, 400], 6, 0, tmp_path)
    assert names == ["memorybench_passkey_300", "memorybench_passkey_400"]
    lm = KeyCopyLM()
    results = evaluate_with_lm_eval(MemoryBenchLM(lm), names, tmp_path)
    for length, name in zip([300, 400], names, strict=True):
        ours = [r for r in task.evaluate(lm, [length], 6, 0) if r.metric == "exact_match"]
        correct, total = round(sum(r.value * r.n for r in ours)), sum(r.n for r in ours)
        assert 0 < correct < total  # the stand-in gets some right and some wrong
        assert results[name]["exact_match,scored"] * total == pytest.approx(correct, abs=1e-9)  # the same samples
    config = yaml.safe_load((tmp_path / "memorybench_passkey_300.yaml").read_text())
    assert Path(config["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    rows = [json.loads(line) for line in (tmp_path / "data" / "memorybench_passkey_300.jsonl").open()]
    assert len(rows) == 18 and all(TOK.encode(r["prompt"]).__len__() == 300 for r in rows)


def test_perplexity_through_lm_eval_carries_memory_and_matches_bits_per_byte(task_data, streaming_lm, tmp_path):
    task = PerplexityTask(PerplexityOptions(name="perplexity", buckets=[64, 256, 700]), TOK, task_data)
    names = export({"perplexity": task}, [], 4, 0, tmp_path)
    results = evaluate_with_lm_eval(MemoryBenchLM(streaming_lm), names, tmp_path)["memorybench_perplexity"]
    ours = {r.metric: r.value for r in task.evaluate(streaming_lm, [], 4, 0) if r.subtask == "overall"}
    assert results["bits_per_byte,none"] == pytest.approx(ours["bits_per_byte"], abs=1e-6)
    # the adapter's rolling loglikelihood is one stream over the whole document, not independent windows
    doc = task.documents(1)[0]
    from lm_eval.api.instance import Instance

    request = Instance("loglikelihood_rolling", {}, (TOK.decode(doc),), 0)
    (ll,) = MemoryBenchLM(streaming_lm).loglikelihood_rolling([request])
    assert ll == pytest.approx(-float(streaming_lm.rolling_nll(doc).double().sum()), abs=1e-6)


def test_longqa_export_writes_one_task_per_family_and_length(task_data, tmp_path):
    task = LongQATask(QAOptions(name="longqa", families=["single_fact", "multikey"]), TOK, task_data)
    names = export({"longqa": task}, [300], 3, 0, tmp_path)
    assert names == ["memorybench_longqa_single_fact_300", "memorybench_longqa_multikey_300"]
    row = json.loads((tmp_path / "data" / "memorybench_longqa_multikey_300.jsonl").open().readline())
    a, b = row["fact_spans"][0]
    assert row["answer"] in TOK.decode(TOK.encode(row["prompt"])[a:b])


@pytest.mark.slow  # 36 s: lm-eval's own CLI in a subprocess
def test_lm_eval_cli_runs_an_exported_task_on_a_local_hf_llama(task_data, tmp_path):
    model_dir = save_tiny("llama", tmp_path / "llama")
    task = PasskeyTask(PasskeyOptions(name="passkey", depths=[0.5]), TOK, task_data)
    export({"passkey": task}, [300], 2, 0, tmp_path / "tasks")
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
         "--tasks", "memorybench_passkey_300", "--include_path", str(tmp_path / "tasks"), "--device", "cpu",
         "--batch_size", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "memorybench_passkey_300" in done.stdout and "exact_match" in done.stdout


def test_bench_lm_eval_cli_trains_or_loads_our_model_and_runs_a_task(task_data, tmp_path):
    from bench.integrations.lm_eval_run import main

    task = PerplexityTask(PerplexityOptions(name="perplexity", buckets=[64, 128]), TOK, task_data)
    export({"perplexity": task}, [], 2, 0, tmp_path / "tasks")
    cache = corpus_cache.seed(tmp_path / "cache")
    code = main(["--tasks", "memorybench_perplexity", "--include-path", str(tmp_path / "tasks"), "--output",
                 str(tmp_path / "out.json"), "sweep=smoke", "mechanism=infini", f"cache_dir={cache}"])
    assert code == 0
    results = json.loads((tmp_path / "out.json").read_text())["results"]["memorybench_perplexity"]
    assert results["bits_per_byte,none"] > 0
    assert main(["--tasks", "nope", "--include-path", str(tmp_path / "tasks"), "sweep=smoke"]) == 2
