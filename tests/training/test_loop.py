"""The training loop's optimizer: parameters a mechanism asks to move faster (Infini-attention's gates) get their
own group, at their multiplied learning rate and without weight decay; every parameter is in exactly one group."""

import pytest

from bench.models.backbone import Backbone, BackboneSpec
from bench.training.loop import param_groups

D, H, N = 32, 4, 8


def test_gates_get_their_own_optimizer_group_without_decay():
    model = Backbone(BackboneSpec(50, D, 2, H, 64), "infini", {"segment": N, "gate_lr_mult": 20.0})
    groups = param_groups(model, weight_decay=0.1, lr=1e-3)
    gate_group = [g for g in groups if any(p is model.blocks[0].mixer.gate for p in g["params"])]
    assert len(gate_group) == 1 and gate_group[0]["lr"] == pytest.approx(2e-2)
    assert gate_group[0]["weight_decay"] == 0.0 and len(gate_group[0]["params"]) == 2  # one per layer
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    qkv_group = [g for g in groups if any(p is model.blocks[0].mixer.qkv.weight for p in g["params"])][0]
    assert qkv_group["weight_decay"] == 0.1 and qkv_group["lr"] == pytest.approx(1e-3)
