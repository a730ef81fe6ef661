"""`train.precision`: bfloat16 autocast of the training forward pass. It must really run in bfloat16 (outputs move
by bfloat16 rounding, not by nothing), keep training float32 (parameters and gradients), work for every per-layer
mechanism, and stay out of cell identities and checkpoint keys at float32, where it would rename results that
predate it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.core.hashing import content_hash
from bench.core.precision import AUTOCAST_DTYPES, autocast
from bench.harness.preflight import job_configs
from bench.harness.runner import cell_identity
from bench.models.backbone import Backbone, BackboneSpec
from bench.training.protocols import unkeyed_precision
from tests.helpers.mechanism_cases import per_layer_names, small_options

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", per_layer_names())
def test_a_bfloat16_step_trains_every_mechanism_in_float32_with_bfloat16_rounding(name):
    torch.manual_seed(0)
    model = Backbone(BackboneSpec(64, 32, 2, 4, 64), name, small_options(name))
    tokens = torch.randint(0, 64, (2, 45))
    with torch.no_grad():
        exact, _ = model(tokens)
    with autocast("bfloat16", CPU):
        logits, _ = model(tokens)
    assert logits.dtype == torch.bfloat16
    gap = (logits.float() - exact).abs().max().item()
    # bfloat16 keeps 8 significant bits: logits of size ~1 move by ~1e-2, never by nothing or by their own size
    assert 0 < gap < 0.1 * exact.abs().max().item() + 0.05, gap
    F.cross_entropy(logits.float().reshape(-1, 64), tokens.reshape(-1)).backward()
    for pname, p in model.named_parameters():
        if p.numel() == 0:  # an unused slot (BSWA has no FAM tokens)
            continue
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, pname
        assert torch.isfinite(p.grad).all(), pname


def test_float32_is_no_autocast():
    assert AUTOCAST_DTYPES["float32"] is None
    x = torch.randn(3, 4)
    with autocast("float32", CPU):
        assert (x @ x.T).dtype == torch.float32


def test_float32_stays_out_of_cell_and_checkpoint_keys_and_bfloat16_keys_its_own(tmp_path):
    store = [f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}", "mechanism=full", "task=passkey"]
    hashes = {}
    for extra in ([], ["train.precision=float32"], ["train.precision=bfloat16"]):
        (cfg,) = job_configs([*store, *extra])
        identity = cell_identity(cfg)
        hashes[tuple(extra)] = content_hash(identity)
        assert ("precision" in identity["train"]) == bool(extra and extra[0].endswith("bfloat16"))
    assert hashes[()] == hashes[("train.precision=float32",)] != hashes[("train.precision=bfloat16",)]
    assert unkeyed_precision("precision", "float32") and not unkeyed_precision("precision", "bfloat16")
    assert not unkeyed_precision("seed", 1)
