"""``ghn_init.save_safetensors``: a real safetensors file that other libraries load, the report as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

import ghn_init
from ghn_init.saving import read_report

from .conftest import tiny_ghn


class TiedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 8)
        self.tail = nn.Linear(8, 8)
        self.tail.weight = self.head.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(self.conv(x).mean((2, 3))))


def test_the_file_is_safetensors_with_every_key_and_the_report(tmp_path: Path) -> None:
    model = TiedNet()
    report = ghn_init.apply(model, tiny_ghn())
    path = ghn_init.save_safetensors(model, tmp_path / "m.safetensors", report, metadata={"note": "x"})
    assert path.read_bytes()[8:9] == b"{"  # an 8-byte header length, then the JSON header: not a pickle
    loaded = load_file(str(path))
    assert loaded.keys() == model.state_dict().keys()
    fresh = TiedNet()
    fresh.load_state_dict(loaded, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["note"] == "x" and meta["ghn_init_version"] == ghn_init.__version__
    stored = read_report(path)
    assert stored["predicted"] == report.predicted and stored["fraction_predicted"] == report.fraction_predicted
    assert json.loads(meta["ghn_init_report"]) == stored
    assert not list(tmp_path.glob("*.partial"))


def test_bad_paths_and_metadata_are_refused_before_writing(tmp_path: Path) -> None:
    model = TiedNet()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ghn_init.save_safetensors(model, tmp_path / "missing" / "m.safetensors")
    with pytest.raises(IsADirectoryError):
        ghn_init.save_safetensors(model, tmp_path)
    with pytest.raises(TypeError, match="strings"):
        ghn_init.save_safetensors(model, tmp_path / "m.safetensors", metadata={"n": 1})
    assert not list(tmp_path.iterdir())


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    """safetensors creates files owner-only; a saved checkpoint, like a converted GHN folder, is 0644."""
    path = ghn_init.save_safetensors(nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "m.safetensors.partial").exists()
