"""Issue 21's practitioner items: output folders checked before any work, --overwrite, extending a finished
run, warmup longer than the run, the --save message, deterministic safetensors exports, a peer's death under
torchrun, verify's tolerance and figures message, the dataset hint, and --help texts with their defaults."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

import ghn_init
from ghn_init import cli
from ghn_init.atomic import save_file_atomic
from ghn_init.errors import HubDownloadError, InvalidArgumentError, PeerProcessError
from ghn_init.postprocess import PostProcess
from ghn_init.train import TrainConfig, Trainer
from ghn_init.train.trainer import _may_leave_parameters_unused, lr_factor

from .test_train import _tiny_config


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any data loading fail loudly: an output folder must be refused before it."""

    def fail(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr("ghn_init.harness.runner.load_data", fail)
    monkeypatch.setattr("ghn_init.train.trainer.build_datasets", fail)


@pytest.mark.parametrize("where", ["file", "below a file"])
@pytest.mark.parametrize("command", ["train", "compare"])
def test_an_output_path_through_a_file_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: str, where: str
) -> None:
    _no_work(monkeypatch)
    out = _a_file(tmp_path) if where == "file" else _a_file(tmp_path) / "run"
    argv = (
        ["train", str(out), "--steps", "1", "--no-progress"]
        if command == "train"
        else ["compare", "--models", "resnet18", "--inits", "default", "--data", "shapes", "--out", str(out)]
    )
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Errno" not in err
    assert "is a file, not a folder" in err
    assert ("--out" if command == "compare" else "OUTPUT") in err or "output" in err


