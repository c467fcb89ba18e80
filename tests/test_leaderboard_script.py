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


def test_the_confirmation_pits_the_offline_path_against_the_strongest_alternative(leaderboard) -> None:
    screening = _results(
        {
            ("resnet18", "default"): [0.50, 0.52, 0.51],
            ("resnet18", "ghn:bundled"): [0.70, 0.71, 0.72],  # best, but the offline path is not an alternative
            ("resnet18", "ghn:bundled+calibrate"): [0.60, 0.61, 0.62],
            ("resnet18", "lsuv"): [0.65, 0.66, 0.64],  # the strongest alternative a user could pick
            ("resnet18", "orthogonal"): [0.55, 0.56, 0.57],
            ("small_vgg", "default"): [0.30, 0.31, 0.32],  # the alternative here: default itself
            ("small_vgg", "ghn:bundled"): [0.20, 0.21, 0.22],
            ("small_vgg", "ghn:bundled+calibrate"): [0.25, 0.26, 0.24],
        }
    )
    picks = {m: leaderboard.strongest_alternative(screening, m) for m in screening.models}
    assert picks == {"resnet18": "lsuv", "small_vgg": "default"}
    assert leaderboard.finalists("lsuv") == ("default", "lsuv", "ghn:bundled", "ghn:bundled+calibrate")
    assert leaderboard.finalists("default") == ("default", "ghn:bundled", "ghn:bundled+calibrate")

    # confirmation seeds: on resnet18 the GHN is level with lsuv (interval includes 0); on small_vgg it is below
    # default in one regime, +calibrate level in both
    runs = []
    for data in ("digits", "shapes"):
        for seed, (lsuv, ghn, cal, default) in enumerate([(0.6, 0.62, 0.5, 0.4), (0.7, 0.66, 0.5, 0.4),
                                                          (0.65, 0.66, 0.5, 0.4)]):
            s = 100 + seed
            runs += [_run("resnet18", "lsuv", s, lsuv, data), _run("resnet18", "ghn:bundled", s, ghn, data),
                     _run("resnet18", "ghn:bundled+calibrate", s, cal, data),
                     _run("resnet18", "default", s, default, data)]  # fmt: skip
            low = 0.1 if data == "shapes" else 0.5 + 0.01 * seed  # below default on shapes only
            level = 0.5 + 0.02 * seed + 0.01 * (seed - 1)  # differences -0.01, 0, +0.01 to default
            runs += [_run("small_vgg", "default", s, 0.5 + 0.02 * seed, data),
                     _run("small_vgg", "ghn:bundled", s, low, data),
                     _run("small_vgg", "ghn:bundled+calibrate", s, level, data)]  # fmt: skip
    verdicts = leaderboard.confirm(Results({"steps": 10}, runs, []), picks)
    assert verdicts["resnet18"]["use"] == "`apply(model)`"
    cell = verdicts["resnet18"]["regimes"]["digits"]
    assert cell["ghn:bundled"]["low"] < 0 < cell["ghn:bundled"]["high"] and cell["ghn:bundled"]["level"]
    assert not cell["ghn:bundled+calibrate"]["level"] and not cell["default"]["level"]
    assert verdicts["small_vgg"]["use"] == "`apply(model, data=...)` (`ghn:bundled+calibrate`)"  # narrow: no flag
    assert not verdicts["small_vgg"]["regimes"]["shapes"]["ghn:bundled"]["level"]

    args = SimpleNamespace(full=True, steps=10, seeds=(0, 1, 2), confirm_seeds=(100, 101, 102))
    table = leaderboard.which_init(screening, args, verdicts)
    rows = {line.split("(`")[1].split("`)")[0]: line.split("|") for line in table.splitlines() if "(`" in line
            and line.startswith("| ")}  # fmt: skip
    assert "`ghn:bundled`" in rows["resnet18"][2] and "`lsuv`" in rows["resnet18"][3]
    assert "digits: " in rows["resnet18"][4] and "apply(model)" in rows["resnet18"][-2]
    assert "`default`" in rows["small_vgg"][3] and "calibrate" in rows["small_vgg"][-2]
    section = "\n".join(leaderboard.confirmation_section(verdicts, args))
    assert "## Confirmation (seeds 100, 101, 102)" in section and section.count("| `resnet18` |") == 2
    # a model whose alternative lost everywhere to the offline path, and one where nothing is level: the alternative
    worse = [_run("resnet18", s, 100 + k, a, "digits") for k in range(3)
             for s, a in (("lsuv", 0.9 + 0.01 * k), ("ghn:bundled", 0.5), ("ghn:bundled+calibrate", 0.4))]  # fmt: skip
    assert leaderboard.confirm(Results({}, worse, []), {"resnet18": "lsuv"})["resnet18"]["use"] == "`lsuv`"
    # level only because the seeds disagree wildly: the use column says how wide
    noisy = [_run("resnet18", s, 100 + k, a, "digits") for k in range(3)
             for s, a in (("lsuv", 0.5), ("ghn:bundled", (0.1, 0.9, 0.5)[k]))]  # fmt: skip
    use = leaderboard.confirm(Results({}, noisy, []), {"resnet18": "lsuv"})["resnet18"]["use"]
    assert use.startswith("`apply(model)` (level only within intervals up to ±99 points") and "`lsuv`" in use


def test_screening_and_confirmation_seeds_must_differ(leaderboard, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["leaderboard.py", "--seeds", "0,1,100", "--collect"])
    with pytest.raises(SystemExit):
        leaderboard.main()
    assert "both screening and confirmation seeds" in capsys.readouterr().err
