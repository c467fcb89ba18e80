"""``ghn_init.push_to_hub`` and ``ghn-init push`` against a local fake Hub.

The fake Hub extends the download fake of ``test_hub.py`` (``/resolve/``, so a pushed GHN can be loaded back)
with the upload protocol ``huggingface_hub`` speaks (read off its ``hf_api.py`` and ``_commit_api.py``):
``POST /api/repos/create``, ``POST /api/validate-yaml`` (the card's metadata), ``POST
/api/models/{repo}/branch/{branch}``, ``POST /api/models/{repo}/preupload/{revision}`` (answered
``uploadMode: "regular"`` for every file, so no LFS or Xet transfer happens and the file bytes travel inside the
commit) and ``POST /api/models/{repo}/commit/{revision}``, whose ndjson body carries each file base64-encoded.
"""

from __future__ import annotations

import base64
import json
import shlex
import socket
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, unquote

import pytest
import torch

import ghn_init
from ghn_init import cli
from ghn_init.hub.card import make_card, save_card
from ghn_init.hub.checkpoints import save_folder
from ghn_init.hub.convert import convert

from .conftest import tiny_ghn
from .test_hub import LFS_SUFFIXES, FakeHub, serve
from .test_train import TINY

TOKEN = "hf_pushTestTokenThatMustNeverBeShown"
GHN_FILES = {"model.safetensors", "config.json", "README.md"}