def test_compare_refuses_earlier_results_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "ranks.png").write_bytes(b"stale")  # from an earlier run with a reference: must not outlive it
    argv = ["compare", "--models", "resnet18", "--inits", "default", "--data", "shapes", "--steps", "1"]
    argv += ["--seeds", "0", "--image-size", "16", "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds ranks.png, results.json" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == "{}"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["runs"][0]["scheme"] == "default"
    assert not (out / "ranks.png").exists()


def test_a_finished_run_is_extended_by_more_steps(tmp_path: Path) -> None:
    first = Trainer(_tiny_config(tmp_path, steps=2, num_archs=4, checkpoint_every=100, warmup_steps=1, log_every=1))
    first.fit()
    assert first.step == 2
    with pytest.raises(InvalidArgumentError, match="past steps=1") as info:
        Trainer(_tiny_config(tmp_path, steps=1, num_archs=4, checkpoint_every=100, warmup_steps=1, log_every=1))
    assert info.value.argument == "steps"
    longer = Trainer(_tiny_config(tmp_path, steps=4, num_archs=4, checkpoint_every=100, warmup_steps=1, log_every=1))
    assert longer.step == 2
    assert longer.extensions == [{"at_step": 2, "from_steps": 2, "to_steps": 4}]
    # the learning rate follows the 4-step schedule from step 2 on (the 2-step one had decayed to 0)
    base = longer.config.lr
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(base * lr_factor(2, longer.warmup, 4))
    assert longer.optimizer.param_groups[0]["lr"] > 0
    longer.fit()
    assert longer.step == 4
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == 4
    longer.evaluate()
    card = (longer.export() / "README.md").read_text()
    assert "extended: at step 2 the run went from 2 to 4 steps" in card


def test_overwrite_starts_afresh(tmp_path: Path) -> None:
    Trainer(_tiny_config(tmp_path, steps=2, num_archs=4, checkpoint_every=100, log_every=1)).fit()
    assert (tmp_path / "metrics.jsonl").exists()
    with pytest.raises(InvalidArgumentError, match="lr"):  # other settings: refused, pointing to overwrite
        Trainer(_tiny_config(tmp_path, steps=2, num_archs=4, lr=0.5))
    fresh = Trainer(_tiny_config(tmp_path, steps=2, num_archs=4, lr=0.5), overwrite=True)
    assert fresh.step == 0
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_warmup_longer_than_the_run_is_refused_and_the_default_fits_the_run(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="longer than the run") as info:
        TrainConfig(output=str(tmp_path), steps=5, warmup_steps=10)
    assert info.value.argument == "warmup_steps"
    assert TrainConfig(output=str(tmp_path), steps=50).warmup == 5  # a tenth of a short run
    assert TrainConfig(output=str(tmp_path), steps=5000).warmup == 100
    assert TrainConfig(output=str(tmp_path), steps=50, warmup_steps=7).warmup == 7


def test_save_below_a_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = _a_file(tmp_path) / "model.safetensors"
    assert cli.main(["apply", "resnet18", "--ghn", "bundled", "--save", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "does not exist" not in err


def test_equal_tensors_and_metadata_give_byte_identical_safetensors(tmp_path: Path) -> None:
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
    digests = set()
    for i in range(8):  # safetensors writes metadata in hash-map order, different from one call to the next
        metadata = {f"key{j}": f"value {j}" for j in range(6)}
        path = save_file_atomic(tensors, tmp_path / f"{i}.safetensors", metadata)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert f.metadata() == metadata
        assert torch.equal(f.get_tensor("w"), tensors["w"])


def test_two_exports_of_the_same_ghn_have_the_same_sha256(tmp_path: Path) -> None:
    ghn = ghn_init.load_ghn("bundled")
    from ghn_init.hub.checkpoints import save_folder

    a, b = (save_folder(ghn, tmp_path / name, training={"x": 1, "y": 2}) for name in ("a", "b"))
    digest = {p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest() for p in (a, b)}
    assert digest[a] == digest[b]
    ghn_init.load_ghn(str(a), sha256=None)


def test_a_peers_death_is_one_line_that_says_where_to_resume(tmp_path: Path) -> None:
    trainer = Trainer(_tiny_config(tmp_path, steps=4, num_archs=4, checkpoint_every=1))
    trainer.fit(until=1)
    gloo = "[/x/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:21905. This is typically ..."

    def dies(*args):
        raise RuntimeError(gloo)

    trainer.train_step = dies
    with pytest.raises(RuntimeError, match="Connection closed by peer") as alone:  # one process: not a peer's
        trainer.fit()
    assert not isinstance(alone.value, PeerProcessError)
    trainer.world_size = 2
    with pytest.raises(PeerProcessError) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message and "please report" not in message
    assert "Connection closed by peer [127.0.0.1]:21905" in message and "step 1" in message
    assert str(tmp_path / "checkpoint.pt") in message
    trainer.train_step = lambda *args: (_ for _ in ()).throw(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot") as bug:  # this process's own failure stays itself
        trainer.fit()
    assert not isinstance(bug.value, PeerProcessError)


def test_ddp_searches_for_unused_parameters_only_when_a_step_can_leave_one_out(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, torchvision_fraction=0.0)
    assert not _may_leave_parameters_unused(config, PostProcess.parse("orth+noise"))
    assert _may_leave_parameters_unused(config, PostProcess.parse("nobias"))
    assert _may_leave_parameters_unused(_tiny_config(tmp_path, torchvision_fraction=0.2), PostProcess.parse("none"))


def test_every_ghn_parameter_gets_a_gradient_from_a_generated_meta_batch(tmp_path: Path) -> None:
    """What lets DDP run without find_unused_parameters: with no tensor dropped and no torchvision network, every
    parameter of the GHN takes part in every step's loss (DDP would hang or fail on one that does not)."""
    trainer = Trainer(_tiny_config(tmp_path, num_archs=6, meta_batch=2, torchvision_fraction=0.0))
    assert not _may_leave_parameters_unused(trainer.config, trainer.postprocess)
    images, labels = next(trainer._batches())
    for _ in range(3):  # three different meta-batches
        trainer.optimizer.zero_grad(set_to_none=True)
        loss, _ = trainer._meta_batch_loss(images, labels)
        loss.backward()
        unused = [name for name, p in trainer.ghn.named_parameters() if p.grad is None]
        assert not unused, unused


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf"])
def test_verify_tolerance_must_be_finite_and_not_negative(tolerance: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["verify", "--ghn", "bundled", "--tolerance", tolerance]) == 2
    err = capsys.readouterr().err.strip()
    assert "--tolerance" in err and "\n" not in err


def test_missing_published_figures_do_not_suggest_passing_them_as_the_ghn(monkeypatch: pytest.MonkeyPatch) -> None:
    from ghn_init import verify

    def offline(file, **kwargs):
        message = f"cannot download {file.filename}: offline. To fix: pass a local file as --ghn"
        raise HubDownloadError(message, file=file)

    monkeypatch.setattr(verify, "download", offline)
    with pytest.raises(HubDownloadError) as info:
        verify._download_results("main")
    message = str(info.value)
    assert "--ghn" not in message and "network access" in message


def test_a_missing_torchvision_dataset_names_the_spec_compare_understands(tmp_path: Path) -> None:
    from ghn_init.harness.data import load_data

    with pytest.raises(FileNotFoundError) as info:
        load_data(f"torchvision:CIFAR10:{tmp_path / 'none'}")
    assert "torchvision:CIFAR10:ROOT" in str(info.value) and "--data-root" not in str(info.value)


def _options(parser: argparse.ArgumentParser):
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            for option in sub._actions:
                if isinstance(option, (argparse._HelpAction, argparse._VersionAction)):
                    continue
                yield name, option


def test_every_option_says_what_it_does_and_its_default() -> None:
    missing = []
    for command, option in _options(cli.make_parser()):
        text = option.help or ""
        flag = "/".join(option.option_strings) or option.dest
        if not text.strip():
            missing.append(f"{command} {flag}: no help")
        takes_value = option.option_strings and option.nargs != 0
        if takes_value and "default" not in text.lower() and not option.required:
            missing.append(f"{command} {flag}: no default in {text!r}")
    assert not missing, "\n".join(missing)
