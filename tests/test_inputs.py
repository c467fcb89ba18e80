"""Input inference (graph/inputs.py), example inputs, and lazy imports of torchvision/timm."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torchvision

import ghn_init
from ghn_init.graph.inputs import default_inputs, infer_input_size, prepare

from .conftest import REPO, tiny_ghn

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")


def test_import_does_not_import_torchvision_or_timm_and_rules_register_late():
    # importing torchvision after ghn_init still gives torchvision layers their GHN node types
    code = (
        "import sys, torch.nn as nn, ghn_init\n"
        "print(sorted(m for m in ('torchvision', 'timm') if m in sys.modules))\n"
        "from torchvision.models.convnext import LayerNorm2d\n"
        "g = ghn_init.trace(nn.Sequential(nn.Conv2d(3, 4, 1), LayerNorm2d(4)), (3, 4, 4))\n"
        "print([n.type for n in g.nodes if n.module_name == '1'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "['ln']"]


def test_channels_come_from_the_stem_conv():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    assert infer_input_size(model) == (1, 224, 224)
    model.pretrained_cfg = {"input_size": (3, 64, 64)}  # a stale config: the conv wins for channels
    assert infer_input_size(model) == (1, 64, 64)
    model.expected_input_sz = 32
    assert infer_input_size(model) == (3, 32, 32)


class _SpaceToDepthNet(nn.Module):
    """A stem that changes the channel count before the first conv (timm's TResNet: 3 -> 48)."""

    pretrained_cfg = {"input_size": (3, 16, 16), "first_conv": "conv"}

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3)  # after a 2x2 space-to-depth of 3 channels
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 channels, got {x.shape[1]}")  # as TResNet's reshape fails
        x = nn.functional.pixel_unshuffle(x, 2)
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_stem_that_changes_channels_falls_back_to_the_configs_input_size():
    model = _SpaceToDepthNet()
    assert infer_input_size(model) == (12, 16, 16)  # the stem conv's channels: the first guess, wrong here
    graph = ghn_init.trace(model)  # used to fail: every way was tried with 12 channels only
    assert graph.tracer == "autograd-meta" and {"conv.weight", "fc.weight"} <= {n.name for n in graph.nodes}
    with pytest.raises(ghn_init.TraceError) as failed:  # when no candidate works, the error names each
        ghn_init.trace(_Broken())
    tried = {a.split(":")[0] for a in failed.value.attempts}
    assert tried == {"input (12, 16, 16)", "input (3, 16, 16)"}


class _Broken(_SpaceToDepthNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model runs on no input")


def test_torchvision_sizes():
    assert infer_input_size(torchvision.models.inception_v3(init_weights=False, aux_logits=False)) == (3, 299, 299)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8
    )
    assert infer_input_size(vit) == (3, 32, 32)
    assert infer_input_size(torchvision.models.video.r3d_18()) == (3, 16, 224, 224)
    assert ghn_init.trace(vit).tracer == "autograd-meta"


@needs_timm
def test_timm_in_chans_and_img_size_need_no_argument():
    # issue 9.1: timm's pretrained config still says (3, 224, 224)
    import timm

    cnn = timm.create_model("resnet18", in_chans=1, num_classes=10)
    assert infer_input_size(cnn) == (1, 224, 224)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10)
    assert infer_input_size(vit) == (3, 32, 32)
    for model in (cnn, vit):
        report = ghn_init.apply(model, tiny_ghn("ghn3"))
        assert report.fraction_predicted > 0.9


class _TwoImages(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(3, 4, 3)

    def forward(self, image1, image2, scale: float = 1.0):
        return (self.a(image1) + self.b(image2)) * scale


class PatchEmbeddings(nn.Module):
    """Like Hugging Face's ``ViTPatchEmbeddings``: states its ``image_size`` and refuses any other."""

    def __init__(self, image_size: int, channels: int = 3, patch: int = 8, dim: int = 16) -> None:
        super().__init__()
        self.image_size = (image_size, image_size)
        self.projection = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"Input image size ({x.shape[-2]}*{x.shape[-1]}) doesn't match model")
        return self.projection(x).flatten(2).transpose(1, 2)


