"""benchmarks/leaderboard.py's bookkeeping: kept jobs, --refresh, and the README's which-init table it writes
(the runs themselves are ghn_init.compare's, tested in test_harness.py)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ghn_init.harness import Failure, Results, Run

from .conftest import REPO


@pytest.fixture(scope="module")
def leaderboard():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("leaderboard")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _run(model: str, scheme: str, seed: int, acc: float, data: str = "digits, 10/class") -> Run:
    return Run(model, scheme, seed, [0, 10], [0.1, acc], [2.3, 1.0], 2.3, [2.3], 1.0, 0.1, None, data)


def _results(accs: dict[tuple[str, str], list[float]]) -> Results:
    runs = [_run(m, s, seed, a) for (m, s), values in accs.items() for seed, a in enumerate(values)]
    return Results({"steps": 10}, runs, [Failure("resnet18", "mimetic", 0, "UnsupportedModelError: none", "x")])


def test_refresh_drops_only_the_matching_schemes(leaderboard, tmp_path: Path) -> None:
    kept = _results({("resnet18", "default"): [0.5], ("resnet18", "ghn:bundled"): [0.6]}).to_dict()
    path = leaderboard._job_file(tmp_path, "digits-10", "timm/convnext_atto", 100, 3)
    assert path.name == "digits-10__timm_convnext_atto__steps100__seed3.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(kept))
    assert leaderboard._schemes_in(leaderboard._kept(path)) == {"default", "ghn:bundled", "mimetic"}
    leaderboard._refresh(tmp_path, ["ghn:*"])
    assert leaderboard._schemes_in(leaderboard._kept(path)) == {"default", "mimetic"}


def test_which_init_names_the_best_and_where_the_offline_path_stands(leaderboard, tmp_path: Path) -> None:
    whole = _results(
        {
            ("resnet18", "default"): [0.50, 0.52, 0.51],
            ("resnet18", "ghn:bundled"): [0.70, 0.71, 0.72],  # best on resnet18
            ("resnet18", "ghn:bundled+calibrate"): [0.69, 0.72, 0.71],  # level with it
            ("small_vgg", "default"): [0.10, 0.10, 0.10],
            ("small_vgg", "ghn:bundled"): [0.30, 0.32, 0.31],
            ("small_vgg", "ghn:bundled+calibrate"): [0.20, 0.21, 0.22],
            ("small_vgg", "kaiming-normal-fan-in"): [0.85, 0.88, 0.86],  # clearly best on small_vgg
        }
    )
    args = SimpleNamespace(full=False, steps=10, seeds=(0, 1, 2))
    table = leaderboard.which_init(whole, args)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "(`" in line]
    rows = {line.split("(`")[1].split("`)")[0]: line for line in lines}
    assert "**partial**" in table
    assert "`ghn:bundled`" in rows["resnet18"].split("|")[3] and "apply(model)" in rows["resnet18"].split("|")[-2]
    assert "ghn:bundled+calibrate" in rows["resnet18"].split("|")[4]  # level with the best
    vgg = rows["small_vgg"].split("|")
    assert "kaiming-normal-fan-in" in vgg[3] and "0/1" in vgg[5] and "kaiming-normal-fan-in" in vgg[-2]

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{leaderboard.README_START}\nold\n{leaderboard.README_END}\nrest\n")
    leaderboard.update_readme(table, readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text and table in text
