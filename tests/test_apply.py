"""Self-contained tests of graph building and apply, with small GHNs built on the spot."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torchvision

import ghn_init
from ghn_init.graph import TraceError
from ghn_init.graph.graph import shortest_paths
from ghn_init.hub.checkpoints import CheckpointError, load_file

from .conftest import assert_unchanged, snapshot, tiny_ghn


class SmallNet(nn.Module):
    """A user's own network from standard layers: conv-bn-relu, a residual block, pooling, a head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.pool(x).mean((2, 3))
        return self.head(x)


# ---------------------------------------------------------------- graphs


def test_graph_of_small_net_is_a_typed_dag_from_the_input() -> None:
    graph = ghn_init.trace(SmallNet(), (3, 32, 32))
    types = [n.type for n in graph.nodes]
    assert types[0] == "input"
    assert types.count("input") == 1
    assert {"conv", "bn", "bias", "sum", "max_pool", "glob_avg"} <= set(types)
    assert all(s < d for s, d in graph.edges), "nodes must be in topological order"
    reachable = {0}
    for s, d in graph.edges:  # topological order: one pass suffices
        if s in reachable:
            reachable.add(d)
    assert reachable == set(range(len(graph))), "every node must be reachable from the input"
    names = {n.name for n in graph.nodes if n.is_param}
    assert "stem.0.weight" in names and "head.weight" in names
    assert "stem.1.bias" not in names, "norm biases are predicted with the weight, not nodes"


def test_virtual_edges_are_shortest_paths_up_to_the_cutoff() -> None:
    graph = ghn_init.trace(torchvision.models.resnet18(), (3, 64, 64))
    n = len(graph)
    inf = float("inf")
    dist = [[inf] * n for _ in range(n)]
    for s, d in graph.edges:
        dist[s][d] = 1
    for k, i, j in itertools.product(range(n), repeat=3):  # Floyd-Warshall as an independent check
        if dist[i][k] + dist[k][j] < dist[i][j]:
            dist[i][j] = dist[i][k] + dist[k][j]
    expected = {(i, j): int(dist[i][j]) for i in range(n) for j in range(n) if 2 <= dist[i][j] <= 50}
    assert graph.virtual_edges == expected
    assert shortest_paths(3, [(0, 1), (1, 2)], cutoff=1) == {(0, 1): 1, (1, 2): 1}


def test_trace_restores_modes_and_leaves_tensors_alone() -> None:
    model = SmallNet().train()
    model.head.eval()
    before = snapshot(model)
    ghn_init.trace(model, (3, 32, 32))
    assert model.training and not model.head.training and model.stem.training
    assert_unchanged(model, before)


