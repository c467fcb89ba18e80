"""Regression tests of issue 11: shared GHNs are never moved or mode-switched, concurrent applies are safe,
writes are all or nothing under injected failures, and finiteness is checked in the model's dtype."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref
from typing import Callable

import pytest
import torch
import torch.nn as nn

import ghn_init
from ghn_init import writing
from ghn_init.hub.copies import inference_copy

from .conftest import assert_unchanged, snapshot, tiny_cnn, tiny_ghn


def small_net() -> nn.Module:
    return tiny_cnn(widths=(8, 16))  # two conv blocks: 10 tensors to predict



def ghn_state(ghn: ghn_init.GHN) -> dict[str, tuple]:
    return {k: (v.device, v.dtype, v.clone()) for k, v in ghn.state_dict().items()}


def assert_ghn_untouched(ghn: ghn_init.GHN, before: dict[str, tuple], training: bool) -> None:
    assert ghn.training is training
    assert all(m.training is training for m in ghn.modules())
    for k, (device, dtype, value) in before.items():
        now = ghn.state_dict()[k]
        assert now.device == device and now.dtype == dtype and torch.equal(now, value), k


# ---------------------------------------------------------------- no poisoned process


def test_apply_on_a_meta_model_is_refused_and_leaves_the_ghn_usable() -> None:
    ghn = tiny_ghn()
    before = ghn_state(ghn)
    with torch.device("meta"):
        meta_model = small_net()
    with pytest.raises(ValueError, match="meta device"):
        ghn_init.apply(meta_model, ghn)
    assert_ghn_untouched(ghn, before, training=False)
    report = ghn_init.apply(small_net(), ghn)  # a later apply in the same process still works
    assert report.fraction_predicted == 1.0


def test_load_ghn_on_meta_returns_a_copy_and_later_applies_work() -> None:
    home = ghn_init.load_ghn("bundled")
    before = ghn_state(home)
    meta = ghn_init.load_ghn("bundled", device="meta")
    assert meta is not home and meta.embed.weight.is_meta
    assert ghn_init.load_ghn("bundled", device="meta") is meta  # the copy is cached and shared
    assert ghn_init.load_ghn("bundled") is home
    assert_ghn_untouched(home, before, training=False)
    model = small_net()
    assert ghn_init.apply(model, "bundled", postprocess="none").fraction_predicted == 1.0
    assert all(not p.is_meta and torch.isfinite(p).all() for p in model.parameters())


def test_a_shared_ghn_moved_to_meta_in_place_is_loaded_again(caplog: pytest.LogCaptureFixture) -> None:
    ghn_init.load_ghn("bundled").to("meta")  # a user breaking the sharing rule
    with caplog.at_level("WARNING", logger="ghn_init"):
        ghn = ghn_init.load_ghn("bundled")
    assert "moved to the meta device in place" in caplog.text
    assert not ghn.embed.weight.is_meta
    assert ghn_init.apply(small_net(), "bundled", postprocess="none").fraction_predicted == 1.0


def test_a_ghn_given_with_a_device_is_copied_not_moved() -> None:
    ghn = tiny_ghn().train()
    before = ghn_state(ghn)
    copy = ghn_init.load_ghn(ghn, device="meta")
    assert copy is not ghn and copy.embed.weight.is_meta and not copy.training
    assert ghn_init.load_ghn(ghn, device="cpu") is ghn  # already there: returned as is
    assert_ghn_untouched(ghn, before, training=True)


def test_a_ghn_in_train_mode_stays_in_train_mode_and_predicts_like_in_eval_mode() -> None:
    ghn = tiny_ghn()
    expected = ghn_init.predict(small_net(), ghn).tensors
    ghn.train()
    before = ghn_state(ghn)
    got = ghn_init.predict(small_net(), ghn).tensors
    assert_ghn_untouched(ghn, before, training=True)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name][1], expected[name][1]), name


def in_threads(work: Callable[[], object], count: int) -> list[BaseException]:
    """Run ``work`` in ``count`` threads at once and wait for them; what they raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(e)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_applies_from_threads_match_sequential_ones() -> None:
    ghn = tiny_ghn().train()
    before = ghn_state(ghn)
    ghn_init.apply(reference := small_net(), ghn)
    expected = snapshot(reference)
    results: list[dict[str, torch.Tensor]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            model = small_net()
            ghn_init.apply(model, ghn)
            with lock:
                results.append(snapshot(model))

    errors = in_threads(worker, 4)
    assert not errors, errors
    assert len(results) == 12
    for state in results:
        for k, v in expected.items():
            assert torch.equal(state[k], v), k
    assert_ghn_untouched(ghn, before, training=True)


class _Rendezvous(nn.Module):
    """A forward pass that waits (up to a timeout) until a second thread is inside one too: without a
    per-model lock two recordings of it overlap every time, with one they take turns."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn(3)
        self.calls, self.changed = 0, threading.Condition()  # forward passes under way

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.changed:
            self.calls += 1
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.calls >= 2, timeout=0.3)
        return self.net(x)


@pytest.mark.parametrize("tracer", ["autograd", "fx"])
def test_threads_recording_one_model_leave_it_as_it_was(tracer: str) -> None:
    model = _Rendezvous().train()
    before = snapshot(model)
    graphs: list = []
    errors = in_threads(lambda: graphs.append(ghn_init.trace(model, input_size=(3, 8, 8), tracer=tracer)), 2)
    assert not errors, errors
    assert_unchanged(model, before)
    assert all(not t.is_meta for t in model.state_dict().values())
    assert all(m.training for m in model.modules()), "recording must restore train mode"
    assert len(graphs) == 2 and len(graphs[0].nodes) == len(graphs[1].nodes)


def test_concurrent_writes_into_one_model_never_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    model, ghn = small_net(), tiny_ghn()
    first, second = (
        ghn_init.predict(model, ghn, postprocess="noise=0.5", generator=torch.Generator().manual_seed(seed))
        for seed in (1, 2)
    )
    swap, calls = writing._swap, []

    def pausing_swap(target: torch.Tensor, data: torch.Tensor) -> None:
        swap(target, data)
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)  # the first writer pauses after one tensor: without the lock the other writes meanwhile

    monkeypatch.setattr(writing, "_swap", pausing_swap)
    pending = [first, second]
    assert not in_threads(lambda: pending.pop().write(), 2)
    state = model.state_dict()

    def holds(p: ghn_init.Prediction) -> bool:
        return all(torch.equal(state[n], v.to(state[n].dtype)) for n, (_, v) in p.tensors.items())

    assert holds(first) or holds(second), "the model holds a mix of two predictions"


def test_predicting_never_computes_parametrized_tensors() -> None:
    """Reading a spectral-normed weight in training mode runs a power-iteration step that updates the
    parametrization's buffers: planning and post-processing used to read weights with ``getattr``."""
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    model = small_net().train()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    spectral_norm(convs[1])
    weight_norm(convs[0])
    before = snapshot(model)
    prediction = ghn_init.predict(model, tiny_ghn(), postprocess="orth+dcbalance+keepnorm")
    assert_unchanged(model, before)  # _u and _v included
    prediction.write()
    after = model.state_dict()
    untouched = [k for k in before if ".parametrizations." in k]
    assert len(untouched) == 5 and all(torch.equal(after[k], before[k]) for k in untouched)
    assert prediction.tensors and not any(".parametrizations." in name for name in prediction.tensors)


def test_threads_loading_the_same_ghn_load_it_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ghn_init.hub import checkpoints

    folder = checkpoints.save_folder(tiny_ghn(), tmp_path / "tiny")
    loads = []
    real = ghn_init.hub.load_file

    def counting_load(path):
        loads.append(path)
        time.sleep(0.2)  # a slow load: without the per-source lock, the other threads would load too
        return real(path)

    monkeypatch.setattr(ghn_init.hub, "load_file", counting_load)
    got: list = []
    assert not in_threads(lambda: got.append(ghn_init.load_ghn(folder)), 8)
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert len(loads) == 1


def test_a_rewritten_ghn_folder_replaces_the_cached_ghn_and_its_copies(tmp_path) -> None:
    """One cache entry per path: each re-export used to add an entry (keyed by mtime) and keep every older
    GHN, and its copies on other devices, alive for the life of the process."""
    from ghn_init.hub import checkpoints, copies

    folder = checkpoints.save_folder(tiny_ghn(seed=0), tmp_path / "ghn")
    first = ghn_init.load_ghn(folder)
    ghn_init.load_ghn(folder, device="meta")  # a copy of it, cached
    assert ghn_init.load_ghn(folder) is first and first in copies._COPIES
    for seed in (1, 2, 3):  # a training loop exporting to the same folder
        checkpoints.save_folder(tiny_ghn(seed=seed), folder)
        latest = ghn_init.load_ghn(folder)
        assert torch.equal(latest.embed.weight, tiny_ghn(seed=seed).embed.weight)
    assert ghn_init.load_ghn(folder) is latest
    assert [key for key in ghn_init.hub._CACHE if key[0] == str(folder.resolve())] == [(str(folder.resolve()),)]
    assert first not in copies._COPIES  # dropped with it, although the caller still holds it
    released = weakref.ref(first)
    del first
    gc.collect()
    assert released() is None


def test_a_rewrite_that_puts_the_modification_time_back_is_seen(tmp_path) -> None:
    """The cache compared modification times only: a file rewritten in place with its mtime restored (os.utime,
    a copy keeping times, a file system with coarse timestamps) gave the stale GHN."""
    from ghn_init.hub import checkpoints

    folder = checkpoints.save_folder(tiny_ghn(seed=0), tmp_path / "ghn")
    weights = folder / "model.safetensors"
    assert torch.equal(ghn_init.load_ghn(folder).embed.weight, tiny_ghn(seed=0).embed.weight)
    before = weights.stat()
    newer = (checkpoints.save_folder(tiny_ghn(seed=1), tmp_path / "newer") / "model.safetensors").read_bytes()
    assert len(newer) == before.st_size
    while True:
        weights.write_bytes(newer)  # in place: same inode, same size
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
        if weights.stat().st_ctime_ns != before.st_ctime_ns:
            break
        time.sleep(0.001)  # still the first write's timestamp tick: the next one tells them apart
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert torch.equal(ghn_init.load_ghn(folder).embed.weight, tiny_ghn(seed=1).embed.weight)


def test_devices_this_machine_lacks_are_named() -> None:
    with pytest.raises(ValueError, match="not a torch device"):
        ghn_init.load_ghn("bundled", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="has no cuda device"):
            ghn_init.load_ghn("bundled", device="cuda")


def test_inference_copies_follow_changes_of_the_original() -> None:
    ghn = tiny_ghn()
    first = inference_copy(ghn, "meta")
    assert inference_copy(ghn, "meta") is first
    with torch.no_grad():
        ghn.embed.weight.mul_(2)  # an optimizer step, in place
    second = inference_copy(ghn, "meta")
    assert second is not first
    same_device = inference_copy(ghn)
    assert same_device.embed.weight.data_ptr() == ghn.embed.weight.data_ptr()  # no copy on the same device


# ---------------------------------------------------------------- all or nothing


def _failing_swap(position: int, takes_effect: bool):
    calls = {"n": 0}
    real = writing._swap

    def swap(target: torch.Tensor, data: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == position + 1:
            if takes_effect:
                real(target, data)
            raise RuntimeError(f"injected failure at swap {position}")
        real(target, data)

    return swap


@pytest.mark.parametrize("takes_effect", [False, True], ids=["fails-before", "fails-after"])
def test_a_failing_swap_at_every_position_leaves_the_model_as_it_was(
    monkeypatch: pytest.MonkeyPatch, takes_effect: bool
) -> None:
    ghn = tiny_ghn()
    model = small_net()
    n = len(ghn_init.predict(model, ghn).tensors)
    assert n >= 10
    for position in range(n):
        before = snapshot(model)
        params = {k: p for k, p in model.named_parameters()}
        monkeypatch.setattr(writing, "_swap", _failing_swap(position, takes_effect))
        with pytest.raises(ghn_init.WriteError, match=f"injected failure at swap {position}") as info:
            ghn_init.apply(model, ghn)
        assert info.value.name
        assert_unchanged(model, before)
        assert all(p is params[k] for k, p in model.named_parameters())  # the same Parameter objects
    monkeypatch.undo()
    assert ghn_init.apply(model, ghn).fraction_predicted == 1.0


def test_a_swap_interrupted_by_keyboard_interrupt_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    ghn = tiny_ghn()
    model = small_net()
    before = snapshot(model)
    calls = {"n": 0}
    real = writing._swap

    def swap(target: torch.Tensor, data: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(target, data)

    monkeypatch.setattr(writing, "_swap", swap)
    with pytest.raises(KeyboardInterrupt):
        ghn_init.apply(model, ghn)
    assert_unchanged(model, before)


def overflowing_ghn() -> ghn_init.GHN:
    """A GHN whose predictions are finite in float32 but far beyond float16's range (65504)."""
    ghn = tiny_ghn(weight_norm=False)
    with torch.no_grad():
        for head in (ghn.decoder.conv, ghn.decoder_1d.fc):
            last = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
            last.weight.mul_(1e7)
            last.bias.fill_(1e6)
    return ghn


def test_finiteness_is_checked_in_the_models_dtype() -> None:
    ghn = overflowing_ghn()
    reference = ghn_init.predict(small_net(), ghn)
    assert all(torch.isfinite(v).all() for _, v in reference.tensors.values())  # finite in float32
    model = small_net().half()
    before = snapshot(model)
    with pytest.raises(ghn_init.PredictionError, match="not finite in the model's dtype") as info:
        ghn_init.apply(model, ghn)
    assert info.value.names and all(n in dict(model.named_parameters()) for n in info.value.names)
    assert "float16" in str(info.value)
    assert_unchanged(model, before)
    float32 = small_net()
    ghn_init.apply(float32, ghn)  # the same predictions fit a float32 model
    assert all(torch.isfinite(p).all() for p in float32.parameters())


def test_a_prediction_started_while_another_thread_records_the_model_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording puts meta stand-ins into the model for a while. A second apply on the same model used to read
    the model's tensors (meta check, device) without the model's lock, saw the stand-ins and failed with "all
    tensors ... are on the meta device" (1 run in 25 of two concurrent applies). Each prediction now holds the
    lock of its models from its first read of them to its last."""
    from ghn_init.graph import autograd_trace

    ghn = tiny_ghn()
    model = tiny_cnn(widths=(8, 16))
    real = autograd_trace.swap_in

    def slow_swap_in(modules: list, subs: dict) -> None:
        real(modules, subs)
        time.sleep(0.3)  # the model holds its stand-ins for 0.3 s

    monkeypatch.setattr(autograd_trace, "swap_in", slow_swap_in)
    errors: list[BaseException] = []
    reports: list = []

    def run(delay: float) -> None:
        time.sleep(delay)
        try:
            reports.append(ghn_init.apply(model, ghn))
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(d,)) for d in (0.0, 0.1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(reports) == 2 and all(r.fraction_predicted == 1.0 for r in reports)
    assert all(not t.is_meta for t in model.state_dict().values())
