"""GHN training: learning signal, exact resume, DDP, the CLI, and the bundled GHN."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import ghn_init
from ghn_init.cli import main as cli_main
from ghn_init.hub import BUNDLED_DIR
from ghn_init.train import TrainConfig, Trainer
from ghn_init.train.data import EpochOrder
from ghn_init.train.trainer import lr_factor

TINY = dict(
    num_classes=4,
    samples_per_class=16,
    val_samples_per_class=4,
    hid=16,
    layers=1,
    heads=2,
    max_shape=(16, 16, 5, 5),
    max_width=16,
    max_cells=2,
    batch_size=16,
    meta_batch=2,
    eval_archs=2,
    eval_images=16,
    warmup_steps=2,
    progress=False,
    threads=1,
)


def _tiny_config(output, **overrides) -> TrainConfig:
    return TrainConfig(output=str(output), **{**TINY, **overrides})


def _pool_loss(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean loss of every pool architecture with predicted parameters on one batch."""
    archs = [trainer.pool[i] for i in range(len(trainer.pool))]
    with torch.no_grad():
        results = trainer.ghn([a.graph for a in archs], [a.plan for a in archs])
        losses = [
            F.cross_entropy(torch.func.functional_call(a.model, r, (images,), strict=False), labels)
            for a, r in zip(archs, results, strict=True)
        ]
    return torch.stack(losses).mean().item()


def test_lr_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 4, 20) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[20] == pytest.approx(0.0, abs=1e-12)


def test_epoch_order_shards_disjointly_and_is_seeded():
    ranks = [EpochOrder(40, 4, seed=3, rank=r, world_size=2).batches(epoch=1) for r in range(2)]
    seen = [i for batches in ranks for batch in batches for _, i in batch]
    assert len(seen) == len(set(seen)) == 40
    again = EpochOrder(40, 4, seed=3, rank=0, world_size=2)
    assert again.batches(1) == ranks[0] and again.batches(1, start=2) == ranks[0][2:]
    assert again.batches(2) != ranks[0]


def test_training_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(_tiny_config(tmp_path, num_archs=4, meta_batch=4, lr=3e-3, steps=100, warmup_steps=1))
    images, labels = next(trainer._batches())
    before = _pool_loss(trainer, images, labels)
    for _ in range(25):
        trainer.train_step(images, labels)
    after = _pool_loss(trainer, images, labels)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("postprocess", ["none", "orth+noise+detile+nobias"])
def test_resume_continues_exactly(tmp_path, postprocess):
    # with post-processing, noise and detile draw random values every step: a resumed run draws the same
    settings = dict(
        steps=6, num_archs=10, torchvision_fraction=0.2, checkpoint_every=100, log_every=1, postprocess=postprocess
    )
    straight = Trainer(_tiny_config(tmp_path / "straight", **settings))
    straight.fit()
    Trainer(_tiny_config(tmp_path / "resumed", **settings)).fit(until=3)
    resumed = Trainer(_tiny_config(tmp_path / "resumed", **settings))
    assert resumed.step == 3
    resumed.fit()
    for (name, a), b in zip(straight.ghn.state_dict().items(), resumed.ghn.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 7))


def test_resume_refuses_other_settings(tmp_path):
    Trainer(_tiny_config(tmp_path, steps=4)).fit(until=1)
    with pytest.raises(ValueError, match="lr"):
        Trainer(_tiny_config(tmp_path, steps=4, lr=0.5))


