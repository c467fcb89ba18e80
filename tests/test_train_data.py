"""Tests for the GHN training data: random architectures and fractal images."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.fx
from torch import nn

from ghn_init.train.archs import (
    MERGE_OPS,
    NORMS,
    SHRINKABLE_TORCHVISION,
    STEMS,
    UNARY_OPS,
    ArchSpec,
    SampledNet,
    build_model,
    sample_arch,
    sample_models,
    shrink_torchvision,
)
from ghn_init.train.fractals import IMAGENET_MEAN, IMAGENET_STD, FractalDataset

NUM_CLASSES = 7
NUM_MODELS = 30


@pytest.fixture(scope="module")
def models() -> list[nn.Module]:
    return sample_models(NUM_MODELS, seed=0, num_classes=NUM_CLASSES)


def _specs(count: int, **kwargs) -> list[ArchSpec]:
    return [sample_arch(random.Random(seed), num_classes=NUM_CLASSES, **kwargs) for seed in range(count)]


def _ops(spec: ArchSpec) -> set[str]:
    return {node.op for stage in spec.stages for node in stage.cell.nodes}


# --------------------------------------------------------------------------- architectures


def test_sample_arch_is_deterministic_by_seed():
    assert _specs(30) == _specs(30)
    assert len({json.dumps(spec.to_dict()) for spec in _specs(30)}) == 30


def test_spec_round_trips_through_json():
    for spec in _specs(30):
        assert ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_sample_models_is_deterministic_and_prefix_stable():
    first = sample_models(3, seed=5, num_classes=NUM_CLASSES)
    again = sample_models(5, seed=5, num_classes=NUM_CLASSES)
    for model, same in zip(first, again, strict=False):
        assert model.spec == same.spec
        for (name, tensor), (other_name, other) in zip(
            model.state_dict().items(), same.state_dict().items(), strict=True
        ):
            assert name == other_name and torch.equal(tensor, other)
    other_seed = sample_models(3, seed=6, num_classes=NUM_CLASSES)
    assert [m.spec for m in first] != [m.spec for m in other_seed]


def test_sample_models_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    sample_models(2, seed=0, num_classes=NUM_CLASSES)
    assert torch.equal(state, torch.random.get_rng_state())


def test_sampler_covers_vocabulary_and_respects_limits():
    specs = _specs(400, max_width=32, max_cells=3)
    assert set().union(*map(_ops, specs)) == set(UNARY_OPS) | set(MERGE_OPS)
    assert {spec.norm for spec in specs} == set(NORMS)
    assert {(spec.stem, spec.stem_stride) for spec in specs} == set(STEMS)
    assert {spec.num_cells for spec in specs} == {1, 2, 3}
    widths = {stage.width for spec in specs for stage in spec.stages}
    assert max(widths) == 32 and all(width % 8 == 0 for width in widths)


def test_models_forward_and_backward(models):
    for model in models:
        for size in (32, 64):
            model.zero_grad()
            logits = model(torch.randn(2, 3, size, size))
            assert logits.shape == (2, NUM_CLASSES)
            logits.logsumexp(dim=1).sum().backward()
            for name, param in model.named_parameters():
                assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_classifier_is_last_parameterised_layer(models):
    for model in models:
        with_params = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
        assert isinstance(with_params[-1], nn.Linear)
        assert with_params[-1] is model.classifier and model.classifier.out_features == NUM_CLASSES
        last_weight, last_bias = list(model.parameters())[-2:]
        assert last_weight is model.classifier.weight and last_bias is model.classifier.bias


def test_models_are_fx_traceable(models):
    """Symbolic tracing fails on data-dependent control flow, so this guards plain-tensor forwards."""
    images = torch.randn(2, 3, 32, 32)
    for model in models:
        model.eval()
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(images), model(images))
        model.train()


def test_models_run_at_imagenet_resolution(models):
    with_attention = [m for m in models if "msa" in _ops(m.spec)]
    heaviest_stem = [m for m in models if m.spec.stem_stride == 1]
    assert with_attention and heaviest_stem
    with torch.no_grad():
        for model in with_attention[:2] + heaviest_stem[:1]:
            assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, NUM_CLASSES)
            model.train()


def test_build_model_accepts_other_input_channels():
    spec = sample_arch(random.Random(3), num_classes=4, in_channels=1)
    model = build_model(spec)
    assert isinstance(model, SampledNet)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("name", SHRINKABLE_TORCHVISION)
def test_shrink_torchvision(name):
    small, full = shrink_torchvision(name, 0.25, 5), shrink_torchvision(name, 1.0, 5)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters())


def test_shrink_torchvision_rejects_unknown_family():
    with pytest.raises(ValueError, match="unsupported"):
        shrink_torchvision("resnet18", 0.5, 10)


# --------------------------------------------------------------------------- fractals


def test_fractal_dataset_is_deterministic_by_seed_and_index():
    dataset = FractalDataset(num_classes=3, samples_per_class=4)
    same = FractalDataset(num_classes=3, samples_per_class=4)
    for index in (0, 5, 11):
        assert torch.equal(dataset[index][0], same[index][0])
        assert torch.equal(dataset[index][0], dataset[index][0])
    other_seed = FractalDataset(num_classes=3, samples_per_class=4, seed=1)
    assert not torch.equal(dataset[0][0], other_seed[0][0])
    # Class IFSs depend on (seed, class) only, so a larger dataset extends a smaller one.
    larger = FractalDataset(num_classes=5, samples_per_class=4)
    assert all(torch.equal(a.maps, b.maps) for a, b in zip(dataset.ifs, larger.ifs, strict=False))


def test_fractal_samples_shape_range_and_labels():
    dataset = FractalDataset(num_classes=3, samples_per_class=4, image_size=32)
    assert len(dataset) == 12
    labels = [dataset[index][1] for index in range(len(dataset))]
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    image = dataset[-1][0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert not torch.equal(dataset[0][0], dataset[1][0]), "jitter must make samples of a class differ"
    with pytest.raises(IndexError):
        dataset[12]

    normalized = FractalDataset(num_classes=3, samples_per_class=4, normalize=True)[-1][0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(normalized, (image - mean) / std)

    assert FractalDataset(num_classes=1, samples_per_class=1, image_size=64)[0][0].shape == (3, 64, 64)


def test_fractal_ifs_are_contractive_probability_weighted_systems():
    for ifs in FractalDataset(num_classes=20, samples_per_class=1).ifs:
        assert 2 <= len(ifs.maps) <= 4
        linear = ifs.maps[:, :4].view(-1, 2, 2)
        assert (torch.linalg.matrix_norm(linear, ord=2) < 1).all()
        assert (ifs.probs > 0).all() and torch.isclose(ifs.probs.sum(), torch.tensor(1.0))
        mapped = (linear @ ifs.fixed_points.unsqueeze(-1)).squeeze(-1) + ifs.maps[:, 4:]
        torch.testing.assert_close(mapped, ifs.fixed_points, atol=1e-5, rtol=1e-5)


def test_fractal_classes_are_separable():
    """Class mean images differ, and nearest-centroid classification beats chance by far."""
    num_classes, per_class, train = 4, 16, 10
    dataset = FractalDataset(num_classes=num_classes, samples_per_class=per_class)
    gray = torch.stack([dataset[index][0].mean(0).flatten() for index in range(len(dataset))])
    gray = (gray / gray.amax(dim=1, keepdim=True)).view(num_classes, per_class, -1)
    centroids = gray[:, :train].mean(dim=1)
    assert (centroids[0] - centroids[1]).abs().mean() > 0.02
    held_out = gray[:, train:].reshape(-1, gray.shape[-1])
    predictions = torch.cdist(held_out, centroids).argmin(dim=1)
    labels = torch.arange(num_classes).repeat_interleave(per_class - train)
    assert (predictions == labels).float().mean() >= 0.5  # chance is 0.25
