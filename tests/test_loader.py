"""Regression tests of issue 11 for loading GHN files: content sniffing, bounded reads, zip records checked
before anything is inflated, the config.json schema, the sha256 check, and list_ghns(pattern)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch

import ghn_init
from ghn_init.errors import CheckpointError, ConfigError
from ghn_init.hub.checkpoints import FORMAT_VERSION, load_file, save_folder
from ghn_init.hub.safe_pickle import MAX_CHECKPOINT_BYTES, load_pickle

from .conftest import tiny_ghn


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return save_folder(tiny_ghn(), tmp_path / "tiny")


def inferable_ghn() -> ghn_init.GHN:
    """A tiny GHN whose config can be read off its tensor shapes, as pickled published files need."""
    return tiny_ghn(heads=8, max_shape=(16, 16, 11, 11))


def rewrite_config(folder: Path, change) -> None:
    doc = json.loads((folder / "config.json").read_text())
    change(doc)
    (folder / "config.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------- sniffing and bounded reads


def test_a_pickle_whose_tail_looks_like_a_zip_end_record_still_loads(tmp_path: Path) -> None:
    tail = torch.frombuffer(bytearray(b"PK\x05\x06" + bytes(18)), dtype=torch.uint8)
    state = {"w": torch.ones(3), "tail": tail}
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps(state, protocol=4))
    assert zipfile.is_zipfile(path)  # the old sniffing would have sent it to torch.load
    loaded = load_pickle(path)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["tail"], tail)


def test_a_joblib_style_ghn_with_zip_like_bytes_loads(tmp_path: Path) -> None:
    ghn = inferable_ghn()
    state = {k: v.clone() for k, v in ghn.state_dict().items()}
    state["embed.weight"].view(-1)[-6:] = torch.frombuffer(bytearray(b"PK\x05\x06" + bytes(20)), dtype=torch.float32)[
        :6
    ]
    path = tmp_path / "ghn.pt"
    path.write_bytes(pickle.dumps(state, protocol=4))
    loaded = load_file(path)
    assert torch.equal(loaded.embed.weight, state["embed.weight"])


def test_a_device_file_is_refused_before_reading() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="not a regular file"):
        ghn_init.load_ghn("/dev/zero")
    assert time.perf_counter() - start < 5


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.pt"
    with open(path, "wb") as f:
        f.truncate(MAX_CHECKPOINT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(CheckpointError, match="more than the"):
        load_file(path)


def test_a_non_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("just some text\n" * 1000)
    with pytest.raises(CheckpointError, match="neither a torch.save archive nor a pickle"):
        load_file(path)


def test_a_compressed_zip_record_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", bytes(64 << 20))  # 64 MiB of zeros, ~64 KB on disk
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="compressed"):
        load_file(path)


def test_a_zip_record_claiming_more_bytes_than_the_file_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buffer)
    data = bytearray(buffer.getvalue())
    # the central directory entry of the first record: its uncompressed size field (offset 24) set to 1 GiB
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1 << 30).to_bytes(4, "little")
    path = tmp_path / "lies.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="claim"):
        load_file(path)


def test_a_torch_save_archive_still_loads(tmp_path: Path) -> None:
    ghn = inferable_ghn()
    path = tmp_path / "ghn.pt"
    torch.save({k: v.clone() for k, v in ghn.state_dict().items()}, path)
    loaded = load_file(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ghn.state_dict().items())


# ---------------------------------------------------------------- config.json schema


@pytest.mark.parametrize(
    ("change", "field", "match"),
    [
        (lambda d: d["ghn"].update(layernorm="false"), "layernorm", "must be true or false"),
        (lambda d: d["ghn"].update(hid="16"), "hid", "must be an integer"),
        (lambda d: d["ghn"].update(hid=True), "hid", "must be an integer"),
        (lambda d: d["ghn"].update(max_shape=[16, 16, 5]), "max_shape", "max_shape"),
        (lambda d: d["ghn"].update(max_shape="16x16"), "max_shape", "list of 4 integers"),
        (lambda d: d["ghn"].update(heads=0), "heads", "heads"),
        (lambda d: d["ghn"].update(kind="ghn4"), "kind", "kind must be"),
        (lambda d: d["ghn"].pop("num_classes"), "num_classes", "has no 'num_classes'"),
        (lambda d: d["ghn"].update(dropout=0.1), "dropout", "unknown GHN config key 'dropout'"),
        (lambda d: d.pop("ghn"), "ghn", 'no "ghn" section'),
        (lambda d: d.update(format_version=99), "format_version", "format_version 99"),
        (lambda d: d.update(format_version="1"), "format_version", "positive integer"),
    ],
)
def test_config_errors_name_the_field_and_the_file(folder: Path, change, field: str, match: str) -> None:
    rewrite_config(folder, change)
    with pytest.raises(ConfigError, match=match) as info:
        ghn_init.load_ghn(folder)
    assert info.value.field == field
    assert "config.json" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ghn_init.GHNInitError)


def test_layernorm_false_in_config_turns_layer_norm_off(folder: Path) -> None:
    save_folder(tiny_ghn(layernorm=False), folder)
    assert json.loads((folder / "config.json").read_text())["format_version"] == FORMAT_VERSION
    assert not hasattr(ghn_init.load_ghn(folder), "ln")


def test_a_config_that_is_not_json_or_not_a_file_is_named(folder: Path) -> None:
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ghn_init.load_ghn(folder)
    if Path("/dev/zero").exists():
        (folder / "config.json").unlink()
        os.symlink("/dev/zero", folder / "config.json")
        with pytest.raises(ConfigError, match="not a regular file"):
            ghn_init.load_ghn(folder)


# ---------------------------------------------------------------- integrity


def test_sha256_checks_local_files_and_folders(folder: Path, tmp_path: Path) -> None:
    good = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert ghn_init.load_ghn(folder, sha256=good).config.hid == 16
    assert ghn_init.load_ghn(folder, sha256=good.upper()).config.hid == 16
    with pytest.raises(CheckpointError, match="not the expected"):
        ghn_init.load_ghn(folder, sha256="0" * 64)  # checked even though the GHN is already loaded
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        ghn_init.load_ghn(folder, sha256="abc")
    path = tmp_path / "ghn.pt"
    torch.save(inferable_ghn().state_dict(), path)
    with pytest.raises(CheckpointError, match="altered, truncated"):
        ghn_init.load_ghn(path, sha256=good)
    assert ghn_init.load_ghn(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()).config.hid == 16


def test_sha256_ties_a_kept_ghn_to_the_bytes_it_was_read_from(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest once checked belongs to the GHN read then: asking for another one reads the file again. The
    new bytes' digest used to pass against the rewritten file and return the GHN read before the rewrite."""
    monkeypatch.setattr(ghn_init.hub, "_stamp", lambda path: ())  # a rewrite the files' stamp cannot tell
    good = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    first = ghn_init.load_ghn(folder, sha256=good)
    save_folder(tiny_ghn(seed=1), folder)
    newer = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert ghn_init.load_ghn(folder) is first  # the documented limit: without sha256= the stamp decides
    second = ghn_init.load_ghn(folder, sha256=newer)
    assert torch.equal(second.embed.weight, tiny_ghn(seed=1).embed.weight)
    assert ghn_init.load_ghn(folder, sha256=newer) is second


