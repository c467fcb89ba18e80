"""Stage 4, writing: ``apply`` tiles large predictions straight into the model's own tensors.

``predict`` keeps every prediction as a tensor; ``apply`` (which writes at once) lets the GHN return large
tiled tensors as :class:`ghn_init.tiling.Tiled`, and the writer tiles each into its target's storage after
every other tensor was swapped in. These tests pin that this changes no value, that it happens where it
should (and only there), and what a failure or an interrupt during those copies leaves.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn

import ghn_init
from ghn_init import writing
from ghn_init.decode import fit_to_shape
from ghn_init.tiling import SMALL, Tiled, tile

from .conftest import assert_unchanged, snapshot, tiny_ghn


def wide_net() -> nn.Module:
    """Tensors far wider than the tiny GHN's 16x16 blocks: several are tiled to more than SMALL elements."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(), nn.Conv2d(96, 400, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(400, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def _twin(model: nn.Module) -> nn.Module:
    twin = wide_net()
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).dtype)


def _large(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.numel() >= SMALL]


@pytest.mark.parametrize(
    "block, shape",
    [
        ((16, 16, 3, 3), (64, 96, 3, 3)),  # both channel dims tiled, exact multiples
        ((16, 16, 1, 1), (100, 96, 1, 1)),  # a remainder in dim 0
        ((16, 16), (400, 100)),  # 2-D with remainders in both
        ((16, 5, 5), (16, 40, 5)),  # 3-D, tiled in dim 1 only
        ((7,), (100,)),  # 1-D
        ((4, 4), (4, 4)),  # nothing to tile
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_tiling_into_a_tensor_equals_the_tiled_tensor(block: tuple, shape: tuple, dtype: torch.dtype) -> None:
    w = torch.randn(block)
    t = Tiled(w, shape)
    out = torch.full(shape, float("nan"), dtype=dtype)
    t.write_into(out)
    assert torch.equal(out, tile(w, shape).to(dtype))  # converting the block first changes no value
    assert torch.equal(t.materialize(), tile(w, shape))


def test_tiled_refuses_what_it_cannot_be() -> None:
    with pytest.raises(ValueError, match="cannot tile"):
        Tiled(torch.randn(8, 8), (4, 16))  # a block larger than the shape
    with pytest.raises(ValueError, match="cannot tile"):
        Tiled(torch.randn(8, 8), (16, 16, 1))
    t = Tiled(torch.randn(8, 8), (16, 16))
    with pytest.raises(ValueError, match="contiguous"):
        t.write_into(torch.empty(16, 16).t())
    with pytest.raises(ValueError, match="contiguous"):
        t.write_into(torch.empty(16, 8))


def test_fit_to_shape_defers_exactly_the_tensors_made_by_tiling_alone() -> None:
    """Deferred or not, the tensor is the same; only large tensors that tiling alone makes are deferred."""
    torch.manual_seed(0)
    cases = [  # (decoded, final shape)
        ((16, 16, 3, 3), (64, 96, 3, 3)),  # tiled, large: deferred
        ((16, 16, 5, 5), (64, 96, 3, 3)),  # a spatial crop first (the block is cropped before tiling): deferred
        ((16, 16, 3, 3), (8, 8, 3, 3)),  # cropped only
        ((16, 16, 3, 3), (20, 16, 3, 3)),  # tiled but small
        ((16, 16), (400, 100)),  # 2-D linear weight: deferred
        ((16, 16, 1, 1), (400, 100)),  # 2-D decoded as 1x1 kernels: centre pixel, then tiled
        ((64,), (300,)),  # 1-D, small
        ((16, 16, 1, 1), (1, 197, 768)),  # token embeddings: a crop after tiling, never deferred
    ]
    for (decoded, shape), centre, norm in itertools.product(cases, (True, False), (True, None)):
        w = torch.randn(decoded)
        eager = fit_to_shape(w, shape, centre, norm, generator=torch.Generator().manual_seed(0))
        lazy = fit_to_shape(w, shape, centre, norm, generator=torch.Generator().manual_seed(0), defer_tiling=True)
        if isinstance(lazy, Tiled):
            assert lazy.shape == tuple(shape) and len(shape) != 3 and math.prod(shape) >= SMALL
            lazy = lazy.materialize()
        else:
            assert not (len(shape) != 3 and len(decoded) == len(shape) and torch.Size(shape).numel() >= 4 * SMALL)
        assert torch.equal(eager, lazy), (decoded, shape)
    assert isinstance(fit_to_shape(torch.randn(16, 16, 3, 3), (64, 96, 3, 3), True, True, defer_tiling=True), Tiled)
    assert isinstance(fit_to_shape(torch.randn(16, 16), (400, 100), True, True, defer_tiling=True), Tiled)


@pytest.mark.parametrize("layout", ["float32", "float16", "bfloat16", "channels_last"])
def test_apply_writes_large_tiled_tensors_in_place_with_the_values_predict_gives(layout: str) -> None:
    ghn = tiny_ghn()
    model = wide_net()
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif layout != "float32":
        model = model.to(getattr(torch, layout))
    twin = _twin(model).to(memory_format=torch.channels_last) if layout == "channels_last" else _twin(model)
    params = dict(model.named_parameters())
    storage = {n: p.data_ptr() for n, p in params.items()}
    ghn_init.apply(model, ghn, generator=torch.Generator().manual_seed(0))
    ghn_init.predict(twin, ghn, generator=torch.Generator().manual_seed(0)).write()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert all(p is params[n] for n, p in model.named_parameters())
    large = _large(model)
    assert len(large) >= 3
    kept = [n for n in large if params[n].data_ptr() == storage[n]]
    if layout == "channels_last":  # 3x3 kernels are not contiguous there: made and swapped in; the rest written
        assert set(kept) == {n for n in large if params[n].is_contiguous()} != set(large)
    else:
        assert kept == large, "large tiled predictions must be written into the model's own storage"


def test_predict_keeps_tensors_and_never_defers() -> None:
    p = ghn_init.predict(wide_net(), tiny_ghn())
    assert all(isinstance(v, torch.Tensor) for _, v in p.tensors.values())


def test_a_target_sharing_its_storage_gets_a_new_tensor_as_before() -> None:
    """A parameter that is a view into a larger buffer (a flat parameter store) is not written in place (that
    would also write the buffer): it gets a new tensor swapped in, as every tensor did before."""
    ghn = tiny_ghn()
    model, twin = wide_net(), wide_net()
    flat = torch.zeros(2 * 400 * 100)
    model[-3].weight = nn.Parameter(flat[400 * 100 :].view(100, 400))  # Linear(400, 100): 40,000 elements
    ghn_init.apply(model, ghn)
    ghn_init.predict(twin, ghn).write()
    assert torch.equal(model[-3].weight, twin[-3].weight)
    assert not flat.any(), "the buffer the parameter was a view of must not be written"


def test_a_failing_swap_leaves_a_model_with_in_place_targets_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The swaps come first: a failure in any of them is undone before any in-place copy has run."""
    ghn = tiny_ghn()
    model = wide_net()
    tiles = {"n": 0}
    real_tile = writing._tile_into
    monkeypatch.setattr(writing, "_tile_into", lambda t, v: (tiles.__setitem__("n", tiles["n"] + 1), real_tile(t, v)))
    swaps = len(ghn_init.predict(model, ghn).tensors) - len(_large(model))
    assert swaps >= 5
    real_swap = writing._swap
    for position in range(swaps):
        before = snapshot(model)
        calls = {"n": 0}

        def swap(target: torch.Tensor, data: torch.Tensor, position: int = position, calls: dict = calls) -> None:
            calls["n"] += 1
            if calls["n"] == position + 1:
                raise RuntimeError(f"injected failure at swap {position}")
            real_swap(target, data)

        monkeypatch.setattr(writing, "_swap", swap)
        with pytest.raises(ghn_init.WriteError, match="left as it was"):
            ghn_init.apply(model, ghn)
        assert_unchanged(model, before)
        assert tiles["n"] == 0
    monkeypatch.setattr(writing, "_swap", real_swap)
    ghn_init.apply(model, ghn)
    assert tiles["n"] == len(_large(model))


def test_an_interrupt_during_the_in_place_copies_finishes_the_write_then_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ghn = tiny_ghn()
    model, twin = wide_net(), wide_net()
    real = writing._tile_into
    calls = {"n": 0}

    def interrupted(target: torch.Tensor, value: Tiled) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            real(target, value)  # the copy took effect, then the interrupt arrived: redone, harmlessly
            raise KeyboardInterrupt
        real(target, value)

    monkeypatch.setattr(writing, "_tile_into", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ghn_init.apply(model, ghn, generator=torch.Generator().manual_seed(0))
    assert calls["n"] == len(_large(model)) + 1
    ghn_init.predict(twin, ghn, generator=torch.Generator().manual_seed(0)).write()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: the model must hold the whole prediction"


def test_a_device_fault_during_the_in_place_copies_says_what_was_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validated copy into a plain tensor fails only on a device fault: the swapped tensors are restored,
    and the error names the tensors already overwritten (their old values are gone)."""
    ghn = tiny_ghn()
    model = wide_net()
    before = snapshot(model)
    large = _large(model)
    real = writing._tile_into
    calls = {"n": 0}

    def faulty(target: torch.Tensor, value: Tiled) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected device fault")
        real(target, value)

    monkeypatch.setattr(writing, "_tile_into", faulty)
    with pytest.raises(ghn_init.WriteError, match="1 tensor\\(s\\) were written in place.*partly written") as info:
        ghn_init.apply(model, ghn)
    assert info.value.name == large[1]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {large[0]}, "only the tensor written in place before the fault may differ"


def test_concurrent_applies_into_one_model_never_mix_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two applies of different GHNs into one model from two threads: the in-place copies of one cannot
    interleave with the other's (the model's lock is held for the whole write), so the model holds one
    whole prediction."""
    import threading
    import time

    ghns = [tiny_ghn(seed=1), tiny_ghn(seed=2)]
    model = wide_net()
    wanted = []
    for ghn in ghns:
        twin = wide_net()
        ghn_init.predict(twin, ghn).write()
        wanted.append(twin.state_dict())
    assert not torch.equal(wanted[0]["0.weight"], wanted[1]["0.weight"])
    real, calls = writing._tile_into, []

    def pausing(target: torch.Tensor, value: Tiled) -> None:
        real(target, value)
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)  # the first writer pauses after one copy: without the lock the other writes meanwhile

    monkeypatch.setattr(writing, "_tile_into", pausing)
    errors: list[BaseException] = []

    def run(ghn: ghn_init.GHN) -> None:
        try:
            ghn_init.apply(model, ghn)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(g,)) for g in ghns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    state = model.state_dict()
    held = [all(torch.equal(state[k], w[k]) for k in state) for w in wanted]
    assert any(held), "the model holds a mix of two predictions"



def test_predictions_overflowing_a_float16_model_are_named_with_its_dtype_for_in_place_targets() -> None:
    """Large tiled predictions are checked in the model's dtype like the others. The error listed the dtypes of
    swapped tensors only, so where every overflowing tensor was to be written in place it read "dtype ()"."""
    ghn = tiny_ghn(weight_norm=False)
    with torch.no_grad():
        ghn.decoder.conv[2].weight.mul_(1e7)  # only the weight decoder overflows float16: the two 400x400 weights
        ghn.decoder.conv[2].bias.fill_(1e6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)).half()
    before = snapshot(model)
    with pytest.raises(ghn_init.PredictionError, match=r"not finite in the model's dtype \(float16\)") as info:
        ghn_init.apply(model, ghn, predict_classifier=False, example_inputs=(torch.zeros(2, 400).half(),))
    assert sorted(info.value.names) == ["0.weight", "2.weight"]  # both tiled, both targets written in place
    assert_unchanged(model, before)
