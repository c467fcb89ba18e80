"""The harness's few-shot subsets, several datasets, failed schemes, paired statistics and leaderboard."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import ghn_init
from ghn_init.cli import main
from ghn_init.harness import Data, Results, Run, per_class_subset
from ghn_init.harness.stats import interval, leaderboard, paired, t_quantile

from .test_compare import tiny_data, tiny_net


def test_per_class_subsets_are_seeded_and_shared_by_every_scheme() -> None:
    data = tiny_data(n_train=60)
    a, b, c = (per_class_subset(data.train, 4, s) for s in (0, 0, 1))
    assert torch.equal(a.tensors[0], b.tensors[0]) and not torch.equal(a.tensors[0], c.tensors[0])
    assert torch.bincount(a.tensors[1]).tolist() == [4, 4, 4]
    seen = {}

    def record(name):
        def scheme(model, *, data=None, generator=None):
            seen[name] = data[0].clone()

        return scheme

    results = ghn_init.compare(
        [tiny_net], {"a": record("a"), "b": record("b")}, data, steps=2, seeds=[0], per_class=4, progress=False
    )
    assert torch.equal(seen["a"], seen["b"]) and len(seen["a"]) == 12, "the scheme's data is the few-shot set"
    assert results.config["per_class"] == 4 and results.config["calibration_images"] == 12
    assert results.runs[0].loss_curve == results.runs[1].loss_curve


def test_several_datasets_and_a_scheme_that_does_not_apply(tmp_path) -> None:
    other = tiny_data()
    other = Data("tiny2", other.train, other.test, 3)
    results = ghn_init.compare(
        [tiny_net],
        "default,mimetic,lsuv",
        [tiny_data(), other],
        steps=2,
        seeds=[0, 1],
        reference="default",
        progress=False,
        out=str(tmp_path),
    )
    assert results.datasets == ["tiny", "tiny2"] and len(results.runs) == 2 * 2 * 2
    assert len(results.failed) == 4 and {f.scheme for f in results.failed} == {"mimetic"}
    assert results.failed[0].error.startswith("UnsupportedModelError: mimetic init applies to self-attention")
    assert "\n" not in results.failed[0].error
    saved = json.loads((tmp_path / "results.json").read_text())
    assert all({"model", "scheme", "seed", "test_acc", "data"} <= set(r) for r in saved["runs"])
    assert saved["failed"][0]["scheme"] == "mimetic" and len(saved["paired"]) == 2  # lsuv on each dataset
    board = {r["scheme"]: r for r in saved["leaderboard"]}
    assert board["mimetic"]["failed"] == 2 and board["mimetic"]["cells"] == 0 and board["lsuv"]["cells"] == 2
    md = (tmp_path / "results.md").read_text()
    assert "| tiny2 | tiny_net | lsuv |" in md and "mimetic: UnsupportedModelError" in md and "## Leaderboard" in md
    assert Results.from_dict(saved).failed == results.failed
    pytest.importorskip("matplotlib")
    assert (tmp_path / "ranks.png").stat().st_size > 1000 and "ranks.png" in md


def _run(model: str, scheme: str, seed: int, acc: float, data: str = "d") -> Run:
    return Run(model, scheme, seed, [0, 1], [0.1, acc], [1.0, 0.5], 1.0, [1.0], 0.0, 0.0, None, data)


def test_paired_interval_and_verdicts() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 29, 30, 45, 100):
        assert abs(t_quantile(df) - scipy_stats.t.ppf(0.975, df)) < 2e-3
    ref = [0.50, 0.60, 0.55, 0.52, 0.58]
    better = [r + d for r, d in zip(ref, [0.05, 0.06, 0.04, 0.05, 0.07], strict=True)]
    noisy = [r + d for r, d in zip(ref, [0.05, -0.06, 0.02, -0.03, 0.01], strict=True)]
    runs = [_run("m", "ref", s, a) for s, a in enumerate(ref)]
    runs += [_run("m", "better", s, a) for s, a in enumerate(better)]
    runs += [_run("m", "noisy", s, a) for s, a in enumerate(noisy)]
    runs += [_run("m", "worse", s, a - 0.1) for s, a in enumerate(ref)]
    results = Results({"seeds": list(range(5))}, runs)
    rows = {r["scheme"]: r for r in paired(results, "ref")}
    assert rows["better"]["verdict"] == "win" and rows["noisy"]["verdict"] == "tie"
    assert rows["worse"]["verdict"] == "loss" and math.isclose(rows["worse"]["mean"], -0.1)
    d = [0.05, 0.06, 0.04, 0.05, 0.07]
    mean, low, high = interval(d)
    sem = scipy_stats.sem(d)
    assert math.isclose(mean, 0.054) and abs((high - mean) - scipy_stats.t.ppf(0.975, 4) * sem) < 1e-4
    board = leaderboard(results, "ref")
    assert [r["scheme"] for r in board] == ["better", "ref", "noisy", "worse"]  # noisy: -0.2 points on average
    assert board[0]["wins"] == 1 and board[-1]["losses"] == 1 and board[0]["first_or_level"] == 1
    assert board[2]["first_or_level"] == 1, "noisy's interval against the best includes 0: level"
    assert board[3]["first_or_level"] == 0, "worse's interval against the best lies below 0"


def test_harness_modules_import_no_cycle() -> None:
    """render and stats take results by shape and import nothing of the harness: no render <-> runner cycle."""
    root = Path(ghn_init.__file__).parent / "harness"
    graph = {}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {
            (node.module or "").lstrip(".").split(".")[0] or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names
        }

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert not [m for m in graph if reaches(m, m, {m})], graph


def test_cli_per_class_reference_and_shapes(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(
        ["compare", "--models", "resnet18", "--inits", "default,zero-residual,mimetic", "--data", "shapes",
         "--per-class", "2", "--steps", "1", "--seeds", "0,1", "--image-size", "16", "--batch-size", "8",
         "--eval-at", "1", "--reference", "default", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["per_class"] == 2 and len(saved["runs"]) == 4 and len(saved["failed"]) == 2
    assert {r["scheme"] for r in saved["paired"]} == {"zero-residual"}
    assert "## Leaderboard" in capsys.readouterr().out


def test_shapes_data_is_built_in() -> None:
    data = ghn_init.harness.load_data("shapes", image_size=16)
    assert data.num_classes == 8 and len(data.train) == 1600 and data.train.tensors[0].shape[1:] == (3, 16, 16)
    assert isinstance(data.test, TensorDataset) and torch.bincount(data.test.tensors[1]).tolist() == [100] * 8


def test_the_plot_smooths_the_loss_with_the_tables_window() -> None:
    # The plot said "9-step mean" (a centered 9-step window) where the table used the 10 steps before a checkpoint.
    import torch

    from ghn_init.harness.render import trailing_mean

    curve = torch.arange(1.0, 31.0).unsqueeze(0)
    smooth = trailing_mean(curve, 10)
    assert smooth[0, -1].item() == pytest.approx(curve[0, -10:].mean().item())
    assert smooth[0, 0].item() == 1.0 and smooth[0, 3].item() == pytest.approx(2.5)