class NeedsRealValues(nn.Module):
    """Data-dependent control flow: cannot run on meta tensors, so the real-forward fallback is used."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.abs().sum().item() >= 0:  # .item() needs real data
            x = torch.relu(x)
        return self.fc(x.mean((2, 3)))


def test_model_that_cannot_run_on_meta_uses_the_real_forward_fallback(ghn3) -> None:
    model = NeedsRealValues()
    report = ghn_init.apply(model, ghn3, input_size=(3, 16, 16))
    assert report.tracer == "autograd-forward"
    assert any("real forward" in note for note in report.notes)
    assert set(report.predicted) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model is broken")


def test_untraceable_model_raises_a_clear_error_and_is_untouched(ghn3) -> None:
    model = Broken()
    before = snapshot(model)
    with pytest.raises(TraceError, match="input_size"):
        ghn_init.apply(model, ghn3)
    assert_unchanged(model, before)


def test_bad_inputs_are_rejected_clearly(ghn3) -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        ghn_init.apply("resnet50", ghn3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameters"):
        ghn_init.apply(nn.ReLU(), ghn3)


def test_corrupted_checkpoint_gives_an_actionable_error(tmp_path) -> None:
    bad = tmp_path / "ghn.pt"
    bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_file(bad)
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "missing.pt")


# ---------------------------------------------------------------- apply


@pytest.mark.parametrize("kind", ["ghn3", "ghn2"])
def test_apply_predicts_every_graph_tensor_deterministically(kind: str) -> None:
    ghn = tiny_ghn(kind)
    a, b = SmallNet(), SmallNet()
    rep = ghn_init.apply(a, ghn, input_size=(3, 32, 32))
    ghn_init.apply(b, ghn, input_size=(3, 32, 32))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert rep.fraction_predicted == 1.0, rep.left_alone
    assert rep.left_alone == {}
    text = str(rep)
    assert "SmallNet" in text and "100.0%" in text


def test_predictions_are_scaled_like_fan_in_init(ghn3) -> None:
    model = SmallNet()
    ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    bn = model.stem[1]
    assert ((bn.weight > 0) & (bn.weight < 2)).all(), "norm weights are squashed into (0, 2)"
    assert (bn.bias.abs() < 1).all(), "biases are squashed into (-1, 1)"
    assert not torch.equal(bn.weight, torch.ones_like(bn.weight)), "norm weights were predicted"


def test_keep_classifier_leaves_the_head_alone(ghn3) -> None:
    model = SmallNet()
    head = snapshot(model.head)
    rep = ghn_init.apply(model, ghn3, input_size=(3, 32, 32), predict_classifier=False)
    assert_unchanged(model.head, head)
    assert "head.weight" not in rep.predicted and "head.weight" in rep.left_alone


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_apply_keeps_dtypes(ghn3, dtype) -> None:
    reference, model = SmallNet(), SmallNet().to(dtype)
    ghn_init.apply(reference, ghn3, input_size=(3, 32, 32))
    ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    for (k, ref), got in zip(reference.state_dict().items(), model.state_dict().values(), strict=True):
        if ref.is_floating_point():
            assert got.dtype == dtype, k
            assert torch.allclose(got.float(), ref.to(dtype).float()), k


def test_list_of_models_is_one_batched_forward_with_the_same_result() -> None:
    for kind in ("ghn3", "ghn2"):
        ghn = tiny_ghn(kind)
        singles = [SmallNet(), torchvision.models.mobilenet_v3_small(num_classes=10)]
        batched = [SmallNet(), torchvision.models.mobilenet_v3_small(num_classes=10)]
        for m in singles:
            ghn_init.apply(m, ghn, input_size=(3, 32, 32))
        reports = ghn_init.apply(batched, ghn, input_size=(3, 32, 32))
        assert isinstance(reports, list) and len(reports) == 2
        for s, b in zip(singles, batched, strict=True):
            for (k, vs), vb in zip(s.state_dict().items(), b.state_dict().values(), strict=True):
                assert torch.allclose(vs, vb, atol=1e-6), (kind, k)


def test_strict_raises_before_writing_anything(ghn3) -> None:
    model = SmallNet()
    model.scale = nn.Parameter(torch.ones(1))  # a bare parameter no GHN knows
    before = snapshot(model)
    with pytest.raises(ghn_init.StrictError, match="scale"):
        ghn_init.apply(model, ghn3, input_size=(3, 32, 32), strict=True)
    assert_unchanged(model, before)
    rep = ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    assert "scale" in rep.left_alone


def test_failure_while_writing_rolls_back_every_tensor(ghn3, monkeypatch) -> None:
    model = SmallNet()
    before = snapshot(model)
    params_before = dict(model.named_parameters())
    real_swap = ghn_init.writing._swap
    calls = {"n": 0}

    def flaky_swap(target, data):
        calls["n"] += 1
        if calls["n"] == 4:  # fail in the middle of writing
            raise RuntimeError("simulated device failure")
        real_swap(target, data)

    monkeypatch.setattr(ghn_init.writing, "_swap", flaky_swap)
    with pytest.raises(RuntimeError, match="simulated"):
        ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    assert calls["n"] == 4
    assert_unchanged(model, before)
    monkeypatch.undo()
    ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    assert all(p is params_before[n] for n, p in model.named_parameters()), "Parameter objects must be kept"


def test_non_finite_predictions_are_refused_and_nothing_is_written(ghn3) -> None:
    with torch.no_grad():
        ghn3.decoder.conv[2].bias.fill_(float("nan"))
    model = SmallNet()
    before = snapshot(model)
    with pytest.raises(FloatingPointError):
        ghn_init.apply(model, ghn3, input_size=(3, 32, 32))
    assert_unchanged(model, before)


class ScaledConv(nn.Module):
    """A custom layer type outside torch.nn: invisible to the GHN until registered."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, padding=1) * 0.5


class WithCustomLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.custom = ScaledConv(3, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.custom(x)).mean((2, 3)))


def test_register_module_teaches_the_ghn_a_custom_layer(ghn3) -> None:
    rep = ghn_init.apply(WithCustomLayer(), ghn3, input_size=(3, 16, 16))
    assert "custom.weight" in rep.left_alone
    ghn_init.register_module(ScaledConv, "conv")
    try:
        model = WithCustomLayer()
        before = model.custom.weight.detach().clone()
        rep = ghn_init.apply(model, ghn3, input_size=(3, 16, 16))
        assert "custom.weight" in rep.predicted
        assert not torch.equal(model.custom.weight, before)
    finally:
        from ghn_init.graph import primitives

        primitives._MODULE_RULES.pop(ScaledConv, None)
    with pytest.raises(ValueError, match="unknown primitive"):
        ghn_init.register_module(ScaledConv, "convolution")


# ---------------------------------------------------------------- frozen and partly-meta models


def test_frozen_parameters_are_left_alone_and_reported(ghn3) -> None:
    # A frozen backbone (requires_grad=False) was overwritten silently.
    torch.manual_seed(0)
    model = SmallNet()
    model.stem.requires_grad_(False)
    before = snapshot(model)
    report = ghn_init.apply(model, ghn3, postprocess="none")
    frozen = {"stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias"}
    for name in frozen:
        assert torch.equal(model.state_dict()[name], before[name]), name
        assert report.left_alone[name].startswith("frozen (requires_grad=False)")
        assert name not in report.predicted
    assert not torch.equal(model.state_dict()["block.0.weight"], before["block.0.weight"])
    assert "frozen (requires_grad=False)" in str(report)
    assert set(report.to_dict()["left_alone"]) >= frozen
    ghn_init.apply(model, ghn3, postprocess="none", strict=True)  # frozen on purpose is not "missing"
    everything = ghn_init.apply(model, ghn3, postprocess="none", predict_frozen=True)
    assert frozen <= set(everything.predicted)
    assert not torch.equal(model.state_dict()["stem.0.weight"], before["stem.0.weight"])


