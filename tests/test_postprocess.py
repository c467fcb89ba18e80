"""Post-processing of predicted parameters: orthogonal re-initialization, relative noise, drops."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import ghn_init
from ghn_init.networks import GHN, GHNConfig
from ghn_init.postprocess import (
    NOISE_SCALE_ROWS,
    POSTPROCESS_PARTS,
    PostProcess,
    Role,
    balance_dc,
    detile,
    orthogonalize,
    postprocess,
    relative_noise_scale,
)

from .conftest import assert_unchanged, snapshot, tiny_ghn
from .test_apply import SmallNet


class WideNet(nn.Module):
    """Layers wider than the tiny GHN's decoder (16 channels): their predictions are tiled copies."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 48, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(48)
        self.conv2 = nn.Conv2d(48, 48, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _is_orthonormal(w: torch.Tensor, atol: float = 1e-4) -> bool:
    m = w.detach().reshape(w.shape[0], -1).double()
    if m.shape[0] > m.shape[1]:
        m = m.t()
    return torch.allclose(m @ m.t(), torch.eye(m.shape[0], dtype=m.dtype), atol=atol)


# ---------------------------------------------------------------- specs


def test_spec_parsing_round_trips_and_rejects_bad_parts() -> None:
    assert PostProcess.parse("orth+noise") == PostProcess(orthogonal=True, noise=1e-5)
    assert PostProcess.parse("noise=1e-3").noise == 1e-3
    assert PostProcess.parse(None).is_identity and PostProcess.parse("none").is_identity
    specs = ("orth", "orth+noise=0.001", "orth+noise=1e-05+nohead+nobias+nogain", "nogain", "orth+nohead+nonorm")
    ours = ("orth+noise=1e-05+dcbalance+nohead", "dcbalance", "orth+dcbalance+detile+keepnorm+nogain")
    for spec in specs + ours:
        assert str(PostProcess.parse(spec)) == spec
        assert PostProcess.parse(str(PostProcess.parse(spec))) == PostProcess.parse(spec)
    with pytest.raises(ValueError, match="unknown post-processing 'orthh'") as err:
        PostProcess.parse("orthh")
    for part in POSTPROCESS_PARTS:  # the message lists every accepted part, and each of them parses
        assert part in str(err.value)
        assert not PostProcess.parse(part.replace("[=BETA]", "=0.1")).is_identity
    with pytest.raises(ValueError, match="twice"):
        PostProcess.parse("noise+noise=1e-3")
    with pytest.raises(ValueError):
        PostProcess.parse("noise=abc")
    with pytest.raises(ValueError):
        PostProcess(noise=-1.0)


def test_config_carries_a_validated_recommendation() -> None:
    cfg = GHNConfig(hid=16, max_shape=(16, 16, 5, 5), num_classes=10, layers=1, heads=2, postprocess="noise+orth")
    assert cfg.postprocess == "orth+noise=1e-05"
    assert GHNConfig.from_dict(cfg.to_dict()).postprocess == "orth+noise=1e-05"
    assert GHNConfig().postprocess is None  # published checkpoints (config inferred from keys) have none
    older = {k: v for k, v in GHNConfig().to_dict().items() if k != "postprocess"}  # config.json before the field
    assert GHNConfig.from_dict(older).postprocess is None
    assert GHNConfig.from_dict({**older, "postprocess": None}).postprocess is None
    with pytest.raises(ValueError, match="postprocess"):
        GHNConfig.from_dict({**older, "postprocess": 3})
    with pytest.raises(ValueError):
        GHNConfig(postprocess="bogus")


# ---------------------------------------------------------------- the math


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (40, 4, 1, 1), (7, 7), (30, 5), (5, 30)])
def test_orthogonalize_gives_orthonormal_rows_or_columns_spanning_the_prediction(shape) -> None:
    torch.manual_seed(0)
    w = torch.randn(shape)
    q = orthogonalize(w)
    assert q.shape == w.shape and _is_orthonormal(q)
    m, qm = w.reshape(shape[0], -1), q.reshape(shape[0], -1)
    tall = m.shape[0] >= m.shape[1]
    a, b = (m, qm) if tall else (m.t(), qm.t())
    # same column space, same orientation: a = b @ r with r upper triangular with a positive diagonal
    r = b.t() @ a
    assert torch.allclose(b @ r, a, atol=1e-4)
    assert torch.allclose(r, torch.triu(r), atol=1e-4) and (torch.diagonal(r) > 0).all()
    assert torch.allclose(orthogonalize(q), q, atol=1e-5), "an orthonormal matrix is a fixed point"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_orthogonalize_keeps_dtype(dtype) -> None:
    q = orthogonalize(torch.randn(6, 3, 3, 3).to(dtype))
    assert q.dtype == dtype and _is_orthonormal(q.float(), atol=2e-2)


