"""Detection, segmentation, video and optical-flow models: applied with no extra argument, still running after."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator

import ghn_init
from ghn_init.models import create_model

from .conftest import tiny_ghn


def _tiny_faster_rcnn() -> FasterRCNN:
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1)
    )
    backbone.out_channels = 16
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64, rpn_anchor_generator=anchors)


def test_tiny_detection_model_applies_and_still_runs():
    # issue 9.3/9.4: nonzero has no meta kernel; the meta attempt must leave no meta tensor behind
    model = _tiny_faster_rcnn()
    anchors = model.rpn.anchor_generator.cell_anchors
    report = ghn_init.apply(model, tiny_ghn("ghn3"))
    assert report.tracer == "autograd-forward"
    assert report.fraction_predicted >= 0.9
    assert model.rpn.anchor_generator.cell_anchors is anchors and not any(a.is_meta for a in anchors)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores"}
    # the region proposal head runs, but detection outputs do not depend on it through autograd
    assert "no gradient path" in report.left_alone["rpn.head.cls_logits.weight"]


def test_video_layers_are_reported_outside_the_vocabulary():
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 4, 8, 8))
    assert report.left_alone["0.weight"] == "Conv3d is outside the GHN vocabulary (register_module can map it)"
    assert "4.weight" in report.predicted


class _TwoFrames(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.flow = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, image1, image2, num_flow_updates: int = 2):
        f = torch.cat([self.encoder(image1), self.encoder(image2)], 1)
        return [self.flow(f) for _ in range(num_flow_updates)]


def test_flow_style_forward_gets_two_images():
    report = ghn_init.apply(_TwoFrames(), tiny_ghn("ghn3"), input_size=(3, 16, 16))
    assert report.fraction_predicted == 1.0


DETECTION = torchvision.models.list_models(module=torchvision.models.detection)


@pytest.mark.slow
@pytest.mark.parametrize("name", DETECTION)
def test_every_torchvision_detection_model(name):
    model = create_model(name)
    report = ghn_init.apply(model, "bundled", postprocess="none")  # coverage of the raw predictions
    assert report.fraction_predicted >= 0.9, str(report)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 128, 160)])
    assert isinstance(out, list) and all(torch.isfinite(t).all() for t in out[0].values() if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["raft_small", "lraspp_mobilenet_v3_large", "quantized_resnet18", "mvit_v2_s"])
def test_other_families_apply_with_no_argument(name):
    model = create_model(name)
    report = ghn_init.apply(model, "bundled", postprocess="none")  # coverage of the raw predictions
    assert report.fraction_predicted >= 0.9, str(report)


@pytest.mark.slow
def test_3d_cnn_layers_are_reported_outside_the_vocabulary():
    report = ghn_init.apply(create_model("r3d_18"), "bundled")
    reasons = set(report.left_alone.values())
    assert "Conv3DSimple is outside the GHN vocabulary (register_module can map it)" in reasons
    assert "BatchNorm3d is outside the GHN vocabulary (register_module can map it)" in reasons
    assert report.predicted == ["fc.weight", "fc.bias"]
