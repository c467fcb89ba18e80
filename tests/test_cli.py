"""The command line: every bad invocation ends in one line on stderr and exit code 2, never a traceback;
the conventions of issue 11 (--save *.safetensors, --json, --seed, --in-chans, --input-size, --model-kwargs)."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ghn_init
from ghn_init import cli
from ghn_init.hub.checkpoints import save_folder
from ghn_init.models import create_model
from ghn_init.saving import read_report
from ghn_init.train import TrainConfig

from .conftest import REPO, tiny_ghn


class RunsShell:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and an empty Hugging Face cache, as on a machine that never downloaded anything."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(ghn_init.hub, "_CACHE", {})


def bad_invocations(tmp: Path) -> list[list[str]]:
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04" + random.Random(0).randbytes(2000))  # seeded: a failure reproduces
    text = tmp / "notes.pt"
    text.write_text("not a checkpoint\n")
    unsafe = tmp / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps({"x": RunsShell()}, protocol=4))
    bad_config = save_folder(tiny_ghn(), tmp / "bad_config")
    doc = json.loads((bad_config / "config.json").read_text())
    doc["ghn"]["layernorm"] = "false"
    (bad_config / "config.json").write_text(json.dumps(doc))
    newer = save_folder(tiny_ghn(), tmp / "newer")
    doc = json.loads((newer / "config.json").read_text())
    doc["format_version"] = 99
    (newer / "config.json").write_text(json.dumps(doc))
    a_file = tmp / "a_file"
    a_file.write_text("x")
    out = str(tmp / "run")
    small_train = ["--samples-per-class", "1", "--val-samples-per-class", "1", "--no-progress"]
    return [
        [],
        ["nonsense-command"],
        ["--bogus"],
        ["apply"],
        ["apply", "no_such_model", "--ghn", "bundled"],
        ["apply", "timm/no_such_model", "--ghn", "bundled"],
        ["apply", "resnet18", "--ghn", "/no/such/file.pt"],
        ["apply", "resnet18", "--ghn", str(corrupt)],
        ["apply", "resnet18", "--ghn", str(text)],
        ["apply", "resnet18", "--ghn", str(unsafe)],
        ["apply", "resnet18", "--ghn", "/dev/zero"],
        ["apply", "resnet18", "--ghn", str(bad_config)],
        ["apply", "resnet18", "--ghn", str(newer)],
        ["apply", "resnet18", "--ghn", str(tmp / "bad_config" / "config.json")],
        ["apply", "resnet18", "--ghn", "ghn3-t-m8"],  # offline, not cached
        ["apply", "resnet18"],  # the default GHN, offline
        ["apply", "resnet18", "--ghn", "hf://owner/repo/ghn.pt"],
        ["apply", "resnet18", "--ghn", "hf://only-owner"],
        ["apply", "resnet18", "--ghn", "ghn2-imagenet"],  # not downloadable
        ["apply", "resnet18", "--ghn", "ghn3-t-m9"],
        ["apply", "resnet18", "--num-classes", "abc"],
        ["apply", "resnet18", "--num-classes", "0"],
        ["apply", "resnet18", "--num-classes", "-5"],
        ["apply", "resnet18", "--ghn", "bundled", "--save", str(tmp / "no" / "such" / "x.safetensors")],
        ["apply", "resnet18", "--ghn", "bundled", "--save", str(tmp)],
        ["apply", "resnet18", "--ghn", "bundled", "--in-chans", "1"],  # torchvision has no in_chans
        ["apply", "resnet18", "--model-kwargs", "{bad json"],
        ["apply", "resnet18", "--model-kwargs", "[1, 2]"],
        ["apply", "resnet18", "--ghn", "bundled", "--model-kwargs", '{"no_such_kwarg": 1}'],
        ["apply", "resnet18", "--ghn", "bundled", "--num-classes", "10", "--model-kwargs", '{"num_classes": 5}'],
        ["apply", "resnet18", "--input-size", "3", "224"],
        ["apply", "resnet18", "--input-size", "3", "0", "224"],
        ["apply", "resnet18", "--seed", "x"],
        ["apply", "resnet18", "--seed", "9" * 23],  # was "Overflow when unpacking long long"
        ["compare", "--models", "resnet18", "--inits", "default", "--lr", "nan", "--out", str(tmp / "lr")],  # exit 0
        ["compare", "--models", "resnet18", "--inits", "default", "--seeds", "9" * 23, "--out", str(tmp / "sd")],
        ["compare", "--models", "resnet18", "--inits", "default", "--weight-decay", "-1", "--out", str(tmp / "wd")],
        ["compare", "--models", "resnet18", "--inits", "default", "--steps", "0", "--out", str(tmp / "st")],
        ["train", str(tmp / "tr"), "--device", "tpu9", "--steps", "1"],  # exit 3 "internal error" before
        ["compare", "--models", "resnet18", "--inits", "default", "--device", "tpu9", "--out", str(tmp / "dv")],
        ["trace", "no_such_model"],
        ["trace", "timm/no_such_model"],
        ["convert"],
        ["convert", "/no/such.pt", str(tmp / "c1")],
        ["convert", str(corrupt), str(tmp / "c2")],
        ["convert", str(unsafe), str(tmp / "c3")],
        ["convert", "ghn3-t-m8", str(tmp / "c4")],  # offline
        ["convert", "bundled", str(a_file)],  # the destination is a file
        ["convert", "bundled", str(tmp / "c5"), "--revision", "v1"],
        ["train", out, "--num-classes", "0", *small_train],
        ["train", out, "--steps", "0", *small_train],
        ["train", out, "--lr", "-1", *small_train],
        ["train", out, "--amp", "bogus", *small_train],
        ["train", out, "--kind", "ghn4", *small_train],
        ["train", out, "--max-shape", "64", "64", "11", "12", *small_train],
        ["train", out, "--hid", "30", "--heads", "8", *small_train],
        ["train", out, "--torchvision-fraction", "2", *small_train],
        ["train", out, "--steps", "abc"],
        ["train", out, "--init-from", "/no/such/ghn", "--batch-size", "2", *small_train],
        ["train", out, "--data", "CIFAR10", "--data-root", str(tmp / "no_data"), *small_train],
        ["train", out, "--data", str(tmp / "no_such_images"), *small_train],
        ["verify", "--ghn", "ghn3-s-m8"],  # no published figures
        ["verify", "--ghn", "ghn3-t-m8"],  # offline
        ["list", "--bogus"],
        ["list", "no-such-ghn*"],
        # issue 21: exit 3 or several lines before
        ["apply", "resnet18", "--ghn", "bundled", "--num-classes", str(10**13)],  # out of memory building it
        ["apply", "resnet18", "--ghn", "bundled", "--input-size", "1", "64", "64"],  # 3 lines (fallback warnings)
        ["apply", "resnet18", "--ghn", "bundled", "--save", str(a_file / "x.safetensors")],
        ["verify", "--ghn", "bundled", "--tolerance", "nan"],
        ["verify", "--ghn", "bundled", "--tolerance", "-1"],
        ["train", str(a_file), "--steps", "1", *small_train],  # raw [Errno 17] after the setup
        ["train", str(a_file / "run"), "--steps", "1", *small_train],  # raw [Errno 20]
        ["train", out, "--steps", "5", "--warmup-steps", "10", *small_train],
        ["compare", "--models", "resnet18", "--inits", "default", "--data", "shapes", "--out", str(a_file)],
    ]


def test_no_bad_invocation_prints_a_traceback(offline_hub: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    invocations = bad_invocations(tmp_path)
    assert len(invocations) >= 40
    failures = []
    for argv in invocations:
        if "/dev/zero" in argv and not Path("/dev/zero").exists():
            continue
        code = cli.main(argv)
        captured = capsys.readouterr()
        err = captured.err.strip()
        if code != 2 or "\n" in err or not err or "Traceback" in err + captured.out:
            failures.append(f"{argv}: exit {code}, stderr {captured.err!r}")
    assert not failures, "\n".join(failures)


def test_train_refuses_zero_classes_before_doing_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", str(tmp_path / "run"), "--num-classes", "0"]) == 2
    assert "argument --num-classes: num_classes must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="num_classes"):
        TrainConfig(output=str(tmp_path), num_classes=0)


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ghn-init {ghn_init.__version__}"
    assert cli.main(["apply", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--in-chans", "--input-size", "--model-kwargs", "--json", "--seed", "--save"))


@pytest.mark.parametrize("module", ["ghn_init", "ghn_init.cli"])  # torchrun -m needs ghn_init.cli (had no __main__)
def test_the_installed_entry_point_prints_one_line_too(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", module, "apply", "no_such_model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "no_such_model" in done.stderr


def test_commands_import_only_what_they_run(tmp_path: Path) -> None:
    """`ghn-init --version`, `--help`, `list` and `train --help` import no torchvision (about 1 s of every call:
    building the train options imported it), nor timm, matplotlib or scikit-learn."""
    code = (
        "import sys\n"
        "from ghn_init.cli import main\n"
        "for argv in (['--version'], ['--help'], ['list', '--json'], ['train', '--help']):\n"
        "    assert main(argv) == 0, argv\n"
        "    heavy = [m for m in ('torchvision', 'timm', 'matplotlib', 'sklearn') if m in sys.modules]\n"
        "    assert not heavy, f'ghn-init {\" \".join(argv)} imported {heavy}'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["HF_HUB_CACHE"] = str(tmp_path / "hf_cache")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_unexpected_error_is_one_line_with_exit_code_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(ghn_init.hub, "list_ghns", broken)
    assert cli.main(["list"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GHN_INIT_DEBUG=1" in err and "something nobody expected" in err
    monkeypatch.setenv("GHN_INIT_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["list"])


# ---------------------------------------------------------------- conventions


def test_save_safetensors_json_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file

    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for path in paths:
        argv = ["apply", "squeezenet1_1", "--ghn", "bundled", "--num-classes", "10", "--seed", "0", "--json"]
        argv += ["--postprocess", "none"]  # raw predictions: every tensor written
        assert cli.main([*argv, "--save", str(path)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["fraction_predicted"] == 1.0 and report["saved_to"] == str(path)
    a, b = (load_file(str(p)) for p in paths)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # --seed: reproducible
    model = create_model("squeezenet1_1", num_classes=10)
    model.load_state_dict(a, strict=True)
    stored = read_report(paths[0])
    assert stored["predicted"] == report["predicted"] and stored["fraction_predicted"] == 1.0


def test_save_other_suffixes_keeps_torch_save(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "model.pt"
    assert cli.main(["apply", "squeezenet1_1", "--ghn", "bundled", "--save", str(path)]) == 0
    assert "torch.save" in capsys.readouterr().out
    assert "features.0.weight" in torch.load(path, weights_only=True)


def test_in_chans_input_size_and_model_kwargs_reach_the_model(capsys: pytest.CaptureFixture) -> None:
    argv = ["apply", "timm/resnet10t", "--ghn", "bundled", "--in-chans", "1", "--json", "--postprocess", "none"]
    assert cli.main([*argv, "--model-kwargs", '{"drop_rate": 0.1}']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fraction_predicted"] == 1.0
    assert cli.main(["trace", "timm/resnet10t", "--in-chans", "1", "--input-size", "1", "64", "64", "--json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    shapes = [tuple(n["shape"]) for n in graph["nodes"] if n.get("shape")]
    assert (24, 1, 3, 3) in shapes  # the stem convolution takes one channel


def test_detection_models_are_built_without_downloading_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = create_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_list_takes_patterns(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["list", "ghn3-[ts]*", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["ghn3-s-m8", "ghn3-t-m8"]
