"""Loading GHNs from the Hub, the registry, conversion to safetensors and `verify`, against a local fake Hub.

The fake Hub is a stdlib HTTP server on 127.0.0.1 that answers the file-resolve protocol of
``huggingface_hub.hf_hub_download`` the way huggingface.co does: ``HEAD/GET /{repo}/resolve/{revision}/{file}``
with ``X-Repo-Commit`` and ``ETag``/``Content-Length`` for small git files, and for large (LFS) files a 302
to a CDN host with ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``; 404s carry ``X-Error-Code``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import pytest
import torch
import torchvision

import ghn_init
from ghn_init import cli
from ghn_init.hub import CorruptDownloadError, HubDownloadError, load_ghn
from ghn_init.hub.checkpoints import CheckpointError, load_file
from ghn_init.hub.convert import convert
from ghn_init.hub.download import HubFile, HubFileNotFoundError, parse_hf_url
from ghn_init.hub.registry import GHN3_REPO, REGISTRY
from ghn_init.verify import MODEL_SEED, param_norm, published_norms

from .conftest import REPO, published_checkpoint, tiny_ghn, tiny_published_ghn

LFS_SUFFIXES = (".pt", ".safetensors", ".joblib")


class FakeHub:
    """Files per (repo, revision); records every request so tests can count them."""

    def __init__(self) -> None:
        self.refs: dict[tuple[str, str], str] = {}  # (repo, branch or tag) -> commit
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, commit) -> {filename: content}
        self.served: dict[str, bytes] = {}  # sha256 -> bytes the CDN actually sends (to simulate corruption)
        self.plain: set[tuple[str, str, str]] = set()  # (repo, commit, file) served as git files despite the suffix
        self.requests: list[tuple[str, str]] = []
        self.url = ""
        self.cdn_url = ""

    def add(self, repo: str, filename: str, content: bytes, revision: str = "main", *, lfs: bool = True) -> str:
        """Publish ``content``; returns the commit hash of ``revision``."""
        commit = self.refs.setdefault((repo, revision), hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest())
        self.files.setdefault((repo, commit), {})[filename] = content
        self.served[hashlib.sha256(content).hexdigest()] = content
        if not lfs:
            self.plain.add((repo, commit, filename))
        return commit

    def corrupt(self, content: bytes, sent: bytes) -> None:
        """Make the CDN send ``sent`` for the LFS object of ``content``."""
        self.served[hashlib.sha256(content).hexdigest()] = sent

    def count(self) -> int:
        return len(self.requests)

    # -- request handling ------------------------------------------------------------------------------
    def respond(self, handler: BaseHTTPRequestHandler, with_body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        path = handler.path.split("?")[0]
        if path.startswith("/cdn/"):
            body = self.served.get(path[len("/cdn/") :])
            return self._send(handler, 200 if body else 404, {}, body or b"", with_body)
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"not found", with_body)
        repo, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))
        commits = {c for (r, _), c in self.refs.items() if r == repo}
        if not commits:
            return self._send(handler, 401, {"X-Error-Code": "RepoNotFound"}, b"repository not found", with_body)
        commit = revision if revision in commits else self.refs.get((repo, revision))
        if commit is None:
            return self._send(handler, 404, {"X-Error-Code": "RevisionNotFound"}, b"revision not found", with_body)
        content = self.files[(repo, commit)].get(filename)
        if content is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            return self._send(handler, 404, headers, b"entry not found", with_body)
        is_lfs = filename.endswith(LFS_SUFFIXES) and (repo, commit, filename) not in self.plain
        if is_lfs:
            sha256 = hashlib.sha256(content).hexdigest()
            headers = {
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(content)),
                "ETag": f'"{hashlib.sha1(sha256.encode()).hexdigest()}"',  # the git pointer's id
                "Location": f"{self.cdn_url}/cdn/{sha256}",
            }
            return self._send(handler, 302, headers, b"", with_body)
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        return self._send(handler, 200, {"X-Repo-Commit": commit, "ETag": f'"{git_sha1}"'}, content, with_body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes, with_body: bool) -> None:
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(body)


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread forever

        def do_HEAD(self) -> None:
            hub.respond(self, with_body=False)

        def do_GET(self) -> None:
            hub.respond(self, with_body=True)

        def do_POST(self) -> None:  # a hub that takes uploads (tests/test_push.py) answers them
            post = getattr(hub, "post", None)
            if post is None:
                self.send_error(405)
            else:
                post(self)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    hub.url = f"http://127.0.0.1:{port}"
    hub.cdn_url = f"http://localhost:{port}"  # another host name: like a real CDN, not followed on HEAD
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_hub_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh Hugging Face cache and no loaded GHNs for every test; huggingface_hub reads these at import."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(ghn_init.hub, "_CACHE", {})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    fake = FakeHub()
    with serve(fake):
        monkeypatch.setattr(constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        yield fake


@pytest.fixture(scope="module")
def published_ghn3():
    """The GHN the fake Hub serves as ``ghn3tm8.pt``: tiny, random, in the published GHN-3 file layout."""
    return tiny_published_ghn("ghn3")


@pytest.fixture(scope="module")
def ghn3_t_bytes(published_ghn3) -> bytes:
    return published_checkpoint(published_ghn3, "ghn3")


@pytest.fixture
def ghn3_t_file(tmp_path: Path, ghn3_t_bytes: bytes) -> Path:
    path = tmp_path / "ghn3tm8.pt"
    path.write_bytes(ghn3_t_bytes)
    return path


def predicted_state(ghn, name: str = "squeezenet1_1") -> dict[str, torch.Tensor]:
    torch.manual_seed(MODEL_SEED)
    model = torchvision.models.get_model(name)
    ghn_init.apply(model, ghn)
    return model.state_dict()


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# -- sources and URLs ----------------------------------------------------------------------------------


def test_hf_urls_parse_into_repo_file_and_revision() -> None:
    assert parse_hf_url("hf://SamsungSAILMontreal/ghn3/ghn3tm8.pt") == HubFile(GHN3_REPO, "ghn3tm8.pt", "main")
    assert parse_hf_url("hf://o/r/sub/dir/model.safetensors@v1") == HubFile("o/r", "sub/dir/model.safetensors", "v1")
    assert parse_hf_url("hf://o/r@refs/pr/1") == HubFile("o/r", "model.safetensors", "refs/pr/1")
    for bad in ("hf://only-owner", "hf://o/r/file@", "https://o/r/f"):
        with pytest.raises(ValueError):
            parse_hf_url(bad)


def test_local_only_ghns_say_where_to_download_them() -> None:
    for name in ("ghn2-imagenet", "ghn2-cifar10"):
        entry = REGISTRY[name]
        assert not entry.on_hub and "github.com/facebookresearch/ppuda" in entry.upstream_url
        with pytest.raises(FileNotFoundError, match="pass its path") as err:
            load_ghn(name)
        assert entry.upstream_url in str(err.value)


def test_unknown_source_suggests_the_nearest_registry_name() -> None:
    with pytest.raises(FileNotFoundError, match="Did you mean 'ghn3-t-m8'"):
        load_ghn("ghn3-t-m9")


def test_revision_is_rejected_where_it_cannot_apply(tmp_path: Path) -> None:
    folder = convert(tiny_ghn("ghn3"), tmp_path / "tiny")
    with pytest.raises(ValueError, match="Hub sources only"):
        load_ghn(str(folder), revision="v1")
    with pytest.raises(ValueError, match="names revision 'a'"):
        load_ghn("hf://o/r/f.pt@a", revision="b")


# -- downloading ---------------------------------------------------------------------------------------


def test_cold_download_predicts_like_the_file_on_disk(
    hub: FakeHub, ghn3_t_bytes: bytes, ghn3_t_file: Path, published_ghn3
) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    downloaded = load_ghn("hf://SamsungSAILMontreal/ghn3/ghn3tm8.pt")
    from_disk = load_file(ghn3_t_file)
    assert_same_tensors(downloaded.state_dict(), from_disk.state_dict())
    assert_same_tensors(downloaded.state_dict(), published_ghn3.state_dict())
    assert_same_tensors(predicted_state(downloaded, "resnet18"), predicted_state(from_disk, "resnet18"))
    assert downloaded.config.extra["source"] == "hf://SamsungSAILMontreal/ghn3/ghn3tm8.pt"
    assert ("GET", f"/cdn/{hashlib.sha256(ghn3_t_bytes).hexdigest()}") in hub.requests
    assert load_ghn("ghn3-t-m8") is downloaded  # the registry name resolves to the same file and revision


def test_a_loaded_ghn_is_reused_without_any_request(hub: FakeHub, ghn3_t_bytes: bytes) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    first = load_ghn("ghn3-t-m8")
    before = hub.count()
    assert load_ghn("ghn3-t-m8") is first
    assert hub.count() == before


def test_a_cached_file_at_a_pinned_commit_needs_no_request(hub: FakeHub, ghn3_t_bytes: bytes) -> None:
    commit = hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    load_ghn("ghn3-t-m8", revision=commit)
    ghn_init.hub._CACHE.clear()  # as in a new process: only the disk cache is left
    before = hub.count()
    load_ghn("ghn3-t-m8", revision=commit)
    assert hub.count() == before


def test_offline_mode_uses_the_cache(hub: FakeHub, ghn3_t_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    online = load_ghn("ghn3-t-m8")
    ghn_init.hub._CACHE.clear()
    offline(monkeypatch)
    before = hub.count()
    assert_same_tensors(load_ghn("ghn3-t-m8").state_dict(), online.state_dict())
    assert hub.count() == before
    assert {i.entry.name: i.cached for i in ghn_init.list_ghns()}["ghn3-t-m8"]


def test_offline_without_cache_says_what_is_missing_and_what_to_do(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline(monkeypatch)
    with pytest.raises(HubDownloadError) as err:
        load_ghn("ghn3-xl-m16")
    message = str(err.value)
    for expected in ("ghn3xlm16.pt", GHN3_REPO, "HF_HUB_OFFLINE", "2.5 GB", "bundled", "/path/to/ghn3xlm16.pt"):
        assert expected in message
    assert hub.count() == 0


def test_unreachable_hub_without_cache_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants, file_download

    with serve(FakeHub()) as stopped:
        closed_url = stopped.url  # the port is closed once the server has stopped
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed_url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "ENDPOINT", closed_url)
    monkeypatch.setattr(file_download, "_DEFAULT_RETRY_ON_EXCEPTIONS", ())  # no backoff: keep the test fast
    with pytest.raises(HubDownloadError, match="could not be reached") as err:
        load_ghn("ghn3-t-m8")
    assert "ghn3tm8.pt" in str(err.value) and "bundled" in str(err.value)


def test_missing_file_and_revision_are_named(hub: FakeHub, ghn3_t_bytes: bytes) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    with pytest.raises(
        HubFileNotFoundError, match="'ghn3xlm16.pt' from the Hub repo 'SamsungSAILMontreal/ghn3' \\(revision 'main'\\)"
    ):
        load_ghn("ghn3-xl-m16")
    with pytest.raises(HubDownloadError, match="revision 'v9' does not exist"):
        load_ghn("ghn3-t-m8", revision="v9")
    with pytest.raises(HubDownloadError, match="was not found .* or needs authorization"):
        load_ghn("hf://nobody/nothing/ghn.pt")


def test_corrupted_download_is_removed_and_fetched_again(hub: FakeHub, ghn3_t_bytes: bytes, published_ghn3) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    flipped = bytearray(ghn3_t_bytes)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, so only the sha256 can tell
    hub.corrupt(ghn3_t_bytes, bytes(flipped))
    with pytest.raises(CorruptDownloadError, match="ghn3tm8.pt.*removed from the cache"):
        load_ghn("ghn3-t-m8")
    assert ghn_init.hub.registry.cached_path(REGISTRY["ghn3-t-m8"]) is None
    hub.corrupt(ghn3_t_bytes, ghn3_t_bytes)
    assert_same_tensors(load_ghn("ghn3-t-m8").state_dict(), published_ghn3.state_dict())


def test_truncated_file_is_removed_and_fetched_again(hub: FakeHub, ghn3_t_bytes: bytes) -> None:
    # A mirror serving a consistently truncated file as a plain git file: sizes agree, only loading fails.
    hub.add("mirror/ghn3", "ghn3tm8.pt", ghn3_t_bytes[: len(ghn3_t_bytes) // 3], lfs=False)
    with pytest.raises(CheckpointError, match="'ghn3tm8.pt' from the Hub repo 'mirror/ghn3'.*cached copy was removed"):
        load_ghn("hf://mirror/ghn3/ghn3tm8.pt")
    hub.add("mirror/ghn3", "ghn3tm8.pt", ghn3_t_bytes, lfs=False)
    assert load_ghn("hf://mirror/ghn3/ghn3tm8.pt").config.hid == 16


def test_incomplete_transfer_is_not_cached(hub: FakeHub, ghn3_t_bytes: bytes) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    hub.corrupt(ghn3_t_bytes, ghn3_t_bytes[:1000])  # fewer bytes than the Hub announced
    with pytest.raises(HubDownloadError, match="ghn3tm8.pt"):
        load_ghn("ghn3-t-m8")
    hub.corrupt(ghn3_t_bytes, ghn3_t_bytes)
    assert load_ghn("ghn3-t-m8").config.layers == 1


def test_revisions_serve_their_own_weights(hub: FakeHub, tmp_path: Path) -> None:
    versions = {"v1": tiny_ghn("ghn3", seed=1), "v2": tiny_ghn("ghn3", seed=2)}
    for revision, ghn in versions.items():
        folder = convert(ghn, tmp_path / revision)
        for name in ("model.safetensors", "config.json"):
            hub.add("ghn-init/tiny", name, (folder / name).read_bytes(), revision=revision)
    for revision, ghn in versions.items():
        loaded = load_ghn("hf://ghn-init/tiny", revision=revision)
        assert_same_tensors(loaded.state_dict(), ghn.state_dict())
        assert loaded.config.hid == 16  # from config.json, next to the weights in the same snapshot
    assert load_ghn("hf://ghn-init/tiny@v1") is load_ghn("hf://ghn-init/tiny", revision="v1")


# -- converting ----------------------------------------------------------------------------------------


def test_convert_round_trip_keeps_weights_and_predictions(tmp_path: Path, ghn3_t_file: Path) -> None:
    pickled = load_file(ghn3_t_file)
    folder = convert(ghn3_t_file, tmp_path / "ghn3-t")
    converted = load_ghn(folder)
    assert_same_tensors(converted.state_dict(), pickled.state_dict())
    assert converted.config.to_dict() | {"extra": {}} == pickled.config.to_dict() | {"extra": {}}
    assert_same_tensors(predicted_state(converted), predicted_state(pickled))

    ghn2_file = tmp_path / "ghn2.pt"
    ghn2_file.write_bytes(published_checkpoint(tiny_published_ghn("ghn2"), "ppuda"))
    ghn2 = load_file(ghn2_file)
    assert ghn2.is_ghn2 and ghn2.config.hid == 16
    ghn2_converted = load_ghn(convert(ghn2_file, tmp_path / "ghn2"))
    assert_same_tensors(ghn2_converted.state_dict(), ghn2.state_dict())
    assert ghn2_converted.config.to_dict() | {"extra": {}} == ghn2.config.to_dict() | {"extra": {}}


def test_convert_command_writes_weights_config_and_card(hub: FakeHub, ghn3_t_bytes: bytes, tmp_path: Path) -> None:
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    assert cli.main(["convert", "ghn3-t-m8", str(tmp_path / "out"), "--repo-id", "me/ghn3-t-m8"]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["format_version"] == 1 and config["source"] == "hf://SamsungSAILMontreal/ghn3/ghn3tm8.pt"
    assert config["ghn"]["hid"] == 16 and config["ghn"]["max_shape"] == [16, 16, 11, 11]
    card = (tmp_path / "out" / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert "license: mit" in front_matter and "library_name: ghn-init" in front_matter and "tags:" in front_matter
    assert 'ghn="hf://me/ghn3-t-m8"' in card and "arxiv.org/abs/2303.04143" in card
    assert str(tmp_path) not in card + json.dumps(config)  # no local paths in what gets published


# -- registry listing and verify -----------------------------------------------------------------------


def test_list_shows_what_is_cached(hub: FakeHub, ghn3_t_bytes: bytes, capsys: pytest.CaptureFixture) -> None:
    assert not any(info.cached for info in ghn_init.list_ghns())
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    load_ghn("ghn3-t-m8")
    cached = {info.entry.name for info in ghn_init.list_ghns() if info.cached}
    assert cached == {"ghn3-t-m8"}
    assert cli.main(["list", "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["ghn3-t-m8"]["cached"] and not listed["ghn3-xl-m16"]["cached"]
    assert listed["ghn3-xl-m16"]["results_key"] == "ghn3" and listed["ghn2-imagenet"]["repo_id"] is None


def test_verify_compares_with_the_figures_served_next_to_the_checkpoint(
    hub: FakeHub, ghn3_t_bytes: bytes, published_ghn3, capsys: pytest.CaptureFixture
) -> None:
    reference = published_ghn3
    norms = {}
    for name in ("squeezenet1_1", "squeezenet1_0"):
        torch.manual_seed(MODEL_SEED)
        model = torchvision.models.get_model(name)
        ghn_init.apply(model, reference)
        norms[name] = param_norm(model)
    figures = {  # as published: 4 decimals; squeezenet1_0's figure is off by 0.5 so that one row must fail
        "squeezenet1_1": {"ghn3-t-paramnorm": f"{norms['squeezenet1_1']:.4f}", "ghn3-paramnorm": "1.0"},
        "squeezenet1_0": {"ghn3-t-paramnorm": f"{norms['squeezenet1_0'] + 0.5:.4f}"},
    }
    hub.add(GHN3_REPO, "ghn3tm8.pt", ghn3_t_bytes)
    hub.add(GHN3_REPO, "ghn3_results.jsonl", "".join(json.dumps({k: v}) + "\n" for k, v in figures.items()).encode())

    assert cli.main(["verify", "--ghn", "ghn3-t-m8", "--models", "squeezenet1_1", "squeezenet1_0"]) == 1
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["squeezenet1_1"][-1] == "yes" and rows["squeezenet1_0"][-1] == "NO"
    assert float(rows["squeezenet1_1"][2]) == float(figures["squeezenet1_1"]["ghn3-t-paramnorm"])
    assert float(rows["squeezenet1_0"][3]) == pytest.approx(-0.5, abs=1e-3)
    assert "1/2 within 0.01" in " ".join(" ".join(r) for r in rows.values())


def test_published_figures_fall_back_to_the_name_the_ghn3_code_uses(hub: FakeHub) -> None:
    hub.add(GHN3_REPO, "ghn3_results.json", b'{"resnet50": {"ghn3-paramnorm": "70.25", "ghn3-t-paramnorm": "1"}}\n')
    assert published_norms("ghn3") == {"resnet50": 70.25}


def test_verify_offline_without_cache_fails_with_a_clear_message(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    offline(monkeypatch)
    assert cli.main(["verify", "--ghn", "ghn3-t-m8"]) == 2
    err = capsys.readouterr().err
    assert "ghn3_results.json" in err and "HF_HUB_OFFLINE" in err and hub.count() == 0


def test_verify_refuses_ghns_without_published_figures(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["verify", "--ghn", "ghn3-s-m8"]) == 2
    assert "published no parameter norms for ghn3-s-m8" in capsys.readouterr().err


# -- publishing ----------------------------------------------------------------------------------------


def upload_script():
    spec = importlib.util.spec_from_file_location("hub_upload", REPO / "hub" / "upload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_upload_dry_run_checks_the_folder_against_its_template(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    upload = upload_script()
    torch.manual_seed(0)
    ghn3_t_layout = ghn_init.GHN(ghn_init.GHNConfig())  # the defaults are GHN-3-T/m8's config, as in its template
    folder = convert(ghn3_t_layout, tmp_path / "ghn3-t-m8")
    assert upload.main([str(folder), "--repo-id", "me/ghn3-t-m8", "--name", "ghn3-t-m8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload to me/ghn3-t-m8" in out and "dry run: nothing was uploaded" in out
    assert all(name in out for name in ("model.safetensors", "config.json", "README.md"))
    card = upload.prepare(folder, "me/ghn3-t-m8", "ghn3-t-m8")["README.md"].decode()
    assert 'ghn="hf://me/ghn3-t-m8"' in card and "OWNER/REPO" not in card

    tiny = convert(tiny_ghn("ghn3"), tmp_path / "tiny")
    assert upload.main([str(tiny), "--repo-id", "me/x", "--name", "ghn3-t-m8", "--dry-run"]) == 1
    assert "hid: converted 16, template 64" in capsys.readouterr().err


def test_every_published_template_is_a_valid_partial_config() -> None:
    upload = upload_script()
    for name in upload.PUBLISHED:
        folder = REPO / "hub" / name
        if name == "bundled":
            continue  # written by whoever trains the bundled GHN
        template = json.loads((folder / "config.json").read_text())
        known = {k: v for k, v in template["ghn"].items() if v is not None}
        assert set(template["ghn"]) <= set(ghn_init.GHNConfig.__dataclass_fields__), name
        assert set(known) - {"extra"} <= set(template["provenance"]), name
        assert REGISTRY[name].hf_url in template["source"]
        card = (folder / "README.md").read_text()
        assert card.startswith("---\nlicense: mit\nlibrary_name: ghn-init\n"), name


# -- huggingface_hub options passed through (issue 11); a tiny GHN of our own, no fixtures needed ------------


@pytest.fixture
def tiny_repo(hub: FakeHub, tmp_path: Path) -> str:
    """``hf://me/tiny``: a safetensors GHN with its config.json, as ``ghn-init convert`` uploads it."""
    folder = ghn_init.hub.checkpoints.save_folder(tiny_ghn("ghn3"), tmp_path / "tiny-src")
    hub.add("me/tiny", "model.safetensors", (folder / "model.safetensors").read_bytes())
    hub.add("me/tiny", "config.json", (folder / "config.json").read_bytes(), lfs=False)
    return "hf://me/tiny"


