"""Report accuracy: who owns each parameter (tied weights, shared modules), the right reason for every tensor
left alone, the right names, ``to_dict``."""

from __future__ import annotations

import json
from collections import OrderedDict
from types import SimpleNamespace

import torch
import torch.nn as nn

import ghn_init
from ghn_init.graph.autograd_trace import owner_map, parameter_owners
from ghn_init.report import CLASSIFIER_KEPT, ghn_name

from .conftest import tiny_cnn, tiny_ghn


def test_classifier_kept_by_predict_classifier_false():
    model = tiny_cnn(5)
    report = ghn_init.apply(model, tiny_ghn("ghn3"), predict_classifier=False, input_size=(3, 8, 8))
    assert report.left_alone == {"5.weight": CLASSIFIER_KEPT, "5.bias": CLASSIFIER_KEPT}
    assert "0.weight" in report.predicted


class _ScaledConv(nn.Conv2d):
    """A conv (in the vocabulary) with an extra parameter that is neither weight nor bias."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1))

    def forward(self, x):
        return super().forward(x) * self.gain


def test_parameter_not_named_weight_or_bias():
    model = nn.Sequential(_ScaledConv(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    reason = report.left_alone["0.gain"]
    assert "'gain' of _ScaledConv" in reason and "only a layer's weight and bias" in reason
    assert "outside the GHN vocabulary" not in reason


def test_weight_norm_both_kinds():
    model = nn.Sequential(
        nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3)),
        nn.ReLU(),
        nn.utils.weight_norm(nn.Conv2d(8, 8, 3)),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 2),
    )
    before = [p.detach().clone() for p in model.parameters()]
    report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    for name in ("0.parametrizations.weight.original0", "0.parametrizations.weight.original1"):
        assert "parametrized tensor" in report.left_alone[name], report.left_alone[name]
    for name in ("2.weight_g", "2.weight_v"):
        assert "computed by a hook" in report.left_alone[name], report.left_alone[name]
    assert len(before) == len(list(model.parameters()))


def test_published_stem_rename_is_explained():
    # timm's conv_stem: the published builder cuts names at 'stem' and finds no 'stem.weight'
    model = nn.Sequential(OrderedDict(conv_stem=nn.Conv2d(3, 8, 3), act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten(), fc=nn.Linear(8, 2)))
    report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    reason = report.left_alone["conv_stem.weight"]
    assert "'stem.weight'" in reason and "DeepNets-1M" in reason


def test_detached_branch_is_not_called_unused():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.proposals = nn.Conv2d(3, 4, 3)
            self.unused = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head((self.body(x) + self.proposals(x).detach()).mean((2, 3)))

    report = ghn_init.apply(Detached(), tiny_ghn("ghn3"), input_size=(3, 8, 8))
    assert "no gradient path" in report.left_alone["proposals.weight"]
    assert "not used by the forward pass" in report.left_alone["unused.weight"]


def test_compiled_model_is_named_and_recorded_through_the_wrapped_module():
    model = tiny_cnn(5)
    compiled = torch.compile(model)
    report = ghn_init.apply(compiled, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    assert report.model == "Sequential"
    assert report.predicted[0] == "0.weight" and report.fraction_predicted == 1.0


def test_fine_tuned_ghn_name():
    ghn = tiny_ghn("ghn3")
    ghn.config.extra = {"source": "/runs/ghn/final", "fine_tuned_from": "bundled"}
    assert ghn_name(ghn) == "/runs/ghn/final (fine-tuned from bundled)"
    ghn.config.extra = {"name": "ghn3-t-m8"}
    assert ghn_name(ghn) == "ghn3-t-m8"


def test_to_empty_buffers_are_named():
    with torch.device("meta"):
        model = tiny_cnn(5)
    model.to_empty(device="cpu")
    with torch.no_grad():
        model[1].running_var.fill_(float("nan"))  # what uninitialized memory may hold
        model[1].running_mean.zero_()
    report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    assert report.suspect_buffers == {"1.running_var": "non-finite values"}
    assert "1.running_var" in str(report) and "reset_running_stats" in str(report)
    model[1].reset_running_stats()
    assert ghn_init.predict(model, tiny_ghn("ghn3"), input_size=(3, 8, 8)).report.suspect_buffers == {}
    with torch.no_grad():
        model[1].running_var.zero_()
    assert ghn_init.predict(model, tiny_ghn("ghn3"), input_size=(3, 8, 8)).report.suspect_buffers == {
        "1.running_var": "running variance not positive"
    }


def test_suspect_buffers_checked_together_name_each_bad_one():
    from ghn_init.report import _CHECKED_TOGETHER, suspect_buffers

    model = nn.Sequential(*(nn.BatchNorm2d(4) for _ in range(5)), nn.BatchNorm1d(4).double())
    model.register_buffer("big", torch.zeros(_CHECKED_TOGETHER + 1))  # checked on its own
    model.register_buffer("steps", torch.zeros(3, dtype=torch.long))  # not floating: not checked
    assert suspect_buffers(model) == {}
    with torch.no_grad():
        model[1].running_var[2] = 0.0
        model[3].running_mean[0] = float("inf")
        model[5].running_var[1] = float("nan")  # float64: a group of its own
        model.big[-1] = float("nan")
    assert suspect_buffers(model) == {
        "1.running_var": "running variance not positive",
        "3.running_mean": "non-finite values",
        "5.running_var": "non-finite values",
        "big": "non-finite values",
    }


def test_to_dict_is_json_and_complete():
    report = ghn_init.apply(tiny_cnn(5), tiny_ghn("ghn3"), predict_classifier=False, input_size=(3, 8, 8))
    d = json.loads(json.dumps(report.to_dict()))
    assert d["model"] == "Sequential" and d["fraction_predicted"] == report.fraction_predicted
    assert d["left_alone"] == report.left_alone and d["predicted"] == report.predicted
    assert set(d) >= {"ghn", "tracer", "nodes", "seconds", "notes", "numel_total", "suspect_buffers"}


def test_fine_tuning_drops_the_base_name(tmp_path):
    from ghn_init.train.trainer import Trainer

    from .test_train import _tiny_config

    # only the initial-GHN step of a fine-tuning run (building a whole Trainer takes seconds)
    fake_trainer = SimpleNamespace(config=_tiny_config(tmp_path, init_from="bundled"))
    ghn = Trainer._initial_ghn(fake_trainer)
    extra = ghn.config.extra
    assert extra.get("fine_tuned_from") == "bundled" and "name" not in extra and "source" not in extra
    assert ghn_name(ghn).endswith("(fine-tuned from bundled)")
    assert ghn_init.load_ghn("bundled").config.extra.get("name") == "bundled"  # the cached base is untouched


class TiedAndShared(nn.Module):
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
    model = TiedAndShared()
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


def test_a_ghn_from_a_local_folder_is_reported_by_its_path(tmp_path) -> None:
    # It was reported as "ghn3" (its kind), which says nothing about which GHN wrote the model.
    import torchvision

    from ghn_init.hub.checkpoints import save_folder

    from .conftest import tiny_ghn

    folder = save_folder(tiny_ghn(), tmp_path / "my-ghn")
    report = ghn_init.apply(torchvision.models.resnet18(num_classes=10), str(folder), postprocess="none")
    assert report.ghn == str(folder.resolve()) and str(folder.resolve()) in str(report)
    # the kind stays available on its own (and in the first line, next to the path)
    assert report.ghn_kind == "ghn3" and report.to_dict()["ghn_kind"] == "ghn3"
    assert str(report).splitlines()[0].endswith(f"<- {folder.resolve()} (ghn3)")
    assert str(ghn_init.apply(torchvision.models.resnet18(), "bundled")).splitlines()[0].endswith("<- bundled (ghn3)")
