"""Checkpoints: verified by their recorded SHA-256 (corruption and a missing digest are named, never blessed
after the fact), and the checkpoint cache retrains what it cannot verify and clears writers' orphaned temp files."""

import pytest
import torch

from bench.models.backbone import Backbone, BackboneSpec
from bench.training import checkpoints
from bench.training.checkpoints import CorruptCheckpoint, load_checkpoint, save_checkpoint


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
