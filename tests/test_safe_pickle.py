"""Pickled checkpoints are read without running code from them, on every path the package offers."""

from __future__ import annotations

import ast
import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghn_init.hub import load_ghn
from ghn_init.hub.checkpoints import load_file
from ghn_init.hub.safe_pickle import UnsafeCheckpointError, load_pickle

from .conftest import REPO, published_checkpoint, tiny_published_ghn


class WritesFileWithShell:
    """Unpickling this runs ``os.system`` (stored as ``posix.system``)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class WritesFileWithOpen:
    """Unpickling this calls ``open(target, "w")`` (pickled as ``io.open``), which creates the file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.open, (str(self.target), "w"))


def test_a_pickle_that_would_run_a_shell_command_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"embed.weight": [1.0], "payload": WritesFileWithShell(target)}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load (posix|os|nt)\.system"):
        load_pickle(path)
    with pytest.raises(UnsafeCheckpointError):  # also through the loaders users call
        load_ghn(path)
    assert not target.exists()


def test_a_pickle_that_would_open_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "created-by-open"
    path = tmp_path / "evil.joblib"
    path.write_bytes(pickle.dumps([WritesFileWithOpen(target)], protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load (io|builtins)\.open"):
        load_file(path)
    assert not target.exists()


def test_a_torch_save_archive_with_code_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "created-from-archive"
    path = tmp_path / "evil_archive.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "config": WritesFileWithOpen(target)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(io|builtins)\.open"):
        load_pickle(path)
    with pytest.raises(UnsafeCheckpointError):
        load_file(path)
    assert not target.exists()


def test_the_published_layouts_load(tmp_path: Path) -> None:
    # the real published-layout files are read in test_fixtures.py; these are tiny ones written the same way
    hub_file, ppuda_file = tmp_path / "ghn3tm8.pt", tmp_path / "ghn2.pt"
    hub_file.write_bytes(published_checkpoint(tiny_published_ghn("ghn3"), "ghn3"))  # joblib stream of a state dict
    ppuda_file.write_bytes(published_checkpoint(tiny_published_ghn("ghn2"), "ppuda"))  # torch.save archive
    state_dict = load_pickle(hub_file)
    assert isinstance(state_dict, dict) and all(isinstance(v, torch.Tensor) for v in state_dict.values())
    assert state_dict["embed.weight"].shape[-1] == 16 and "centrality_embed_in.weight" in state_dict
    archive = load_pickle(ppuda_file)
    assert set(archive) >= {"state_dict", "config"}
    assert archive["state_dict"]["decoder.conv.0.weight"].dim() == 4


UNSAFE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("joblib", "load"),
    ("dill", "load"),
    ("cloudpickle", "load"),
}


def _unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        keywords = {k.arg: k.value for k in node.keywords}
        if (owner, node.func.attr) in UNSAFE_LOADERS or (owner, node.func.attr) == ("pickle", "Unpickler"):
            found.append(f"{owner}.{node.func.attr} (line {node.lineno})")
        elif (owner, node.func.attr) == ("torch", "load"):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"torch.load without weights_only=True (line {node.lineno})")
        elif (owner, node.func.attr) == ("np", "load") or (owner, node.func.attr) == ("numpy", "load"):
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(f"numpy.load(allow_pickle=True) (line {node.lineno})")
    return found


def test_no_code_path_unpickles_with_code_execution() -> None:
    offenders = {
        str(path.relative_to(REPO)): calls
        for path in sorted((REPO / "ghn_init").rglob("*.py"))
        if (calls := _unsafe_calls(path.read_text()))
    }
    assert offenders == {}, f"unrestricted unpickling in the package: {offenders}"


def test_the_scanner_sees_unsafe_calls() -> None:
    code = (
        "import pickle, joblib, torch\npickle.load(f)\njoblib.load(p)\ntorch.load(p)\n"
        "torch.load(p, weights_only=True)\n"
    )
    assert len(_unsafe_calls(code)) == 3