def test_resume_reads_a_setting_added_since_the_checkpoint_as_its_default(tmp_path):
    Trainer(_tiny_config(tmp_path, steps=4)).fit(until=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["config"]["postprocess"]  # as written before the setting existed
    torch.save(state, tmp_path / "checkpoint.pt")
    assert Trainer(_tiny_config(tmp_path, steps=4)).step == 1
    with pytest.raises(ValueError, match="postprocess"):
        Trainer(_tiny_config(tmp_path, steps=4, postprocess="orth"))


def test_training_through_postprocessing_trains_the_networks_apply_writes(tmp_path):
    trainer = Trainer(_tiny_config(tmp_path, num_archs=4, meta_batch=4, postprocess="orth+nobias"))
    archs = [trainer.pool[i] for i in range(4)]
    raw = trainer.ghn([a.graph for a in archs], [a.plan for a in archs])
    shaped = trainer._postprocessed(archs, raw, draw=0)
    for arch, before, after in zip(archs, raw, shaped, strict=True):
        head = arch.plan.classifier()
        roles = ghn_init.postprocess.roles_of({n: (arch.plan.slots()[n], t) for n, t in before.items()})
        for name, role in roles.items():
            if name in head:
                assert after[name] is before[name]  # the classifier stays as predicted, as published
            elif role is ghn_init.postprocess.Role.BIAS:
                assert name not in after  # nobias: functional_call falls back to the network's own init
            elif role is ghn_init.postprocess.Role.MATRIX:
                m = after[name].reshape(after[name].shape[0], -1)
                m = m if m.shape[0] <= m.shape[1] else m.t()
                assert torch.allclose(m @ m.t(), torch.eye(m.shape[0]), atol=1e-4), name
    images, labels = next(trainer._batches())
    start = {k: v.clone() for k, v in trainer.ghn.state_dict().items()}
    metrics = trainer.train_step(images, labels)
    assert metrics["grad_norm"] > 0 and torch.isfinite(torch.tensor(metrics["grad_norm"]))
    assert any(not torch.equal(start[k], v) for k, v in trainer.ghn.state_dict().items())
    with pytest.raises(ValueError, match="orht"):
        _tiny_config(tmp_path, postprocess="orth+orht")


def test_a_non_finite_gradient_stops_training_before_it_reaches_the_ghn(tmp_path):
    trainer = Trainer(_tiny_config(tmp_path, num_archs=2))
    images, labels = next(trainer._batches())
    weight = next(trainer.ghn.parameters())
    weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    start = {k: v.clone() for k, v in trainer.ghn.state_dict().items()}
    with pytest.raises(FloatingPointError, match="gradient is not finite"):
        trainer.train_step(images, labels)
    assert all(torch.equal(start[k], v) for k, v in trainer.ghn.state_dict().items())
    assert trainer.step == 0


def _ddp_worker(rank: int, port: int, output: str, results: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0")
    trainer = Trainer(_tiny_config(output, steps=2, num_archs=6, checkpoint_every=100))
    trainer.fit()
    torch.save(trainer.ghn.state_dict(), os.path.join(results, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_gloo_run_keeps_ranks_in_sync(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork: a parent that has already run a backward pass (any earlier test) has autograd worker
    # threads, and forking it makes the children's backward fail
    mp.start_processes(
        _ddp_worker, args=(port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    initial = Trainer(_tiny_config(tmp_path / "fresh", steps=2, num_archs=6)).ghn.state_dict()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)
    assert len(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["rng"]) == 2


def test_cli_trains_and_writes_a_loadable_folder(tmp_path):
    out = tmp_path / "run"
    argv = ["train", str(out), "--steps", "3", "--num-archs", "4", "--num-classes", "4", "--samples-per-class", "8",
            "--val-samples-per-class", "2", "--hid", "16", "--layers", "1", "--heads", "2", "--max-shape", "16", "16",
            "5", "5", "--max-width", "16", "--max-cells", "2", "--batch-size", "8", "--meta-batch", "2", "--eval-archs",
            "2", "--threads", "1", "--no-progress", "--export-dtype", "float16"]
    assert cli_main(argv) == 0
    folder = out / "ghn"
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and config["training"]["steps"] == 3
    assert config["training"]["data"]["name"] == "fractals"
    assert "val_acc" in config["training"]["final_metrics"]
    assert "## Measured quality" in (folder / "README.md").read_text()
    ghn = ghn_init.load_ghn(folder)
    assert ghn.config.hid == 16
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 3, 8, 8))
    report = ghn_init.apply(model, ghn, input_size=(3, 8, 8))
    assert report.predicted

    tuned = tmp_path / "tuned"
    assert cli_main(["train", str(tuned), "--init-from", str(folder), *argv[2:], "--postprocess", "orth+nobias"]) == 0
    assert ghn_init.load_ghn(tuned / "ghn").config.to_dict()["max_shape"] == [16, 16, 5, 5]
    assert "trained through post-processing `orth+nobias`" in (tuned / "ghn" / "README.md").read_text()
    assert ghn_init.load_ghn(tuned / "ghn").config.postprocess == "orth+nobias"  # what apply then uses by default
    assert "trained through" not in (folder / "README.md").read_text()
    # a fine-tuned GHN's record and card name what it started from, that GHN's own training included
    again = tmp_path / "again"
    assert cli_main(["train", str(again), "--init-from", str(tuned / "ghn" / "model.safetensors"), *argv[2:]]) == 0
    record = json.loads((again / "ghn" / "config.json").read_text())["training"]
    assert record["fine_tuned_from"]["source"] == str(tuned / "ghn" / "model.safetensors")
    assert record["fine_tuned_from"]["training"]["fine_tuned_from"]["training"]["steps"] == 3
    card = (again / "ghn" / "README.md").read_text()
    assert card.count("- fine-tuned from `") == 2 and "steps in all, with the GHNs it was fine-tuned from: 9" in card
    assert "fine_tuned_from" not in config["training"], "a GHN trained from scratch has no lineage"


@pytest.mark.skipif(not (BUNDLED_DIR / "model.safetensors").exists(), reason="no bundled GHN has been exported yet")
def test_bundled_ghn_loads_and_predicts_offline(monkeypatch):
    import timm
    import torchvision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    ghn = ghn_init.load_ghn("bundled")
    assert time.perf_counter() - start < 10
    assert (BUNDLED_DIR / "model.safetensors").stat().st_size <= 15 * 2**20
    assert json.loads((BUNDLED_DIR / "config.json").read_text())["training"]["steps"] > 0
    for model in (torchvision.models.resnet50(), timm.create_model("resnet18", num_classes=10)):
        report = ghn_init.apply(model, ghn)
        assert report.fraction_predicted > 0.9, str(report)
        assert all(torch.isfinite(p).all() for p in model.parameters())