def test_cache_dir_puts_the_download_there(tiny_repo: str, tmp_path: Path) -> None:
    cache = tmp_path / "my_cache"
    ghn = load_ghn(tiny_repo, cache_dir=cache)
    assert ghn.config.hid == 16
    names = {p.name for p in cache.rglob("*")}
    assert "model.safetensors" in names and "config.json" in names
    assert not (tmp_path / "hf_cache").exists() or not any((tmp_path / "hf_cache").rglob("model.safetensors"))


def test_local_files_only_never_downloads(tiny_repo: str, hub: FakeHub, tmp_path: Path) -> None:
    before = hub.count()
    with pytest.raises(HubDownloadError, match="local_files_only=True"):
        load_ghn(tiny_repo, local_files_only=True)
    assert hub.count() == before
    load_ghn(tiny_repo, cache_dir=tmp_path / "c")
    ghn_init.hub._CACHE.clear()  # as in a new process
    before = hub.count()
    assert load_ghn(tiny_repo, cache_dir=tmp_path / "c", local_files_only=True).config.hid == 16
    assert hub.count() == before


def test_token_is_passed_to_huggingface_hub(tiny_repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    seen = []
    real = huggingface_hub.hf_hub_download

    def spy(*args, **kwargs):
        seen.append(kwargs.get("token"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    load_ghn(tiny_repo, token="hf_test_token")
    assert seen and all(t == "hf_test_token" for t in seen)


def test_sha256_checks_hub_files(tiny_repo: str, hub: FakeHub) -> None:
    with pytest.raises(CheckpointError, match="not the expected"):
        load_ghn(tiny_repo, sha256="0" * 64)
    content = hub.files[("me/tiny", hub.refs[("me/tiny", "main")])]["model.safetensors"]
    assert load_ghn(tiny_repo, sha256=hashlib.sha256(content).hexdigest()).config.hid == 16


def test_a_loaded_ghn_is_checked_against_sha256_without_any_request(
    tiny_repo: str, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sha256= on a GHN already loaded hashes the file it was read from: it used to call hf_hub_download again
    (a request each time; an error offline or with the Hub down although the GHN was loaded)."""
    import huggingface_hub

    content = hub.files[("me/tiny", hub.refs[("me/tiny", "main")])]["model.safetensors"]
    digest = hashlib.sha256(content).hexdigest()
    first = load_ghn(tiny_repo)
    before = hub.count()
    assert load_ghn(tiny_repo, sha256=digest) is first
    assert hub.count() == before

    def no_download(*args, **kwargs):
        raise AssertionError("hf_hub_download called for a GHN already loaded and checked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    offline(monkeypatch)
    assert load_ghn(tiny_repo, sha256=digest.upper()) is first
    assert hub.count() == before


def test_a_bad_config_on_the_hub_names_its_field_and_keeps_the_weights(hub: FakeHub, tmp_path: Path) -> None:
    """A ConfigError from the config.json beside Hub weights stays a ConfigError (with .field), and the good
    weights stay cached (they were evicted, so every retry downloaded them again)."""
    folder = ghn_init.hub.checkpoints.save_folder(tiny_ghn("ghn3"), tmp_path / "src")
    config = json.loads((folder / "config.json").read_text())
    config["ghn"]["layernorm"] = "false"
    hub.add("me/badcfg", "model.safetensors", (folder / "model.safetensors").read_bytes())
    hub.add("me/badcfg", "config.json", json.dumps(config).encode(), lfs=False)
    with pytest.raises(ghn_init.ConfigError) as info:
        load_ghn("hf://me/badcfg")
    assert info.value.field == "layernorm"
    assert any(p.name == "model.safetensors" and p.exists() for p in (tmp_path / "hf_cache").rglob("*"))


def test_verify_compares_raw_predictions_whatever_the_ghn_recommends(hub: FakeHub) -> None:
    """The published norms are of raw predictions: a GHN whose config recommends post-processing is verified
    without it."""
    from ghn_init.verify import verify

    ghn = tiny_ghn("ghn3")
    ghn.config.postprocess = "orth+nohead"
    torch.manual_seed(MODEL_SEED)
    model = torchvision.models.get_model("squeezenet1_1")
    ghn_init.apply(model, ghn, postprocess="none")
    line = {"squeezenet1_1": {"ghn3-t-paramnorm": f"{param_norm(model):.4f}"}}
    hub.add(GHN3_REPO, "ghn3_results.jsonl", (json.dumps(line) + "\n").encode())
    (row,) = verify(ghn, ["squeezenet1_1"], results_key="ghn3-t")
    assert row.ok()
