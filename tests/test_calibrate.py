"""Data-aware GHN init: ``apply(model, ghn, data=...)`` calibrates the written predictions on the user's data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import ghn_init
from ghn_init.calibrate import fit_logit_scale
from ghn_init.recalibrate import recalibrate_bn
from ghn_init.schemes.lsuv import layer_outputs, measuring

from .conftest import tiny_ghn


def mlp_cnn() -> nn.Module:
    """Conv layers with and without BatchNorm, a hidden linear layer, and a classifier."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def batch(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=g) * 3
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


def test_calibrated_layers_have_unit_output_variance_and_fitted_logits() -> None:
    ghn = tiny_ghn()
    x, y = batch()
    torch.manual_seed(0)
    model = mlp_cnn()
    report = ghn_init.apply(model, ghn, postprocess="none", data=(x, y))
    assert set(report.calibration) == {"0", "2", "7", "9", "batchnorm"}, report.calibration
    with measuring(model):
        outs = layer_outputs(model, x)
    for i in (0, 2, 7):
        assert abs(outs[model[i]].var().item() - 1) < 1e-3, i
    # the logit scale is the cross-entropy minimum: scaling the calibrated logits either way is worse
    logits = outs[model[9]]
    best = F.cross_entropy(logits, y).item()
    assert best <= min(F.cross_entropy(logits * f, y).item() for f in (0.8, 1.25)) + 1e-6
    assert abs(fit_logit_scale(logits, y) - 1) < 1e-2
    # the BatchNorm statistics are those of the calibrated model on the batch
    stats = (model[3].running_mean.clone(), model[3].running_var.clone())
    recalibrate_bn(model, x)
    assert torch.allclose(stats[0], model[3].running_mean) and torch.allclose(stats[1], model[3].running_var)
    assert "calibrated" in str(report)


def test_calibration_changes_scales_not_directions_and_nothing_without_data() -> None:
    ghn = tiny_ghn()
    x, y = batch()
    torch.manual_seed(0)
    plain, calibrated = mlp_cnn(), mlp_cnn()
    calibrated.load_state_dict(plain.state_dict())
    plain_report = ghn_init.apply(plain, ghn, postprocess="none")
    assert plain_report.calibration == {}
    ghn_init.apply(calibrated, ghn, postprocess="none", data=DataLoader(TensorDataset(x, y), batch_size=16))
    for i in (0, 2, 7, 9):
        a, b = plain[i].weight.flatten(), calibrated[i].weight.flatten()
        assert F.cosine_similarity(a, b, dim=0) > 0.9999 and not torch.allclose(a, b)
    assert not math.isclose(plain[3].running_var.sum().item(), calibrated[3].running_var.sum().item())


def test_unlabelled_data_keeps_the_logit_scale() -> None:
    x, _ = batch()
    torch.manual_seed(0)
    model = mlp_cnn()
    report = ghn_init.apply(model, tiny_ghn(), postprocess="none", data=x)
    assert report.calibration["9"] == "logit scale kept: the data has no labels"


def test_bad_data_or_a_failed_calibration_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = mlp_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ghn_init.InvalidArgumentError, match="data"):
        ghn_init.apply(model, tiny_ghn(), data="images")
    # The model cannot run on 1-channel inputs: calibration fails after writing (a RuntimeError from the forward
    # before; now a typed one-line error naming data), and the write is undone.
    with pytest.raises(ghn_init.InvalidArgumentError, match="could not run on data") as e:
        ghn_init.apply(model, tiny_ghn(), data=torch.randn(4, 1, 8, 8))
    assert e.value.argument == "data" and "\n" not in str(e.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_ghn_calibrate_scheme_in_compare() -> None:
    from .test_compare import tiny_data, tiny_net

    ghn = tiny_ghn()
    scheme = ghn_init.schemes.ghn_scheme(ghn, "none", calibrate=True)
    results = ghn_init.compare([tiny_net], {"cal": scheme}, tiny_data(), steps=2, seeds=1, progress=False)
    assert results.runs[0].report["calibration"]["batchnorm"].startswith("running statistics")
    assert ghn_init.get_scheme("ghn:bundled+orth+calibrate").__name__ == "ghn:bundled"
    with pytest.raises(ghn_init.InvalidArgumentError, match="calibrates on data"):
        scheme(tiny_net())
