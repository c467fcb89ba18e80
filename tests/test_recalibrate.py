"""recalibrate_bn: BatchNorm running statistics re-estimated from data, nothing else changed."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import ghn_init

from .conftest import tiny_ghn
from .test_apply import SmallNet


def test_statistics_are_the_data_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4.0
    bn = nn.BatchNorm2d(3, momentum=0.01)
    model = nn.Sequential(bn).eval()
    ghn_init.recalibrate_bn(model, x, batch_size=16)  # 4 batches, equal weights
    flat = x.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(bn.running_mean, flat.mean(1), atol=1e-5)
    # the cumulative average of per-batch unbiased variances
    per_batch = torch.stack([c.transpose(0, 1).reshape(3, -1).var(1) for c in x.split(16)]).mean(0)
    assert torch.allclose(bn.running_var, per_batch, atol=1e-4)
    assert bn.momentum == 0.01 and not model.training and not bn.training


def test_restores_modes_keeps_weights_rng_and_disables_dropout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.9), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    model.train()
    model[4].eval()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    x = torch.randn(8, 3, 6, 6)
    state = torch.get_rng_state()
    ghn_init.recalibrate_bn(model, [x])
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and model[2].training and not model[4].training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # with dropout off the statistics equal those of the plain conv outputs
    assert torch.allclose(model[2].running_mean, model[0](x).mean((0, 2, 3)), atol=1e-5)


def test_accepts_loaders_and_limits_batches() -> None:
    torch.manual_seed(0)
    x = torch.randn(40, 3, 4, 4)
    loader = DataLoader(TensorDataset(x, torch.zeros(40, dtype=torch.long)), batch_size=10)
    bn = nn.BatchNorm2d(3)
    ghn_init.recalibrate_bn(nn.Sequential(bn), loader, max_batches=2)
    assert int(bn.num_batches_tracked) == 2
    assert torch.allclose(bn.running_mean, x[:20].mean((0, 2, 3)), atol=1e-5)


def test_empty_or_unreadable_data_raises_and_keeps_statistics() -> None:
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(7.0)
    with pytest.raises(ValueError, match="no batch"):
        ghn_init.recalibrate_bn(nn.Sequential(bn), [])
    with pytest.raises(TypeError, match="cannot find the inputs"):
        ghn_init.recalibrate_bn(nn.Sequential(bn), [("not", "tensors")])
    assert torch.equal(bn.running_mean, torch.full((3,), 7.0)) and bn.momentum == 0.1


def test_repairs_eval_mode_outputs_after_apply() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    ghn_init.apply(model, tiny_ghn(), input_size=(3, 32, 32))
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        train_out = model.train()(x)
        model.eval()
        ghn_init.recalibrate_bn(model, x)
        eval_out = model(x)
    # eval mode now normalizes with (nearly) the statistics train mode used on the same batch
    assert torch.allclose(eval_out, train_out, rtol=0.05, atol=0.05 * train_out.abs().max().item())