def test_a_partly_meta_model_is_refused_and_left_as_it_was(ghn3) -> None:
    # Only the first parameter's device was read: meta tensors elsewhere were "predicted" and never written.
    model = SmallNet()
    model.head.weight = nn.Parameter(torch.empty(10, 16, device="meta"))
    before = {k: v for k, v in snapshot(model).items() if v.device.type != "meta"}
    expected = r"1 of its \d+ tensors on the meta device \(head.weight\)"
    with pytest.raises(ghn_init.InvalidArgumentError, match=expected) as e:
        ghn_init.apply(model, ghn3, postprocess="none")
    assert e.value.argument == "model" and "\n" not in str(e.value)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert after["head.weight"].device.type == "meta"
    report = ghn_init.predict(model, ghn3, postprocess="none", dry_run=True).report  # a dry run writes nothing
    assert report.predicted


def test_an_all_meta_model_is_refused_with_a_typed_error_naming_its_tensors(ghn3) -> None:
    # It was a plain ValueError; now the same typed error as a partly-meta model.
    with torch.device("meta"):
        model = SmallNet()
    for call in (ghn_init.apply, ghn_init.predict):
        with pytest.raises(ghn_init.InvalidArgumentError, match=r"all \d+ tensors .* meta device \(stem.0.weight") as e:
            call(model, ghn3, postprocess="none")
        assert e.value.argument == "model" and "to_empty" in str(e.value) and "\n" not in str(e.value)
    assert ghn_init.predict(model, ghn3, postprocess="none", dry_run=True).report.fraction_predicted == 1.0


def test_models_on_different_devices_are_a_typed_error(ghn3) -> None:
    with torch.device("meta"):
        meta = SmallNet()
    with pytest.raises(ghn_init.InvalidArgumentError, match="different devices") as e:
        ghn_init.predict([SmallNet(), meta], ghn3, dry_run=True)
    assert e.value.argument == "model"


def test_write_refuses_a_model_moved_to_meta_after_the_prediction(ghn3) -> None:
    # A copy into a meta tensor writes nothing; write() reported it as written.
    model = SmallNet()
    prediction = ghn_init.predict(model, ghn3, postprocess="none")
    model.to("meta")
    with pytest.raises(ghn_init.WriteError, match="meta device"):
        prediction.write()


def test_calibration_keeps_the_statistics_of_a_frozen_backbone(ghn3) -> None:
    # data= re-estimated every BatchNorm's running statistics, a frozen backbone's too.
    torch.manual_seed(0)
    model = SmallNet()
    model.stem.requires_grad_(False)
    with torch.no_grad():
        model.stem[1].running_mean.fill_(0.5)
    before = snapshot(model)
    report = ghn_init.apply(model, ghn3, postprocess="none", data=torch.randn(8, 3, 32, 32))
    for name in ("stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked", "stem.0.weight"):
        assert torch.equal(model.state_dict()[name], before[name]), name
    assert not torch.equal(model.block[1].running_var, before["block.1.running_var"])
    assert "1 frozen layers kept theirs" in report.calibration["batchnorm"]


def test_a_ghn_on_the_meta_device_is_refused_for_a_real_write(ghn3) -> None:
    # apply(model, load_ghn(..., device="meta")) failed in the GHN copy with NotImplementedError.
    meta = ghn_init.load_ghn(ghn3, device="meta")
    model = SmallNet()
    before = snapshot(model)
    with pytest.raises(ghn_init.InvalidArgumentError, match="meta device") as e:
        ghn_init.apply(model, meta, postprocess="none")
    assert e.value.argument == "ghn"
    assert_unchanged(model, before)
    with pytest.raises(ghn_init.InvalidArgumentError, match="meta device"):  # it cannot run a dry run either
        ghn_init.predict(model, meta, postprocess="none", dry_run=True)


def test_a_float8_model_is_written_and_checked_for_overflow(ghn3) -> None:
    # The overflow check called torch.isfinite on float8, which torch lacks: NotImplementedError.
    model = SmallNet().to(torch.float8_e4m3fn)
    report = ghn_init.apply(model, ghn3, postprocess="none")
    assert report.fraction_predicted == 1.0 and model.head.weight.dtype == torch.float8_e4m3fn
    assert torch.isfinite(model.head.weight.float()).all()


class WithIndexParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.index = nn.Parameter(torch.arange(3), requires_grad=False)  # an integer parameter (a lookup table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_an_integer_parameter_does_not_stop_the_meta_recorder() -> None:
    # Its meta stand-in was made to require grad ("only Tensors of floating point dtype can require gradients"),
    # so the model needed the fx fallback.
    graph = ghn_init.trace(WithIndexParameter(), input_size=(3, 8, 8))
    assert graph.tracer == "autograd-meta" and not graph.notes
