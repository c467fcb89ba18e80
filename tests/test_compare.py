"""The init-comparison harness on tiny models and data: fairness, results, files, CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

import ghn_init
from ghn_init.cli import main
from ghn_init.harness import Data, orthogonal, parse_scheme
from ghn_init.harness.data import load_data

from .conftest import tiny_cnn, tiny_ghn

try:
    import matplotlib  # noqa: F401

    HAS_MATPLOTLIB = True
except ImportError:  # the [compare] extra is not installed: no plot, the rest still works
    HAS_MATPLOTLIB = False


def tiny_data(n_train: int = 48, n_test: int = 24, size: int = 8) -> Data:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n_train + n_test,), generator=g)
    x[torch.arange(len(y)), y] += 2.0  # learnable: the label's channel is brighter
    return Data("tiny", TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), 3)


def tiny_net() -> nn.Module:  # compare() names each model after its builder
    return tiny_cnn(3, dropout=0.2)


def test_same_seed_same_conditions_for_every_scheme() -> None:
    starts = {}

    def record(name):
        def scheme(model):
            starts[name] = {k: v.clone() for k, v in model.state_dict().items()}

        return scheme

    results = ghn_init.compare(
        [tiny_net],
        {"a": record("a"), "b": record("b")},
        tiny_data(),
        steps=6,
        seeds=[0, 1],
        batch_size=8,
        eval_at=[0, 3],
        progress=False,
    )
    assert len(results.runs) == 4 and results.schemes == ["a", "b"] and results.models == ["tiny_net"]
    for seed in (0, 1):
        a, b = (results.select(scheme=s)[seed] for s in ("a", "b"))
        assert a.seed == b.seed == seed
        # identical schemes: identical data order, dropout draws, losses and accuracies
        assert a.loss_curve == b.loss_curve and a.test_acc == b.test_acc and a.step0_loss == a.loss_curve[0]
    s0, s1 = results.select(scheme="a")
    assert s0.loss_curve != s1.loss_curve, "different seeds must differ"
    assert s0.steps == [0, 3, 6] and len(s0.test_acc) == 3 and len(s0.loss_curve) == 6


def test_results_split_over_processes_merge_into_one_table() -> None:
    def run(seeds, lr=0.02):
        return ghn_init.compare(
            [tiny_net], ["default"], tiny_data(), steps=2, seeds=seeds, batch_size=8, lr=lr, progress=False
        )

    whole, first, second = run([0, 1]), run([0]), run([1])
    merged = ghn_init.CompareResults.merge([first, second.to_dict()])  # Results or their dicts
    assert merged.config["seeds"] == [0, 1] and merged.models == ["tiny_net"]
    assert [r.loss_curve for r in merged.runs] == [r.loss_curve for r in whole.runs]
    assert merged.summary()[0]["test_acc"] == whole.summary()[0]["test_acc"]
    with pytest.raises(ValueError, match="'lr'"):  # unequal fine-tuning must not share a table
        ghn_init.CompareResults.merge([first, run([1], lr=0.1)])
    with pytest.raises(ValueError, match="no results"):
        ghn_init.CompareResults.merge([])


def test_schemes_change_only_what_they_initialize() -> None:
    captured = {}

    def first_layer_zero(model):
        nn.init.zeros_(model[0].weight)
        captured["model"] = {k: v.clone() for k, v in model.state_dict().items()}

    def keep(model):
        captured["default"] = {k: v.clone() for k, v in model.state_dict().items()}

    ghn_init.compare(
        [tiny_net], {"default": keep, "zero": first_layer_zero}, tiny_data(), steps=1, seeds=[3], progress=False
    )
    for k, v in captured["default"].items():
        if k != "0.weight":
            assert torch.equal(v, captured["model"][k]), f"{k} must be the same default value in every scheme"


def test_ghn_and_builtin_schemes_run_and_report(tmp_path) -> None:
    ghn = tiny_ghn()
    inits = {"default": "default", "orthogonal": "orthogonal", "ghn": ghn_init.harness.ghn_scheme(ghn, "orth")}
    results = ghn_init.compare([tiny_net], inits, tiny_data(), steps=4, seeds=1, progress=False, out=str(tmp_path))
    run = results.select(scheme="ghn")[0]
    assert run.report["postprocess"] == "orth" and run.report["fraction_predicted"] > 0.9
    assert results.select(scheme="default")[0].report["touched"] == []
    assert results.select(scheme="orthogonal")[0].report["touched"] == ["0.weight"]
    assert all(0.0 <= a <= 1.0 for r in results.runs for a in r.test_acc)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {r["scheme"] for r in saved["runs"]} == {"default", "orthogonal", "ghn"}
    assert saved["config"]["recalibrate_bn"] is True and saved["summary"][0]["test_acc"][0][1] == 0.0
    assert ghn_init.CompareResults.from_dict(saved).runs[0].loss_curve == results.runs[0].loss_curve
    md = (tmp_path / "results.md").read_text()
    assert "| tiny_net | orthogonal |" in md
    rows = [line for line in md.splitlines() if line.startswith("| tiny_net |")]
    assert rows and not any("±" in row for row in rows), "one seed has no spread: no '± 0.0'"
    assert "one seed: its values" in md
    if HAS_MATPLOTLIB:
        assert (tmp_path / "curves.png").stat().st_size > 1000 and "curves.png" in md
    else:
        assert not (tmp_path / "curves.png").exists() and "curves.png" not in md


def test_orthogonal_scheme_leaves_the_classifier() -> None:
    torch.manual_seed(0)
    model = tiny_net()
    fc = model[6].weight.clone()
    orthogonal(model)
    w = model[0].weight.reshape(8, -1)
    assert torch.allclose(w @ w.t(), torch.eye(8), atol=1e-5)
    assert torch.equal(model[6].weight, fc)


def test_bad_names_fail_before_training() -> None:
    with pytest.raises(ValueError, match="unknown init scheme 'kaiming'"):
        parse_scheme("kaiming")
    with pytest.raises(ValueError, match="names no GHN"):
        parse_scheme("ghn:")
    with pytest.raises(ValueError, match="unknown post-processing"):
        parse_scheme("ghn:bundled+orht")
    with pytest.raises(ValueError, match="unknown optimizer"):
        ghn_init.compare([tiny_net], "default", tiny_data(), optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="given twice"):
        ghn_init.compare([tiny_net], "default,default", tiny_data(), progress=False)
    with pytest.raises(ValueError, match="unknown data"):
        load_data("no-such-thing")


def test_digits_data_is_normalized_and_split() -> None:
    pytest.importorskip("sklearn")
    data = load_data("digits", image_size=16)
    x, y = data.train.tensors
    assert x.shape[1:] == (3, 16, 16) and len(data.train) + len(data.test) == 1797 and data.num_classes == 10
    assert abs(x.mean().item()) < 1.5 and set(y.tolist()) == set(range(10))


def _image_folder(root, classes=2, per_class=6):
    from PIL import Image

    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), color=(40 * c + i, 100, 200)).save(root / f"c{c}" / f"{i}.png")


def test_cli_compare_on_an_image_folder(tmp_path, capsys) -> None:
    _image_folder(tmp_path / "images")
    out = tmp_path / "out"
    code = main(
        [
            "compare",
            "--models",
            "small_vit",
            "--inits",
            "default,orthogonal",
            "--data",
            str(tmp_path / "images"),
            "--steps",
            "2",
            "--seeds",
            "0",
            "--batch-size",
            "4",
            "--image-size",
            "8",
            "--no-progress",
            "--optimizer",
            "sgd",
            "--schedule",
            "onecycle",
            "--lr",
            "0.01",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["num_classes"] == 2 and saved["config"]["optimizer"] == "sgd"
    assert len(saved["runs"]) == 2 and (out / "results.md").exists()
    assert (out / "curves.png").exists() == HAS_MATPLOTLIB
    assert "| small_vit | default |" in capsys.readouterr().out


def test_cli_compare_bad_input_is_one_line(tmp_path, capsys) -> None:
    code = main(["compare", "--models", "small_vit", "--inits", "default,xavier", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "unknown init scheme 'xavier'" in err


def test_torchvision_datasets_with_a_split_argument_resolve_like_the_trainers(tmp_path) -> None:
    """`torchvision:SVHN` takes `split=`, not `train=`: it used to fail with a raw TypeError; now it goes through
    the trainer's loader (a missing download is a FileNotFoundError saying what to do)."""
    with pytest.raises(FileNotFoundError, match="SVHN not found"):
        load_data(f"torchvision:SVHN:{tmp_path}")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data("torchvision:NoSuchDataset")