def test_relative_noise_scale_is_the_spread_of_row_correlations() -> None:
    torch.manual_seed(1)
    for w in (torch.randn(50, 7), torch.randn(6, 3, 3, 3), torch.randn(5, 70)):
        m = w.reshape(w.shape[0], -1)
        m = m if m.shape[0] >= m.shape[1] else m.t()
        expected = torch.corrcoef(m).flatten().std().item()
        assert relative_noise_scale(w) == pytest.approx(expected, rel=1e-6)


def test_postprocess_is_pure_seeded_and_leaves_the_classifier() -> None:
    torch.manual_seed(0)
    pred = {
        "a.weight": torch.randn(6, 3, 3, 3),
        "bn.weight": torch.rand(6),
        "bn.bias": torch.randn(6),
        "fc.weight": torch.randn(4, 6),
        "fc.bias": torch.randn(4),
    }
    before = {k: v.clone() for k, v in pred.items()}
    kw = dict(classifier="fc.weight")
    out1 = postprocess(pred, "orth+noise=1e-2", generator=torch.Generator().manual_seed(3), **kw)
    out2 = postprocess(pred, "orth+noise=1e-2", generator=torch.Generator().manual_seed(3), **kw)
    out3 = postprocess(pred, "orth+noise=1e-2", generator=torch.Generator().manual_seed(4), **kw)
    assert all(torch.equal(pred[k], before[k]) for k in pred), "inputs must not be modified"
    assert all(torch.equal(out1[k], out2[k]) for k in pred), "same seed, same result"
    assert not torch.equal(out1["bn.weight"], out3["bn.weight"])
    assert _is_orthonormal(out1["a.weight"])
    assert out1["fc.weight"] is pred["fc.weight"] and out1["fc.bias"] is pred["fc.bias"]
    # noise on the norm layer is beta times the correlation spread of the weight before it
    delta = (out1["bn.weight"] - pred["bn.weight"]).abs().max().item()
    scale = 1e-2 * relative_noise_scale(pred["a.weight"])
    assert 0 < delta < 6 * scale


def test_noise_breaks_the_symmetry_of_tiled_predictions() -> None:
    block = torch.randn(4, 4)
    tiled = block.repeat(4, 4)  # rank 4, as a GHN's prediction of a 16x16 layer from a 4x4 decoder
    assert torch.linalg.matrix_rank(tiled) == 4
    noisy = postprocess({"w": tiled}, "noise=1e-3", generator=torch.Generator().manual_seed(0))["w"]
    assert torch.linalg.matrix_rank(noisy) == 16
    q = postprocess({"w": tiled}, "orth+noise", generator=torch.Generator().manual_seed(0))["w"]
    assert _is_orthonormal(q)


def _flat_share(w: torch.Tensor) -> float:
    """The share of a conv weight's energy in its kernels' spatial means."""
    w = w.detach().double()
    return float(w.mean((2, 3)).square().sum() * w.shape[2] * w.shape[3] / w.square().sum())