def test_an_impossible_bytearray_length_fails_cleanly_without_stray_output(tmp_path: Path) -> None:
    # BYTEARRAY8 claiming 7e18 bytes: CPython's C unpickler raised MemoryError and also printed
    # "SystemError: deallocated bytearray object has exported buffers" to stderr when the half-built
    # bytearray was freed (later, past any except clause), so a CLI error was no longer one line.
    # Whether the stray line appears depends on the allocator's state, so several lengths are tried.
    for i, length in enumerate((7295526309625420344, 1 << 62, (1 << 63) - 1, 10**18, 3 << 60)):
        (tmp_path / f"bytearray{i}.pt").write_bytes(b"\x80\x05\x96" + length.to_bytes(8, "little") + b"x" * (100 + i))
    code = (
        "import sys, pickle, pathlib\n"
        "from ghn_init.hub.safe_pickle import load_pickle\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.pt')) * 4:\n"
        "    try:\n        load_pickle(path)\n"
        "    except pickle.UnpicklingError as e:\n        print(type(e).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", code, str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["UnpicklingError"] * 20, done
    assert done.stderr == "", done.stderr


def test_unsafe_messages_never_advise_unsafe_loading_and_nested_payloads_are_unsafe(tmp_path: Path) -> None:
    # torch's refusal text advises weights_only=False (running the file's code) and spans several lines; a payload
    # nested in torch.storage._load_from_bytes was reported as a truncated or corrupted file.
    import io

    archive = tmp_path / "evil.pt"
    torch.save({"w": WritesFileWithShell(tmp_path / "ran")}, archive)
    inner = io.BytesIO()
    torch.save(WritesFileWithShell(tmp_path / "ran"), inner)

    class Nested:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner.getvalue(),))

    nested = tmp_path / "nested.pkl"
    nested.write_bytes(pickle.dumps({"w": Nested()}, protocol=4))
    for path in (archive, nested):
        for load in (load_pickle, load_ghn):
            with pytest.raises(UnsafeCheckpointError) as e:
                load(path)
            text = str(e.value)
            assert "weights_only" not in text and "\n" not in text, text
            assert "system" in text and str(path) in text and "nothing from the file was run" in text
    assert not (tmp_path / "ran").exists()


class PlainObject:
    """A class torch's weights-only loader does not know: its refusal advises ``add_safe_globals`` for it."""

    def __init__(self) -> None:
        self.x = 1


UNSAFE_ADVICE = ("weights_only", "add_safe_globals", "safe_globals", "allowlist")


def test_no_unsafe_advice_of_torch_reaches_a_message_and_every_nesting_is_unsafe(tmp_path: Path) -> None:
    # torch's "Unsupported global" refusal (zip archives) advises torch.serialization.add_safe_globals, i.e. allowing
    # the refused object; it was passed on word for word. Payloads nested in torch.storage._load_from_bytes in the
    # legacy torch.save format and as a plain pickle are unsafe too, not "corrupted".
    import io

    def nested(data: bytes) -> object:
        class Nested:
            def __reduce__(self):
                return (torch.storage._load_from_bytes, (data,))

        return Nested()

    legacy = io.BytesIO()
    torch.save(WritesFileWithShell(tmp_path / "ran"), legacy, _use_new_zipfile_serialization=False)
    files = {}
    files["archive with an unknown class"] = tmp_path / "class.pt"
    torch.save({"w": PlainObject()}, files["archive with an unknown class"])
    files["archive naming _load_from_bytes"] = tmp_path / "bytes.pt"
    torch.save({"w": nested(legacy.getvalue())}, files["archive naming _load_from_bytes"])
    plain = pickle.dumps(WritesFileWithShell(tmp_path / "ran"), protocol=2)
    for name, data in (("legacy", legacy.getvalue()), ("plain", plain)):
        files[f"nested {name}"] = tmp_path / f"nested-{name}.pkl"
        files[f"nested {name}"].write_bytes(pickle.dumps({"w": nested(data)}, protocol=4))
    named = {
        "archive with an unknown class": "PlainObject",
        "archive naming _load_from_bytes": "torch.storage._load_from_bytes",
        "nested legacy": "system",
        "nested plain": "system",
    }
    for what, path in files.items():
        for load in (load_pickle, load_ghn):
            with pytest.raises(UnsafeCheckpointError) as e:
                load(path)
            text = str(e.value)
            assert not any(advice in text for advice in UNSAFE_ADVICE), (what, text)
            assert "\n" not in text and str(path) in text and named[what] in text, (what, text)
    assert not (tmp_path / "ran").exists()


def test_a_training_checkpoint_with_code_is_refused_in_our_words(tmp_path: Path) -> None:
    # Resuming a run read checkpoint.pt with torch.load(weights_only=True): a refusal carried torch's advice to pass
    # weights_only=False, and was an untyped UnpicklingError (the CLI's "internal error").
    from ghn_init.hub.safe_pickle import load_weights_only

    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "rng": WritesFileWithShell(tmp_path / "ran")}, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_weights_only(path)
    assert not any(advice in str(e.value) for advice in UNSAFE_ADVICE) and "system" in str(e.value)
    assert e.value.path == path and not (tmp_path / "ran").exists()
    torch.save({"step": 1}, path)
    assert load_weights_only(path) == {"step": 1}
