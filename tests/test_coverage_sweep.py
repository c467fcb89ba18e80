"""The coverage sweep (benchmarks/coverage.py): a quick run on a few small models, and the full timm
sweep (``python -m pytest -m slow``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, fixtures_dir

SCRIPT = REPO / "benchmarks" / "coverage.py"


def _run(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_sweep_on_small_models_writes_csv_and_markdown(tmp_path: Path) -> None:
    fixtures_dir()  # the sweep uses the fixture GHNs
    models = ["timm/test_vit", "timm/test_efficientnet", "squeezenet1_1"]
    out = _run("--models", *models, "--out-dir", str(tmp_path), "--meta-above", "1000000", timeout=600)
    assert "3 to run" in out

    rows = _rows(tmp_path / "coverage_ghn3_t.csv")
    assert set(rows) == set(models)
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r["error"])
        assert r["tracer"] == "autograd-meta"
        assert 0.9 < float(r["share_predicted"]) <= 1.0
        assert int(r["nodes"]) > 3 and int(r["params_predicted"]) <= int(r["params"])
    assert rows["squeezenet1_1"]["mode"] == "meta"  # 1.2M parameters > --meta-above
    assert rows["timm/test_vit"]["mode"] == "write"
    # the ViT's class token and position embedding stay at default init, with a reason
    assert "cls_token" in rows["timm/test_vit"]["left_alone"]
    assert "no GHN node type" in rows["timm/test_vit"]["left_alone"]

    md = (tmp_path / "coverage.md").read_text()
    assert "| torchvision | **1/1** |" in md and "| timm | **2/2** |" in md
    assert ">= 99% params predicted" in md
    for name in models:
        assert f"| {name} | ok |" in md

    # resumable: a rerun skips what is done
    out = _run("--models", *models, "--out-dir", str(tmp_path), timeout=300)
    assert "3 already in" in out and "0 to run" in out
    assert len(_rows(tmp_path / "coverage_ghn3_t.csv")) == 3


def test_sweep_reports_errors_and_timeouts(tmp_path: Path) -> None:
    fixtures_dir()
    _run("--models", "no_such_model", "timm/test_resnet", "--out-dir", str(tmp_path), "--timeout", "120", timeout=300)
    rows = _rows(tmp_path / "coverage_ghn3_t.csv")
    assert rows["no_such_model"]["status"] != "ok" and rows["no_such_model"]["error"]
    assert rows["timm/test_resnet"]["status"] == "ok"
    md = (tmp_path / "coverage.md").read_text()
    assert "no_such_model | **" in md


@pytest.mark.slow
def test_every_timm_model(tmp_path: Path) -> None:
    """All timm models, each in a fresh process; huge ones are decoded on the meta device."""
    import timm

    fixtures_dir()
    out_dir = tmp_path / "sweep"
    _run(
        "--source", "timm", "--out-dir", str(out_dir), "--meta-above", "3e8", "--timeout", "600", "-q", timeout=6 * 3600
    )
    rows = _rows(out_dir / "coverage_ghn3_t.csv")
    assert set(rows) == {"timm/" + m for m in timm.list_models()}
    failed = {m: f"{r['status']}: {r['error']}" for m, r in rows.items() if r["status"] not in ("ok", "timeout")}
    assert not failed, failed
