import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")  # tests about wandb set offline themselves


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def task_data(tmp_path_factory):
    """The default corpus (parsed once per session) with a private cache folder, as tasks that read text need it."""
    from tasks.base import TaskData
    from tasks.data.corpus import load_corpus
    from tests.helpers import corpus_cache

    cache = corpus_cache.seed(tmp_path_factory.mktemp("task-cache"))
    return TaskData(load_corpus({"source": "cpython"}, cache), cache)