def test_balance_dc_gives_the_spatial_mean_an_isotropic_kernels_share() -> None:
    g = torch.Generator().manual_seed(0)
    shape_part = torch.randn(16, 8, 3, 3, generator=g)
    blurry = shape_part + 3.0 * torch.randn(16, 8, 1, 1, generator=g)  # mostly flat, like a decoder's kernels
    assert _flat_share(blurry) > 0.8
    out = balance_dc(blurry)
    assert abs(_flat_share(out) - 1 / 9) < 1e-6
    # only the spatial mean is scaled: the zero-mean part of every kernel is unchanged
    centred = lambda w: w - w.mean((2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(centred(out), centred(blurry), atol=1e-5)
    # rectangular kernels use their own tap count (1/15 for 3x5)
    assert abs(_flat_share(balance_dc(torch.randn(4, 2, 3, 5, generator=g) + 2)) - 1 / 15) < 1e-6
    # nothing to balance: 1x1 kernels, matrices, all-flat kernels, kernels with no excess mean (never amplified)
    low = centred(torch.randn(8, 8, 3, 3, generator=g)) + 0.01
    zero_mean = centred(torch.randn(2, 2, 3, 3))
    for w in (torch.randn(4, 4, 1, 1), torch.randn(4, 4), torch.ones(2, 2, 3, 3), zero_mean, low):
        assert balance_dc(w) is w
    assert balance_dc(blurry.half()).dtype == torch.float16


def test_dcbalance_runs_before_orth_and_touches_only_kernels() -> None:
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(8, 4, 3, 3, generator=g) + 2 * torch.randn(8, 4, 1, 1, generator=g)
    pred = {"conv.weight": conv, "fc.weight": torch.randn(10, 8, generator=g)}
    plain = postprocess(pred, "orth")
    balanced = postprocess(pred, "orth+dcbalance")
    assert torch.equal(balanced["conv.weight"], orthogonalize(balance_dc(conv)))
    assert _flat_share(plain["conv.weight"]) > 0.3 > _flat_share(balanced["conv.weight"])
    assert torch.equal(balanced["fc.weight"], plain["fc.weight"])
    assert torch.equal(postprocess(pred, "dcbalance")["conv.weight"], balance_dc(conv))
    # with noise too: the noise is added to the balanced kernels, not to the raw prediction (it was, and
    # the bundled GHN's recommendation, which has noise, silently lost dcbalance and detile)
    noisy = postprocess(pred, "orth+noise+dcbalance", generator=torch.Generator().manual_seed(0))["conv.weight"]
    assert _flat_share(noisy) < 0.3
    assert torch.allclose(noisy, balanced["conv.weight"], atol=1e-3)
    tiled = conv[:4, :2].repeat(2, 2, 1, 1)
    kept = postprocess({"w": tiled}, "noise+detile", block=(4, 2), generator=torch.Generator().manual_seed(0))["w"]
    assert not torch.allclose(kept[4:], kept[:4], atol=1e-3), "detile survives the noise"


def test_detile_keeps_the_predicted_block_and_unties_the_copies() -> None:
    g = torch.Generator().manual_seed(0)
    block = torch.randn(4, 4, 3, 3, generator=g)
    tiled = block.repeat(3, 2, 1, 1)  # (12, 8, 3, 3): how a 4x4 decoder fills a wider layer
    out = detile(tiled, (4, 4), torch.Generator().manual_seed(1))
    assert torch.equal(out[:4, :4], block)
    assert not torch.equal(out[:4, 4:], block) and not torch.equal(out[4:8, :4], block)
    assert 0.7 < float(out[4:].std() / block.std()) < 1.3  # the copies' spread, not their values
    again = detile(tiled, (4, 4), torch.Generator().manual_seed(1))
    assert torch.equal(out, again), "seeded"
    assert detile(block, (4, 4)) is block and detile(block, (8, 8)) is block
    # after orth, input channels c and c + 4 are no longer weighted alike
    tied = orthogonalize(tiled[:4]).reshape(4, 2, 4, 9)
    untied = orthogonalize(out[:4]).reshape(4, 2, 4, 9)
    assert torch.allclose(tied[:, 0], tied[:, 1], atol=1e-5)
    assert not torch.allclose(untied[:, 0], untied[:, 1], atol=0.1)
    with pytest.raises(ValueError, match="block"):
        postprocess({"w": tiled}, "orth+detile")
    seeded = postprocess({"w": tiled}, "detile", block=(4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(seeded["w"], out)


def test_keepnorm_gives_each_matrix_the_norm_it_is_given() -> None:
    g = torch.Generator().manual_seed(0)
    pred = {"conv.weight": torch.randn(8, 4, 3, 3, generator=g), "bn.bias": torch.randn(8, generator=g)}
    out = postprocess(pred, "orth+keepnorm", norms={"conv.weight": 3.0, "bn.bias": 5.0})
    assert abs(float(out["conv.weight"].norm()) - 3.0) < 1e-4
    assert _is_orthonormal(out["conv.weight"] / out["conv.weight"].reshape(8, -1).norm(dim=1).mean())
    assert out["bn.bias"] is pred["bn.bias"], "only matrices are rescaled"
    plain = postprocess(pred, "orth")["conv.weight"]
    for norms in (None, {}, {"conv.weight": 0.0}):  # nothing to scale to: the matrix keeps its scale
        assert torch.equal(postprocess(pred, "orth+keepnorm", norms=norms)["conv.weight"], plain)


def test_apply_keepnorm_and_detile_read_the_model_and_the_ghn(ghn3: GHN) -> None:
    """keepnorm takes each norm from the model's own tensor; detile keeps the decoder's 16x16 block."""
    torch.manual_seed(0)
    model = WideNet()  # 48 channels, the tiny GHN's decoder emits 16
    norms = {n: float(p.detach().norm()) for n, p in model.named_parameters()}
    raw = ghn_init.predict(model, ghn3, postprocess="none")
    pred = ghn_init.predict(model, ghn3, postprocess="detile+keepnorm", generator=torch.Generator().manual_seed(0))
    for name in ("conv1.weight", "conv2.weight"):
        assert abs(float(pred.tensors[name][1].norm()) - norms[name]) < 1e-3 * norms[name]
    raw_w, w = raw.tensors["conv2.weight"][1], pred.tensors["conv2.weight"][1]
    assert torch.equal(raw_w[:16, :16], raw_w[16:32, :16]), "the raw prediction is tiled"
    ratio = w[:16, :16] / raw_w[:16, :16]
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4), "the block is kept (rescaled)"
    assert not torch.allclose(w[16:32, :16] / w[:16, :16], ratio, rtol=1e-2), "the copies are not"


def test_orthogonal_keepnorm_baseline_keeps_each_norm() -> None:
    from ghn_init.harness.schemes import orthogonal_keepnorm, parse_scheme

    torch.manual_seed(0)
    model = TinyConvNeXt()
    before = snapshot(model)
    assert parse_scheme("orthogonal+keepnorm") is orthogonal_keepnorm
    orthogonal_keepnorm(model)
    assert not torch.equal(model.stem.weight, before["stem.weight"])
    assert abs(float(model.stem.weight.detach().norm() - before["stem.weight"].norm())) < 1e-4
    assert torch.equal(model.fc.weight, before["fc.weight"])


# ---------------------------------------------------------------- apply


def test_apply_orth_orthogonalizes_predictions_but_not_the_classifier(ghn3: GHN) -> None:
    torch.manual_seed(0)
    raw = WideNet()
    orth = copy.deepcopy(raw)
    ghn_init.apply(raw, ghn3, postprocess="none")
    report = ghn_init.apply(orth, ghn3, postprocess="orth")
    assert report.postprocess == "orth" and "postprocess orth" in str(report)
    assert not _is_orthonormal(raw.conv2.weight)
    assert _is_orthonormal(orth.conv1.weight) and _is_orthonormal(orth.conv2.weight)
    assert torch.equal(orth.fc.weight, raw.fc.weight) and torch.equal(orth.bn1.weight, raw.bn1.weight)


def test_apply_uses_the_ghns_recommendation_by_default_and_none_keeps_predictions() -> None:
    plain = tiny_ghn()
    recommending = tiny_ghn(postprocess="orth")
    assert torch.equal(plain.state_dict()["embed.weight"], recommending.state_dict()["embed.weight"])
    torch.manual_seed(0)
    a = WideNet()
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    ghn_init.apply(a, plain)  # no recommendation: exact predictions
    ghn_init.apply(b, recommending)
    ghn_init.apply(c, recommending, postprocess=None)
    assert _is_orthonormal(b.conv2.weight) and not _is_orthonormal(a.conv2.weight)
    for (n, p), q in zip(a.named_parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_apply_noise_is_reproducible_with_a_generator(ghn3: GHN) -> None:
    torch.manual_seed(0)
    a = WideNet()
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    ghn_init.apply(a, ghn3, postprocess="noise=1e-2", generator=torch.Generator().manual_seed(7))
    ghn_init.apply(b, ghn3, postprocess="noise=1e-2", generator=torch.Generator().manual_seed(7))
    ghn_init.apply(c, ghn3, postprocess="noise=1e-2", generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.conv2.weight, c.conv2.weight)
    assert torch.equal(a.fc.weight, c.fc.weight), "the classifier gets no noise"
    assert torch.equal(a.conv1.bias, c.conv1.bias), "biases of convolutions get no noise (as published)"


def test_drops_leave_tensors_at_the_models_init_and_say_why(ghn3: GHN) -> None:
    torch.manual_seed(0)
    model = WideNet()
    before = snapshot(model)
    report = ghn_init.apply(model, ghn3, postprocess="nohead+nobias+nogain")
    kept = {"fc.weight", "fc.bias", "conv1.bias", "bn1.weight", "bn2.weight"}
    for name, value in model.state_dict().items():
        if name in kept:
            assert torch.equal(value, before[name]), name
            assert "post-processing" in report.left_alone[name]
    assert not torch.equal(model.conv1.weight, before["conv1.weight"])
    assert not torch.equal(model.bn1.bias, before["bn1.bias"]), "norm biases are still written"


def test_nonorm_leaves_norm_layers_and_orth_still_applies(ghn3: GHN) -> None:
    torch.manual_seed(0)
    model = WideNet()
    before = snapshot(model)
    report = ghn_init.apply(model, ghn3, postprocess="orth+nonorm")
    for name in ("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"):
        assert torch.equal(model.state_dict()[name], before[name]) and "post-processing" in report.left_alone[name]
    assert _is_orthonormal(model.conv2.weight) and not torch.equal(model.conv1.bias, before["conv1.bias"])


def test_bad_postprocess_leaves_the_model_unchanged(ghn3: GHN) -> None:
    model = SmallNet()
    before = snapshot(model)
    with pytest.raises(ValueError, match="unknown post-processing"):
        ghn_init.apply(model, ghn3, postprocess="orth+typo")
    assert_unchanged(model, before)


def test_bundled_ghn_recommends_post_processing() -> None:
    ghn = ghn_init.load_ghn("bundled")
    assert ghn.config.postprocess is not None and PostProcess.parse(ghn.config.postprocess).orthogonal


class HeadFirst(nn.Module):
    """The classifier is registered before the body: parameter order is not forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 10)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def test_nohead_drops_the_classifier_the_plan_decodes(ghn3) -> None:
    """`nohead` and `predict_classifier=False` agree on which tensor is the classifier (the plan's), whatever
    the parameter order: a rule of "the last weight matrix" picked `body.2.weight` here (and maxvit_t's
    `classifier.5` while the GHN decodes `classifier.3` as the head)."""
    kept = ghn_init.predict(HeadFirst(), ghn3, input_size=(3, 16, 16), predict_classifier=False, postprocess="none")
    dropped = ghn_init.predict(HeadFirst(), ghn3, input_size=(3, 16, 16), postprocess="nohead")
    assert "head.weight" not in kept.tensors and "head.weight" not in dropped.tensors
    assert set(dropped.tensors) == set(kept.tensors)
    assert "body.2.weight" in dropped.tensors


@pytest.mark.parametrize("spec", ["orth+nohead+nobias", "orth+noise+dcbalance+nohead+nogain"])
def test_a_dry_run_reports_what_post_processing_leaves_out(ghn3, spec) -> None:
    """A dry run's tensors are on the meta device: only the drops apply (dcbalance read values and raised)."""
    real = ghn_init.predict(SmallNet(), ghn3, input_size=(3, 32, 32), postprocess=spec)
    dry = ghn_init.predict(SmallNet(), ghn3, input_size=(3, 32, 32), postprocess=spec, dry_run=True)
    assert dry.report.predicted == real.report.predicted
    assert dry.report.left_alone == real.report.left_alone
    assert dry.report.postprocess == real.report.postprocess != "none"


# ---------------------------------------------------------------- roles


class TinyConvNeXt(nn.Module):
    """A stem and one torchvision ConvNeXt block: its ``layer_scale`` is ``(C, 1, 1)``, a gain."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.convnext import CNBlock

        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.block = CNBlock(16, layer_scale=1e-6, stochastic_depth_prob=0.0)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def _tiny_vit() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(16, 4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)


def test_roles_are_read_off_the_modules_not_the_shapes(ghn3: GHN) -> None:
    from ghn_init.planning import Slot
    from ghn_init.postprocess import Role, roles_of

    prediction = ghn_init.predict(_tiny_vit(), ghn3, postprocess="none")
    roles = roles_of(prediction.tensors)
    assert roles["encoder.pos_embedding"] is Role.EMBEDDING and roles["conv_proj.weight"] is Role.MATRIX
    assert roles["encoder.layers.encoder_layer_0.ln_1.weight"] is Role.GAIN
    assert roles["encoder.layers.encoder_layer_0.ln_1.bias"] is Role.NORM_BIAS
    assert roles["encoder.layers.encoder_layer_0.mlp.0.bias"] is Role.BIAS
    # a ConvNeXt layer scale is (C, 1, 1): three dimensions, but a per-channel gain, not a matrix
    block = TinyConvNeXt().block
    slot = Slot(block, "block", "layer_scale", True, tuple(block.layer_scale.shape))
    assert roles_of({"block.layer_scale": (slot, torch.rand(16, 1, 1))}) == {"block.layer_scale": Role.GAIN}


def test_orth_leaves_layer_scales_and_position_embeddings_unorthogonalized(ghn3: GHN) -> None:
    from ghn_init.postprocess import Role

    scale, conv = torch.rand(16, 1, 1), torch.randn(16, 8, 3, 3)
    out = postprocess({"conv.weight": conv, "ls": scale}, "orth", roles={"ls": Role.GAIN})
    assert out["ls"] is scale and _is_orthonormal(out["conv.weight"])
    torch.manual_seed(0)
    raw = _tiny_vit()
    orth = copy.deepcopy(raw)
    for model, spec in ((raw, "none"), (orth, "orth")):
        torch.manual_seed(1)  # the class token's row is drawn, as published (decode.fit_to_shape)
        ghn_init.apply(model, ghn3, postprocess=spec)
    assert torch.equal(orth.encoder.pos_embedding, raw.encoder.pos_embedding)
    assert _is_orthonormal(orth.conv_proj.weight)


def test_noembed_and_nogain_leave_embeddings_and_layer_scales_at_init(ghn3: GHN) -> None:
    from ghn_init.postprocess import Role

    out = postprocess({"ls": torch.rand(16, 1, 1), "bn.bias": torch.rand(16)}, "nogain", roles={"ls": Role.GAIN})
    assert list(out) == ["bn.bias"]
    model = _tiny_vit()
    before = snapshot(model)
    report = ghn_init.apply(model, ghn3, postprocess="orth+noembed")
    assert torch.equal(model.encoder.pos_embedding, before["encoder.pos_embedding"])
    assert "post-processing" in report.left_alone["encoder.pos_embedding"]
    assert not torch.equal(model.conv_proj.weight, before["conv_proj.weight"])


def test_orthogonal_baseline_touches_exactly_the_matrices() -> None:
    from ghn_init.harness.schemes import orthogonal

    torch.manual_seed(0)
    model = TinyConvNeXt()
    before = snapshot(model)
    orthogonal(model)
    assert torch.equal(model.block.layer_scale, before["block.layer_scale"]), "a layer scale is no matrix"
    assert torch.equal(model.fc.weight, before["fc.weight"]), "the classifier keeps its init"
    assert _is_orthonormal(model.stem.weight) and not torch.equal(model.stem.weight, before["stem.weight"])


def test_a_generator_makes_position_embeddings_reproducible(ghn3: GHN) -> None:
    # the class token's row of a position embedding is drawn (as published): from the generator if one is given
    model = _tiny_vit()
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter once a generator is given
        prediction = ghn_init.predict(model, ghn3, postprocess="none", generator=torch.Generator().manual_seed(5))
        draws.append(prediction.tensors["encoder.pos_embedding"][1])
    assert torch.equal(draws[0], draws[1])
    other = ghn_init.predict(model, ghn3, postprocess="none", generator=torch.Generator().manual_seed(6))
    assert not torch.equal(other.tensors["encoder.pos_embedding"][1][:, 0], draws[0][:, 0])
    assert torch.equal(other.tensors["encoder.pos_embedding"][1][:, 1:], draws[0][:, 1:]), "only the drawn row"


def test_post_processing_a_float32_model_computes_nothing_in_float64() -> None:
    # The noise scale's Gram matrices ran in float64 (7x the cost of float32, more than the QR itself).
    from torch.utils._python_dispatch import TorchDispatchMode

    class Dtypes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    self.seen.add(str(func))
            return out

    predicted = {"a.weight": torch.randn(16, 8, 3, 3), "b.weight": torch.randn(32, 16), "c.weight": torch.randn(10, 32)}
    with Dtypes() as mode:
        seeded = torch.Generator().manual_seed(0)
        out = postprocess(predicted, "orth+noise+dcbalance", classifier="c.weight", generator=seeded)
    assert mode.seen == set()
    assert all(t.dtype == torch.float32 for t in out.values())
    w = torch.randn(64, 27)
    assert relative_noise_scale(w) == pytest.approx(relative_noise_scale(w.double()), rel=1e-5)


# ---------------------------------------------------------------- fast paths (issue 20)

_SHAPES = [(64, 8, 3, 3), (16, 32, 3, 3), (96, 24), (24, 96), (32, 32), (32, 1, 3, 3), (48, 48, 1, 1)]


def _tall(m: torch.Tensor) -> torch.Tensor:
    m = m.reshape(m.shape[0], -1)
    return m if m.shape[0] >= m.shape[1] else m.t()


def _reference(predicted: dict, beta: float, block, generator: torch.Generator) -> dict:
    """The recommended steps written plainly from their definitions, one tensor after the other: everything in
    float32 (float64 for float64), one standard normal draw per tensor, rounded to the tensor's dtype once."""
    out, scale = {}, 0.0
    for name, w in predicted.items():
        work = torch.float64 if w.dtype == torch.float64 else torch.float32
        x = w.to(work)
        z = torch.randn(x.shape, generator=generator).to(work)
        if w.dim() >= 2:
            x = balance_dc(x)
            rows, cols = min(x.shape[0], block[0]), min(x.shape[1], block[1])
            kept = x[:rows, :cols].clone()
            spread = kept.std()
            x = spread * z  # the fill
            x[:rows, :cols] = kept
            scale = relative_noise_scale(x, NOISE_SCALE_ROWS)  # of the detiled matrix (estimator: tested below)
            alpha = beta * scale
            x = x * (1 + (alpha / spread) ** 2) ** 0.5  # the fill plus independent noise: sqrt(std^2 + alpha^2) z
            x[:rows, :cols] = kept + alpha * z[:rows, :cols]  # the prediction plus noise
            q, r = torch.linalg.qr(_tall(x))
            q = q * torch.sign(torch.diagonal(r))
            wide = x.shape[0] < x[0].numel()
            x = (q.t() if wide else q).reshape(w.shape)
        else:
            x = x + beta * scale * z
        out[name] = x.to(w.dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_recommended_steps_equal_their_plain_definitions_for_mixed_shapes(dtype) -> None:
    # The fast paths (in-place noise, column-major QR input, blocked Gram matrix) against the steps written
    # plainly: same generator, same draws in the same order, so the same tensors up to the dtype's rounding.
    g = torch.Generator().manual_seed(0)
    predicted = {}
    for i, shape in enumerate(_SHAPES):
        half = (shape[0] // 2,) + shape[1:]
        base = torch.randn(half, generator=g)
        if len(shape) == 4:
            base = base + 2 * torch.randn(*half[:2], 1, 1, generator=g)  # mostly flat kernels: dcbalance acts
        predicted[f"m{i}.weight"] = base.repeat(2, *([1] * (len(shape) - 1))).to(dtype)  # tiled, as decoders do
        predicted[f"n{i}.bias"] = torch.randn(shape[0], generator=g).to(dtype)  # a norm bias: the scale before it
    predicted["same.weight"] = predicted["m2.weight"].clone()  # two matrices of one shape: each its own draw
    roles = {n: Role.NORM_BIAS for n in predicted if n.endswith("bias")}
    block = (16, 16)
    ours = postprocess(predicted, "orth+noise=1e-2+dcbalance+detile", roles=roles, block=block,
                       generator=torch.Generator().manual_seed(5))
    plain = _reference(predicted, 1e-2, block, torch.Generator().manual_seed(5))
    atol = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    for name, w in ours.items():
        assert w.dtype == dtype and w.shape == predicted[name].shape and w.is_contiguous(), name
        assert torch.allclose(w.double(), plain[name].double(), atol=atol, rtol=0), name
        if w.dim() >= 2:
            assert _is_orthonormal(w.float(), atol=max(atol, 1e-4) * 30), name
    assert not torch.equal(ours["same.weight"], ours["m2.weight"]), "one draw per tensor, not one per shape"


def test_post_processing_keeps_the_gradient_and_its_values() -> None:
    # ghn-init train post-processes through autograd: the steps must stay differentiable, with the same values
    spec = "orth+noise=1e-2+dcbalance+detile"
    w = torch.randn(6, 5, 3, 3).repeat(2, 1, 1, 1).requires_grad_()  # tiled: rows 6-11 copy rows 0-5
    leaf = w.detach().clone().requires_grad_()
    out = postprocess({"w": leaf}, spec, block=(6, 5), generator=torch.Generator().manual_seed(0))["w"]
    out.square().mul(torch.arange(out.numel()).reshape(out.shape)).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    with torch.no_grad():
        same = postprocess({"w": leaf}, spec, block=(6, 5), generator=torch.Generator().manual_seed(0))["w"]
    assert torch.allclose(same, out, atol=1e-6)


@pytest.mark.parametrize("spec", ["orth+noise=1e-2+dcbalance+detile", "noise=1e-2+keepnorm", "orth+keepnorm"])
def test_a_non_contiguous_prediction_gives_what_its_contiguous_copy_gives(spec) -> None:
    g = torch.Generator().manual_seed(4)
    for w in (torch.randn(40, 24, generator=g).t(), torch.randn(3, 3, 8, 20, generator=g).permute(3, 2, 0, 1)):
        args = dict(block=(8, 8), norms={"w": 2.0})
        a = postprocess({"w": w}, spec, generator=torch.Generator().manual_seed(1), **args)["w"]
        b = postprocess({"w": w.contiguous()}, spec, generator=torch.Generator().manual_seed(1), **args)["w"]
        assert torch.equal(a, b)


def test_blocked_gram_square_sum_equals_the_full_gram() -> None:
    from ghn_init.postprocess import _gram_square_sum

    g = torch.Generator().manual_seed(0)
    for rows, cols in [(5, 1), (300, 127), (300, 128), (700, 300), (1100, 1030)]:
        x = torch.randn(rows, cols, generator=g)
        for view in (x, x.t().contiguous().t()):  # row- and column-major
            full = (view.double().t() @ view.double()).square().sum()
            assert float(_gram_square_sum(view)) == pytest.approx(float(full), rel=1e-5)


def test_relative_noise_scale_in_every_layout_dtype_and_with_constant_rows() -> None:
    g = torch.Generator().manual_seed(2)
    for shape in [(300, 40), (40, 300), (20, 4, 3, 3), (4, 20, 3, 3)]:
        w = torch.randn(shape, generator=g)
        w.reshape(shape[0], -1)[:3] = 0.25  # constant rows (of the matrix as the GHN emits it)
        if shape[0] < w[0].numel():  # wide: the tall matrix's rows are the columns; make some of those constant
            w.reshape(shape[0], -1)[:, :3] = 0.5
        m = _tall(w).double()
        live = m.std(1) > 0
        expected = torch.corrcoef(m[live]).flatten().std().item()
        assert relative_noise_scale(w) == pytest.approx(expected, rel=1e-5)
        assert relative_noise_scale(w.double()) == pytest.approx(expected, rel=1e-12)
        assert relative_noise_scale(w.half()) == pytest.approx(relative_noise_scale(w.half().float()), rel=1e-6)
        assert relative_noise_scale(w.transpose(0, 1).contiguous().transpose(0, 1)) == pytest.approx(
            relative_noise_scale(w), rel=1e-6)
    assert relative_noise_scale(torch.full((6, 4), 2.0)) == 0.0


def test_spread_rows_are_distinct_and_take_every_tap() -> None:
    from ghn_init.postprocess import _spread_rows

    for n, k in [(4608, 256), (257, 256), (1000, 1000), (9 * 64, 100)]:
        rows = _spread_rows(n, k)
        assert len(set(rows.tolist())) == k and 0 <= int(rows.min()) and int(rows.max()) < n
    taps = torch.bincount(_spread_rows(4608, 256) % 9, minlength=9)  # a stride of 18 would take tap 0 only
    assert int(taps.min()) >= 256 // 9 - 1


def test_the_noise_scale_estimated_from_some_rows_is_close_to_the_exact_one() -> None:
    # postprocess measures a tall matrix of more than NOISE_SCALE_ROWS rows on that many of them; the estimate
    # keeps the full matrix's share of diagonal ones (a naive subsample would double the variance of a 4608-row
    # matrix of 512 columns: its diagonal is 1/4608 of the coefficients, a 256-row sample's 1/256)
    g = torch.Generator().manual_seed(0)
    cases = {  # matrix -> the relative error allowed (measured: 0.07%, 0.1%, 0.4%, 0.4%, 4%, 11%)
        "random conv": (torch.randn(512, 512, 3, 3, generator=g), 0.01),
        "random wide linear": (torch.randn(1000, 2048, generator=g), 0.01),
        "low-rank linear": (torch.randn(3072, 8, generator=g) @ torch.randn(8, 768, generator=g)
                            + 0.1 * torch.randn(3072, 768, generator=g), 0.02),
        "correlated rows": (torch.randn(2000, 1, generator=g) + torch.randn(2000, 300, generator=g), 0.02),
        "tiled conv": (torch.randn(64, 64, 3, 3, generator=g).repeat(8, 8, 1, 1), 0.08),
        "mostly flat kernels": (torch.randn(256, 128, 3, 3, generator=g)
                                + 2 * torch.randn(256, 128, 1, 1, generator=g), 0.2),
    }
    for name, (w, allowed) in cases.items():
        exact, estimate = relative_noise_scale(w), relative_noise_scale(w, NOISE_SCALE_ROWS)
        assert abs(estimate - exact) <= allowed * exact, name
    small = torch.randn(200, 64, generator=g)  # at most max_rows rows: exact
    assert relative_noise_scale(small, NOISE_SCALE_ROWS) == relative_noise_scale(small)
    dead = torch.randn(2000, 100, generator=g)
    dead[::3] = 1.0  # a third of the rows constant: left out of both
    assert relative_noise_scale(dead, NOISE_SCALE_ROWS) == pytest.approx(relative_noise_scale(dead), rel=0.02)


def test_a_float64_prediction_is_post_processed_in_float64() -> None:
    # balance_dc, detile and the noise rounded a float64 prediction to float32 (errors of 1e-8, not 1e-16)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(8, 6, 3, 3, generator=g, dtype=torch.float64) + torch.randn(8, 6, 1, 1, dtype=torch.float64)
    noisy = postprocess({"w": w}, "noise=1e-12", generator=torch.Generator().manual_seed(0))["w"]
    assert noisy.dtype == torch.float64 and 0 < (noisy - w).abs().max() < 1e-11
    tiled = w[:4, :3].repeat(2, 2, 1, 1)
    kept = detile(tiled, (4, 3), torch.Generator().manual_seed(0))
    assert kept.dtype == torch.float64 and torch.equal(kept[:4, :3], w[:4, :3])
    flat = w.mean((2, 3), keepdim=True)
    alpha = ((w - flat).square().sum() / (8 * flat.square().sum() * 9)).sqrt()
    assert (balance_dc(w) - (alpha * flat + (w - flat))).abs().max() < 1e-14


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_spec_that_changes_no_values_keeps_every_tensor_object(dtype) -> None:
    # "tensors that were not changed are the same objects": a drop-only spec used to send every float16 matrix
    # (the bundled GHN predicts in float16) through float32 and back, a copy of equal values
    pred = {"conv.weight": torch.randn(8, 4, 3, 3).to(dtype), "bn.weight": torch.rand(8).to(dtype),
            "fc.bias": torch.randn(8).to(dtype)}  # fmt: skip
    roles = {"conv.weight": Role.MATRIX, "bn.weight": Role.GAIN, "fc.bias": Role.BIAS}
    for spec in ("nobias", "nogain+noembed", "keepnorm"):
        out = postprocess(pred, spec, roles=roles)
        assert all(out[k] is pred[k] for k in out), spec