class HubStyleViT(nn.Module):
    """The module structure of a Hugging Face ViT (``vit.embeddings.patch_embeddings``, a ``config``)."""

    def __init__(self, image_size: int, channels: int = 3) -> None:
        super().__init__()
        self.vit = nn.Module()
        self.vit.embeddings = nn.Module()
        self.vit.embeddings.patch_embeddings = PatchEmbeddings(image_size, channels)
        self.classifier = nn.Linear(16, 10)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.vit.embeddings.patch_embeddings(pixel_values).mean(1))


def test_the_image_size_is_read_off_the_patch_embedding_around_the_stem():
    # A Hugging Face ViT/DeiT built at a non-224 size could not be recorded without input_size: its size sits on
    # vit.embeddings.patch_embeddings.image_size, which only timm's name (patch_embed.img_size) was read for.
    assert infer_input_size(HubStyleViT(64)) == (3, 64, 64)
    assert infer_input_size(HubStyleViT(40, channels=1)) == (1, 40, 40)
    report = ghn_init.apply(HubStyleViT(64), tiny_ghn(), postprocess="none")
    assert report.tracer == "autograd-meta" and "classifier.weight" in report.predicted
    config_only = nn.Sequential(nn.Conv2d(3, 4, 3))
    config_only.config = type("Config", (), {"image_size": 48})()  # a Hugging Face model's config
    assert infer_input_size(config_only) == (3, 48, 48)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
@pytest.mark.parametrize("kind", ["ViT", "DeiT"])
def test_hugging_face_vit_and_deit_at_another_image_size_need_no_argument(kind: str):
    import transformers

    config = getattr(transformers, f"{kind}Config")(
        image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=10,
    )  # fmt: skip
    model = getattr(transformers, f"{kind}ForImageClassification")(config)
    assert infer_input_size(model) == (3, 64, 64)
    report = ghn_init.apply(model, tiny_ghn(), postprocess="none")
    assert report.tracer == "autograd-meta" and report.fraction_predicted > 0.9


def test_one_batch_per_required_positional_argument():
    args = default_inputs(_TwoImages(), (3, 8, 8))
    assert len(args) == 2 and all(a.shape == (2, 3, 8, 8) for a in args) and args[0] is not args[1]
    graph = ghn_init.trace(_TwoImages(), (3, 8, 8))
    assert {"a.weight", "b.weight"} <= {n.name for n in graph.nodes}


class _Keyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(5, 4)

    def forward(self, *, pixel_values, extra):
        return self.conv(pixel_values).mean((2, 3)) + self.fc(extra["feats"][0])


def test_example_inputs_and_kwargs():
    model = _Keyword()
    x = torch.ones(1, 3, 16, 16)
    kwargs = {"pixel_values": x, "extra": {"feats": [torch.ones(1, 5)]}}
    with pytest.raises(ghn_init.TraceError, match="example_kwargs"):
        ghn_init.trace(model)
    graph = ghn_init.trace(model, example_kwargs=kwargs)
    assert {"conv.weight", "fc.weight"} <= {n.name for n in graph.nodes}
    report = ghn_init.apply(model, tiny_ghn("ghn3"), example_kwargs=kwargs)
    assert report.fraction_predicted == 1.0
    assert torch.equal(x, torch.ones(1, 3, 16, 16))  # the caller's inputs are never written
    one = ghn_init.trace(model.conv, example_inputs=torch.zeros(1, 3, 8, 8))  # a lone tensor is one argument
    assert [n.name for n in one.nodes if n.is_param] == ["weight", "bias"]
    two = ghn_init.trace(_TwoImages(), example_inputs=(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)))
    assert {"a.weight", "b.weight"} <= {n.name for n in two.nodes}


def test_prepare_moves_nested_tensors_and_keeps_the_rest():
    args, kwargs = prepare((torch.ones(2, dtype=torch.float16), [3, torch.ones(1)]), {"k": "v"}, torch.device("meta"))
    assert args[0].is_meta and args[0].dtype == torch.float32
    assert args[1][0] == 3 and args[1][1].is_meta and kwargs == {"k": "v"}
    src = torch.ones(2)
    args, _ = prepare((src,), {}, torch.device("cpu"))
    assert torch.equal(args[0], src) and args[0].data_ptr() != src.data_ptr()