# ---------------------------------------------------------------- the registry


def test_list_ghns_takes_a_pattern_and_has_flat_attributes() -> None:
    names = [info.name for info in ghn_init.list_ghns()]
    assert "ghn3-t-m8" in names and len(names) == len(set(names))
    ghn3 = ghn_init.list_ghns("ghn3*")
    assert ghn3 and all(info.name.startswith("ghn3") and info.kind == "ghn3" for info in ghn3)
    assert [i.name for i in ghn_init.list_ghns(["ghn2-*", "ghn3-t-m8"])] == [
        "ghn3-t-m8",
        "ghn2-imagenet",
        "ghn2-cifar10",
    ]
    assert ghn_init.list_ghns("nothing*") == []
    info = ghn_init.list_ghns("ghn3-t-m8")[0]
    assert info.size == info.entry.size and info.hf_url == info.entry.hf_url
    assert isinstance(info.cached, bool) and "name" in dir(info)
    with pytest.raises(AttributeError):
        getattr(info, "no_such_field")  # noqa: B009
    with pytest.raises(TypeError, match="pattern"):
        ghn_init.list_ghns(3)


def test_random_bytes_after_a_pickle_header_give_a_checkpoint_error(tmp_path) -> None:
    """A corrupted pickle stream fails in many ways (OverflowError on a huge BYTEARRAY8 length, IndexError,
    KeyError on the memo, struct.error, ...); every one must surface as a CheckpointError, never raw."""
    import random

    from ghn_init.errors import GHNInitError
    from ghn_init.hub.checkpoints import load_file

    rng = random.Random(0)
    path = tmp_path / "corrupt.pt"
    kinds = set()
    for _ in range(300):
        path.write_bytes(b"\x80\x04" + bytes(rng.getrandbits(8) for _ in range(256)))
        with pytest.raises(GHNInitError) as info:
            load_file(path)
        root = info.value
        while root.__cause__ is not None:
            root = root.__cause__
        kinds.add(type(root).__name__)
    assert len(kinds) > 1  # the streams really do fail in different ways


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.int32])
def test_a_checkpoint_in_a_dtype_a_ghn_cannot_run_in_is_refused_at_load(tmp_path: Path, dtype: torch.dtype) -> None:
    # float8 weights loaded, then apply failed with an untyped NotImplementedError.
    from safetensors.torch import load_file as load_tensors
    from safetensors.torch import save_file

    folder = save_folder(tiny_ghn(), tmp_path / "ghn")
    state = {k: v.to(dtype) for k, v in load_tensors(str(folder / "model.safetensors")).items()}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"dtype a GHN cannot run in .*{str(dtype).split('.')[-1]}") as e:
        ghn_init.load_ghn(folder)
    assert "\n" not in str(e.value) and "model.safetensors" in str(e.value)


def test_a_float8_pickle_is_refused_at_load_with_the_tensors_and_dtypes(tmp_path: Path) -> None:
    # The pickled (published) layout too, and a GHN instance cast to float8: typed, with every tensor's dtype.
    state = {k: (v.to(torch.float8_e5m2) if k.startswith("embed") else v) for k, v in tiny_ghn().state_dict().items()}
    path = tmp_path / "ghn.pt"
    torch.save(state, path)
    with pytest.raises(ghn_init.UnsupportedDtypeError, match="float8_e5m2") as e:
        ghn_init.load_ghn(path)
    assert isinstance(e.value, CheckpointError) and e.value.path == str(path) and "\n" not in str(e.value)
    assert e.value.dtypes and set(e.value.dtypes.values()) == {"float8_e5m2"}
    assert all(name.startswith("embed") for name in e.value.dtypes)
    with pytest.raises(ghn_init.UnsupportedDtypeError, match=r"ghn.float\(\)"):
        ghn_init.apply(torch.nn.Linear(4, 2), tiny_ghn().to(torch.float8_e4m3fn))