class PushHub(FakeHub):
    """The download fake plus the upload endpoints; records every request, commit and Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[dict] = []  # JSON bodies of /api/repos/create
        self.branches: list[tuple[str, str]] = []  # (repo, branch) created
        self.commits: list[dict] = []  # {"repo", "revision", "create_pr", "header", "files": {path: bytes}}
        self.auth: list[Optional[str]] = []
        self.refuse: Optional[int] = None  # answer every POST with this status (401, 403)
        self.card_errors: list[str] = []  # what /api/validate-yaml finds wrong in the card (answered with a 400)

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append(("POST", handler.path))
        self.auth.append(handler.headers.get("Authorization"))
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        path, _, query = handler.path.partition("?")
        params = parse_qs(query)
        if self.refuse is not None:
            error = {"error": "Invalid credentials in Authorization header"}
            return self._json(handler, self.refuse, error, {"X-Error-Message": error["error"]})
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["api", "repos", "create"]:
            payload = json.loads(body)
            self.created.append(payload)
            return self._json(handler, 200, {"url": f"{self.url}/{payload['organization']}/{payload['name']}"})
        if parts == ["api", "validate-yaml"]:
            errors = [{"message": m} for m in self.card_errors]
            return self._json(handler, 400 if errors else 200, {"errors": errors, "warnings": []})
        if len(parts) >= 6 and parts[:2] == ["api", "models"]:
            repo, action, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if action == "branch":
                self.branches.append((repo, revision))
                return self._json(handler, 200, {})
            if action == "preupload":
                files = json.loads(body)["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._json(handler, 200, {"files": answer})
            if action == "commit":
                return self._commit(handler, repo, revision, body, create_pr="create_pr" in params)
        return self._json(handler, 404, {"error": "not found"}, {"X-Error-Code": "RepoNotFound"})

    def _commit(self, handler: BaseHTTPRequestHandler, repo: str, revision: str, body: bytes, create_pr: bool) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = {}
        for line in lines[1:]:
            assert line["key"] == "file" and line["value"]["encoding"] == "base64", line  # regular files only
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        self.commits.append(
            {"repo": repo, "revision": revision, "create_pr": create_pr, "header": lines[0]["value"], "files": files}
        )
        target = "refs/pr/1" if create_pr else revision
        commit = ""
        for name, content in files.items():
            commit = self.add(repo, name, content, target, lfs=name.endswith(LFS_SUFFIXES))
        answer = {
            "commitUrl": f"{self.url}/{repo}/commit/{commit}",
            "commitOid": commit,
            "pullRequestUrl": f"{self.url}/{repo}/discussions/1" if create_pr else None,
        }
        return self._json(handler, 200, answer)

    def _json(self, handler: BaseHTTPRequestHandler, status: int, doc: dict, headers: Optional[dict] = None) -> None:
        self._send(handler, status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode(),
                   True)


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """``HF_ENDPOINT=url``, also in huggingface_hub's constants (it reads the variable once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture(autouse=True)
def isolated_hub_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh cache, no loaded GHNs, and no token from this machine (only what a test sets)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(ghn_init.hub, "_CACHE", {})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[PushHub]:
    fake = PushHub()
    with serve(fake):
        point_at(monkeypatch, fake.url)
        yield fake


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``ghn_init.train`` run (one step, tiny, about 1 s): OUT/checkpoint.pt, OUT/metrics.jsonl, OUT/ghn."""
    from ghn_init.train import TrainConfig, train

    out = tmp_path_factory.mktemp("push") / "run"
    train(TrainConfig(output=str(out), **{**TINY, "steps": 1, "warmup_steps": 0}))
    return out


def trained_folder(path: Path) -> Path:
    """A folder laid out as ``ghn-init train OUT`` exports OUT/ghn (weights, config with a training record, card),
    with a stray training checkpoint and log next to it that must not be published."""
    save_folder(tiny_ghn("ghn3"), path, training={"steps": 3, "seed": 0})
    save_card(make_card("# GHN-3 trained with ghn-init\n\nA tiny test GHN.\n", license="other"), path)
    (path / "checkpoint.pt").write_bytes(b"not for the Hub")
    (path / "metrics.jsonl").write_text('{"step": 1}\n')
    return path


def made_private(create_request: dict) -> bool:
    """Whether a create-repo request asks for a private repo (``visibility`` since huggingface_hub 1.x, ``private``
    before)."""
    return create_request.get("visibility") == "private" or create_request.get("private") is True


def one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text, text
    return text


# -- publishing ------------------------------------------------------------------------------------------------


def test_push_uploads_exactly_the_ghn_files_and_they_load_back(hub: PushHub, tmp_path: Path) -> None:
    folder = trained_folder(tmp_path / "ghn")
    info = ghn_init.push_to_hub(folder, "me/my-ghn", token=TOKEN)

    assert hub.created == [{"name": "my-ghn", "organization": "me", "type": "model"}]
    (commit,) = hub.commits
    assert commit["repo"] == "me/my-ghn" and commit["revision"] == "main" and not commit["create_pr"]
    assert commit["header"]["summary"] == "Upload GHN with ghn-init"
    assert set(commit["files"]) == GHN_FILES
    for name in GHN_FILES:
        assert commit["files"][name] == (folder / name).read_bytes(), name
    assert info.commit_url == f"{hub.url}/me/my-ghn/commit/{info.oid}" and info.oid
    assert set(hub.auth) == {f"Bearer {TOKEN}"}

    pushed = ghn_init.load_ghn("hf://me/my-ghn")
    expected = tiny_ghn("ghn3").state_dict()
    assert pushed.state_dict().keys() == expected.keys()
    assert all(torch.equal(pushed.state_dict()[k], v) for k, v in expected.items())


def test_push_publishes_what_training_exported(hub: PushHub, training_run: Path) -> None:
    folder = training_run / "ghn"
    assert (training_run / "checkpoint.pt").exists() and set(p.name for p in folder.iterdir()) == GHN_FILES
    ghn_init.push_to_hub(folder, "me/trained", token=TOKEN)
    (commit,) = hub.commits
    assert commit["files"] == {name: (folder / name).read_bytes() for name in GHN_FILES}
    pushed, local = ghn_init.load_ghn("hf://me/trained"), ghn_init.load_ghn(folder)
    without_extra = lambda ghn: {k: v for k, v in ghn.config.to_dict().items() if k != "extra"}  # noqa: E731
    assert without_extra(pushed) == without_extra(local)
    assert all(torch.equal(pushed.state_dict()[k], v) for k, v in local.state_dict().items())


def test_push_takes_the_token_from_hf_token_and_passes_the_options(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = trained_folder(tmp_path / "ghn")
    info = ghn_init.push_to_hub(folder, "org/ghn", revision="v1", private=True, commit_message="first GHN")
    assert hub.created[0]["organization"] == "org" and made_private(hub.created[0])
    assert hub.branches == [("org/ghn", "v1")]
    (commit,) = hub.commits
    assert commit["revision"] == "v1" and commit["header"]["summary"] == "first GHN"
    assert info.pr_url is None and set(hub.auth) == {f"Bearer {TOKEN}"}
    assert ghn_init.load_ghn("hf://org/ghn@v1").config.hid == 16


def test_create_pr_opens_a_pull_request(hub: PushHub, tmp_path: Path) -> None:
    info = ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x", token=TOKEN, create_pr=True)
    assert hub.commits[0]["create_pr"] and info.pr_url == f"{hub.url}/me/x/discussions/1"
    assert hub.branches == []


def test_a_converted_card_gets_the_repo_id_in_the_uploaded_copy(hub: PushHub, tmp_path: Path) -> None:
    folder = convert(tiny_ghn("ghn3"), tmp_path / "converted")
    local_card = (folder / "README.md").read_text()
    assert "hf://OWNER/REPO" in local_card
    ghn_init.push_to_hub(folder, "me/converted", token=TOKEN)
    uploaded = hub.commits[0]["files"]["README.md"].decode()
    assert uploaded == local_card.replace("hf://OWNER/REPO", "hf://me/converted")
    assert (folder / "README.md").read_text() == local_card  # the local card is not changed


# -- refused before any request ----------------------------------------------------------------------------------


def _truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _bad_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["ghn"]["hid"] = "sixteen"
    (folder / "config.json").write_text(json.dumps(config))


def _replace_by_a_file(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.write_text("x")


FOLDER_DEFECTS = {
    "missing folder": (lambda f: f.rename(f.with_name("gone")), ghn_init.CheckpointNotFoundError, "does not exist"),
    "a file": (_replace_by_a_file, ghn_init.CheckpointError, "not a folder"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), ghn_init.CheckpointNotFoundError,
                   "has no model.safetensors"),
    "no config": (lambda f: (f / "config.json").unlink(), ghn_init.CheckpointNotFoundError, "has no config.json"),
    "no card": (lambda f: (f / "README.md").unlink(), ghn_init.CheckpointNotFoundError, "make_card"),
    "truncated weights": (_truncate, ghn_init.CheckpointError, "does not load as a GHN"),
    "bad config": (_bad_config, ghn_init.ConfigError, "hid"),
}


@pytest.mark.parametrize("defect", FOLDER_DEFECTS)
def test_a_bad_folder_is_refused_before_any_request(hub: PushHub, tmp_path: Path, defect: str) -> None:
    folder = trained_folder(tmp_path / "ghn")
    damage, error, words = FOLDER_DEFECTS[defect]
    damage(folder)
    with pytest.raises(error) as info:
        ghn_init.push_to_hub(folder, "me/x", token=TOKEN)
    assert words in one_line(info.value)
    assert hub.count() == 0


def test_the_run_folder_instead_of_its_ghn_folder_points_to_it(hub: PushHub, training_run: Path) -> None:
    with pytest.raises(ghn_init.CheckpointNotFoundError) as info:
        ghn_init.push_to_hub(training_run, "me/x", token=TOKEN)
    assert f"{training_run / 'ghn'} has one: pass that folder" in one_line(info.value)
    assert hub.count() == 0


BAD_ARGUMENTS = [
    ({"repo_id": "my-ghn"}, "repo_id"),
    ({"repo_id": "me/x/y"}, "repo_id"),
    ({"repo_id": "me/a..b"}, "repo_id"),
    ({"repo_id": "-me/x"}, "repo_id"),
    ({"repo_id": "me/x "}, "repo_id"),
    ({"repo_id": ""}, "repo_id"),
    ({"repo_id": None}, "repo_id"),
    ({"folder": 123}, "folder"),
    ({"folder": ""}, "folder"),
    ({"revision": ""}, "revision"),
    ({"private": "no"}, "private"),
    ({"create_pr": "yes"}, "create_pr"),
    ({"commit_message": ""}, "commit_message"),
    ({"token": 123}, "token"),
    ({"token": ""}, "token"),
]


@pytest.mark.parametrize("bad, argument", BAD_ARGUMENTS)
def test_a_bad_argument_is_refused_before_any_request(hub: PushHub, tmp_path: Path, bad: dict, argument: str) -> None:
    arguments = {"folder": trained_folder(tmp_path / "ghn"), "repo_id": "me/x", "token": TOKEN, **bad}
    with pytest.raises(ghn_init.InvalidArgumentError) as info:
        ghn_init.push_to_hub(arguments.pop("folder"), arguments.pop("repo_id"), **arguments)
    assert info.value.argument == argument and argument in one_line(info.value)
    assert hub.count() == 0


# -- authentication and network --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_a_typed_one_line_error_without_the_token(
    hub: PushHub, tmp_path: Path, status: int
) -> None:
    hub.refuse = status
    with pytest.raises(ghn_init.HubUploadError) as info:
        ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x", token=TOKEN)
    text = one_line(info.value)
    assert info.value.status == status and info.value.repo_id == "me/x" and isinstance(info.value, OSError)
    assert f"HTTP {status}" in text and "hf auth login" in text and "token=" in text and "'me'" in text
    assert TOKEN not in text and TOKEN not in repr(info.value.args) and info.value.__cause__ is None
    assert hub.commits == [] and hub.count() >= 1


def test_no_token_is_refused_before_any_request(hub: PushHub, tmp_path: Path) -> None:
    with pytest.raises(ghn_init.HubUploadError) as info:
        ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x")
    text = one_line(info.value)
    assert "no Hugging Face token" in text and "hf auth login" in text and "HF_TOKEN" in text
    assert hub.count() == 0


def test_offline_mode_is_refused_before_any_request(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ghn_init.HubUploadError, match="HF_HUB_OFFLINE"):
        ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x", token=TOKEN)
    assert hub.count() == 0


def test_a_card_the_hub_rejects_is_a_typed_one_line_error(hub: PushHub, tmp_path: Path) -> None:
    hub.card_errors = ["\"license\" must be one of [apache-2.0, mit, other, ...]"]
    with pytest.raises(ghn_init.HubUploadError) as info:
        ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x", token=TOKEN)
    text = one_line(info.value)
    assert "refused the model card of 'me/x'" in text and '"license" must be one of' in text and "YAML" in text
    assert hub.commits == []


def test_an_unreachable_hub_is_a_typed_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_at(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(ghn_init.HubUploadError) as info:
        ghn_init.push_to_hub(trained_folder(tmp_path / "ghn"), "me/x", token=TOKEN)
    text = one_line(info.value)
    assert "could not reach the Hub" in text and "HF_ENDPOINT" in text and TOKEN not in text
    assert info.value.status is None


# -- command line ----------------------------------------------------------------------------------------------


def test_cli_push_uploads_and_prints_the_commit(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = trained_folder(tmp_path / "ghn")
    code = cli.main(["push", str(folder), "me/cli-ghn", "--private", "--commit-message", "from the CLI"])
    out = capsys.readouterr().out
    assert code == 0
    (commit,) = hub.commits
    assert set(commit["files"]) == GHN_FILES and commit["header"]["summary"] == "from the CLI"
    assert made_private(hub.created[0])
    assert f"{hub.url}/me/cli-ghn/commit/" in out and "hf://me/cli-ghn" in out and TOKEN not in out


def test_convert_ends_with_the_push_command_and_it_works(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["convert", "bundled", str(tmp_path / "conv")]) == 0
    command = capsys.readouterr().out.split("publish it with `")[1].split("`")[0]
    assert command == f"ghn-init push {tmp_path / 'conv'} OWNER/REPO"
    assert cli.main(shlex.split(command.replace("OWNER/REPO", "me/bundled"))[1:]) == 0
    assert "hf://me/bundled" in hub.commits[0]["files"]["README.md"].decode()


def test_cli_push_a_bad_folder_exits_2_with_one_line(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "empty"
    folder.mkdir()
    assert cli.main(["push", str(folder), "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ghn-init push: error:") and "has no model.safetensors" in err
    assert cli.main(["push", str(trained_folder(tmp_path / "ghn")), "not-a-repo-id"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument REPO_ID: repo_id must be 'owner/name'" in err
    assert hub.count() == 0


def test_cli_push_a_refused_token_exits_2_without_the_token(
    hub: PushHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.refuse = 401
    assert cli.main(["push", str(trained_folder(tmp_path / "ghn")), "me/x"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "hf auth login" in captured.err
    assert TOKEN not in captured.err + captured.out


def test_cli_push_help_states_every_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["push", "--help"])
    parser = cli.make_parser()
    (sub,) = [a for a in parser._subparsers._group_actions]
    push = sub.choices["push"]
    for action in push._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.dest
    assert "--create-pr" in capsys.readouterr().out
