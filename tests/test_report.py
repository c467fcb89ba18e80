"""Who owns each parameter (tied weights, shared modules), and what the report says about each tensor."""

from __future__ import annotations

import torch.nn as nn

import ghn_init
from ghn_init.graph.autograd_trace import owner_map, parameter_owners

from .conftest import tiny_ghn


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied
        self.shared = nn.Linear(4, 4)
        self.again = self.shared  # one module under two names

    def forward(self, x):
        return self.again(self.shared(self.b(self.a(x))))


def test_parameter_owners_list_every_name_and_owner_map_keeps_the_last() -> None:
    model = Tied()
    owners = parameter_owners(model)
    assert [name for name, _ in owners[id(model.a.weight)]] == ["a.weight", "b.weight"]
    assert [name for name, _ in owners[id(model.shared.weight)]] == ["shared.weight", "again.weight"]
    assert owner_map(model)[id(model.a.weight)] == ("b.weight", model.b)  # tied: the last owner wins
    assert owner_map(model)[id(model.shared.weight)][0] == "shared.weight"  # a shared module: its first path


def test_the_report_accounts_for_every_parameter_once() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    report = ghn_init.predict(model, tiny_ghn("ghn3"), input_size=(3, 8, 8)).report
    names = [name for name, _ in model.named_parameters()]
    assert sorted(report.predicted + list(report.left_alone)) == sorted(names)
    assert set(report.left_alone) == {"1.weight", "1.bias"}
    assert "outside the GHN vocabulary" in report.left_alone["1.weight"]
    assert report.numel_total == sum(p.numel() for p in model.parameters())
