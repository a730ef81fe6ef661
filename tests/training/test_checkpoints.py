"""Checkpoints: verified by their recorded SHA-256 (corruption and a missing digest are named, never blessed
after the fact), and the checkpoint cache retrains what it cannot verify, clears writers' orphaned temp files and
trains a checkpoint that parallel jobs share only once."""

import subprocess
import sys
import time

import pytest
import torch

from bench.models.backbone import Backbone, BackboneSpec
from bench.training import checkpoints
from bench.training.checkpoints import CorruptCheckpoint, load_checkpoint, save_checkpoint
from tests.helpers import ROOT


def test_checkpoints_are_verified_by_hash_and_corruption_is_named(tmp_path):
    model = Backbone(BackboneSpec(50, 16, 1, 2, 32), "full", {})
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model.state_dict(), {"note": "x"})
    assert load_checkpoint(path)["meta"] == {"note": "x"}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensor data: torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="SHA-256"):
        load_checkpoint(path)
    save_checkpoint(path, model.state_dict(), {})
    (tmp_path / "ckpt.pt.sha256").unlink()  # killed between the checkpoint's rename and its digest: not trusted
    with pytest.raises(CorruptCheckpoint, match="no recorded SHA-256"):
        load_checkpoint(path)
    assert not (tmp_path / "ckpt.pt.sha256").exists()  # and never blessed after the fact


def test_checkpoint_cache_retrains_what_it_cannot_verify_and_clears_orphan_temps(tmp_path):
    path = tmp_path / "ckpt.pt"
    trained = []

    def fit():
        trained.append(1)
        return "model", {"w": torch.ones(2)}, {}

    orphan = tmp_path / ".ckpt.pt.999999999.tmp"  # a writer killed mid-write (no such pid)
    orphan.write_bytes(b"partial")
    assert checkpoints.cached(path, "t", lambda s: "loaded", fit) == "model" and len(trained) == 1
    assert not orphan.exists()
    assert checkpoints.cached(path, "t", lambda s: "loaded", fit) == "loaded" and len(trained) == 1
    (tmp_path / "ckpt.pt.sha256").unlink()
    assert checkpoints.cached(path, "t", lambda s: "loaded", fit) == "model" and len(trained) == 2
    path.write_bytes(path.read_bytes()[:100])  # truncated under a valid-looking name: the digest catches it
    assert checkpoints.cached(path, "t", lambda s: "loaded", fit) == "model" and len(trained) == 3


def test_clearing_orphans_never_takes_a_live_writers_digest_temp(tmp_path):
    """Two sweep workers sharing one base checkpoint: one writes the digest while the other starts. The checkpoint's
    glob also matches `.ckpt.pt.sha256.<pid>.tmp`; that file belongs to a live process and must survive."""
    import os

    path = tmp_path / "ckpt.pt"
    live_digest_temp = tmp_path / f".ckpt.pt.sha256.{os.getpid()}.tmp"
    live_temp = tmp_path / f".ckpt.pt.{os.getpid()}.tmp"
    dead_digest_temp = tmp_path / ".ckpt.pt.sha256.999999999.tmp"
    for f in (live_digest_temp, live_temp, dead_digest_temp):
        f.write_bytes(b"partial")
    checkpoints.remove_orphan_temps(path)
    assert live_digest_temp.exists() and live_temp.exists()
    assert not dead_digest_temp.exists()


WORKER = """
import logging, sys, time
from pathlib import Path
import torch
from bench.training import checkpoints

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
path, name = Path(sys.argv[1]), sys.argv[2]

def fit():
    (path.parent / f"trained-by-{name}").touch()
    while not (path.parent / "go").exists():  # hold the lock until the test lets go
        time.sleep(0.05)
    return "model", {"w": torch.ones(2)}, {}

print(checkpoints.cached(path, name, lambda s: "loaded", fit), flush=True)
"""


def test_parallel_jobs_sharing_a_checkpoint_train_it_once(tmp_path):
    """Two sweep jobs wanting the same base model: the second waits for the first's training and loads its
    checkpoint (without the lock it would find no checkpoint and train the base again)."""
    path = tmp_path / "ckpt.pt"

    def start(name):
        return subprocess.Popen([sys.executable, "-c", WORKER, str(path), name], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=(tmp_path / f"{name}.log").open("w"))

    def wait_for(condition, job):
        deadline = time.monotonic() + 120
        while not condition():
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.05)

    first = start("first")
    second = None
    try:
        wait_for((tmp_path / "trained-by-first").exists, first)
        second = start("second")
        # it reaches the lock while the first job holds it (without the lock it would start training instead)
        wait_for(lambda: "waiting for it" in (tmp_path / "second.log").read_text()
                 or (tmp_path / "trained-by-second").exists(), second)
        (tmp_path / "go").touch()
        assert first.communicate(timeout=120)[0].strip() == "model"
        assert second.communicate(timeout=120)[0].strip() == "loaded"
        assert not (tmp_path / "trained-by-second").exists()
    finally:
        (tmp_path / "go").touch()  # never leave a worker holding on
        for job in (first, second):
            if job is not None and job.poll() is None:
                job.kill()
