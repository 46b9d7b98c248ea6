"""The jupyter_server endpoint, against a real ``jupyter server`` process: auth, JSON, paths, store URL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nbcheckpoint.frontend.server import notebook_file
from nbcheckpoint.store import CheckpointStore, NotebookRef

pytestmark = pytest.mark.integration

TOKEN = "nbcheckpoint-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    root: Path
    key_file: Path
    log: Path

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, object]:
        return self.fetch(f"checkpoints?path={urllib.request.quote(path)}", token)

    def fetch(self, route: str, token: str | None = TOKEN) -> tuple[int, object]:
        """``GET /nbcheckpoint/api/<route>``: the status and the JSON body (or its text)."""
        headers = {"Authorization": f"token {token}"} if token else {}
        request = urllib.request.Request(f"{self.url}/nbcheckpoint/api/{route}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode(errors="replace")


def _start(tmp: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    root = tmp / "root"
    (root / "sub").mkdir(parents=True)
    key_file = tmp / "key" / "signing.key"
    for name in ("config", "data", "runtime"):
        (tmp / name).mkdir()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "NBCHECKPOINT_KEY_FILE": str(key_file),
        **extra_env,
    }
    if "NBCHECKPOINT_STORE" not in extra_env:
        env.pop("NBCHECKPOINT_STORE", None)
    port = _free_port()
    log = tmp / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        # Enabled explicitly: the test must not depend on how the package was installed.
        '--ServerApp.jpserver_extensions={"nbcheckpoint.frontend": True}',
        "--allow-root",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter server did not answer:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield Server(url, root, key_file, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _start(tmp_path_factory.mktemp("server"), {})


@pytest.fixture(scope="module")
def env_store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server-env")
    yield from _start(tmp, {"NBCHECKPOINT_STORE": str(tmp / "elsewhere")})


def _save_two(
    store_url: str, notebook: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkpoints, written by this process with the server's signing key."""
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(key_file))
    store = CheckpointStore(store_url)
    nb = NotebookRef.from_path(str(notebook))
    store.save({"x": 1}, nb, ["x"], status="manual")
    store.save(
        {"x": 2, "y": list(range(1000))},
        nb,
        ["x", "y"],
        status="running",
        cell={
            "source_hash": "0" * 64,
            "execution_count": 5,
            "first_line": "for epoch in range(100):",
        },
        position={"description": "for epoch at 57/100", "counters": [56], "lengths": [100]},
    )


def test_no_token_is_refused(server: Server) -> None:
    status, _ = server.get("nb.ipynb", token=None)
    assert status in (401, 403)


def test_wrong_token_is_refused(server: Server) -> None:
    status, _ = server.get("nb.ipynb", token="not-the-token")
    assert status in (401, 403)


def test_lists_nothing_for_a_notebook_without_checkpoints(server: Server) -> None:
    status, body = server.get("nothing-here.ipynb")
    assert (status, body) == (200, [])
    assert not (server.root / ".nbcheckpoint").exists(), "listing must not create a store"


def test_lists_checkpoints_from_the_store_beside_the_notebook(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = server.root / "sub" / "train.ipynb"
    _save_two(str(notebook.parent / ".nbcheckpoint"), notebook, server.key_file, monkeypatch)
    status, body = server.get("sub/train.ipynb")
    assert status == 200, body
    assert isinstance(body, list)
    assert [c["id"] for c in body] == [1, 2]
    latest = body[-1]
    assert latest["status"] == "running"
    assert latest["position"] == "for epoch at 57/100"
    assert latest["cell"] == {
        "execution_count": 5,
        "first_line": "for epoch in range(100):",
        "cell_id": None,
    }
    assert latest["variables"] == 2
    assert latest["size"] > 0
    assert latest["verified"] is True
    assert 0 <= latest["age"] < 120
    assert abs(latest["created"] - time.time()) < 120
    # Another notebook in the same folder has its own (empty) list.
    assert server.get("sub/other.ipynb") == (200, [])


@pytest.mark.parametrize("path", ["", "../outside.ipynb", "sub/../../x.ipynb", "/../x.ipynb"])
def test_paths_outside_the_root_are_refused(server: Server, path: str) -> None:
    status, _ = server.get(path)
    assert status == 400


def test_honours_nbcheckpoint_store(
    env_store_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = env_store_server
    notebook = server.root / "train.ipynb"
    _save_two(str(server.root.parent / "elsewhere"), notebook, server.key_file, monkeypatch)
    status, body = server.get("train.ipynb")
    assert status == 200, body
    assert [c["id"] for c in body] == [1, 2]


def test_notebook_file_stays_under_the_root(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert notebook_file(root, "a/b.ipynb") == os.path.join(root, "a", "b.ipynb")
    assert notebook_file(root, "/a/b.ipynb") == os.path.join(root, "a", "b.ipynb")
    for bad in ("", "..", "a/../../b", "a\\..\\b", "a/./b"):
        with pytest.raises(ValueError):
            notebook_file(root, bad)


def test_every_handler_requires_authentication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_server warns about handlers without an auth decorator; none of ours may trigger it."""
    from jupyter_server.serverapp import ServerApp
    from jupyter_server.utils import JupyterServerAuthWarning

    from nbcheckpoint.frontend.server import CheckpointsHandler

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    app = ServerApp(
        allow_unauthenticated_access=False,
        jpserver_extensions={"nbcheckpoint.frontend": True},
        reraise_server_extension_failures=True,
        root_dir=str(tmp_path),
    )
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        app.initialize(argv=[], find_extensions=False, new_httpserver=False)
    problems = [str(r.message) for r in records if issubclass(r.category, JupyterServerAuthWarning)]
    assert problems == []

    def targets(router: object) -> Iterator[object]:
        for rule in getattr(router, "rules", []):
            yield rule.target
            yield from targets(rule.target)

    assert CheckpointsHandler in set(targets(app.web_app.default_router))


def _query(server: Server, params: list[tuple[str, str]]) -> tuple[int, object]:
    request = urllib.request.Request(
        f"{server.url}/nbcheckpoint/api/checkpoints?{urllib.parse.urlencode(params)}",
        headers={"Authorization": f"token {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def test_finds_a_renamed_notebooks_checkpoints_under_its_id_and_its_old_name(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #13: the kernel of a notebook renamed from Untitled filed some checkpoints under
    the Untitled path (before it had an id) and the rest under the notebook's id."""
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(server.key_file))
    folder = server.root / "renamed"
    folder.mkdir()
    store = CheckpointStore(str(folder / ".nbcheckpoint"))
    old = NotebookRef.from_path(str(folder / "Untitled.ipynb"))
    by_id = NotebookRef.from_id("0f1e2d3c-aaaa-bbbb-cccc-000000000001", str(folder / "train.ipynb"))
    store.save({"x": 1}, old, ["x"], status="manual")
    store.save({"x": 2}, old, ["x"], status="manual")
    store.save({"x": 3}, by_id, ["x"], status="manual")

    # The frontend sends the id: the id's checkpoints (the path key of train.ipynb has none).
    status, body = _query(server, [("path", "renamed/train.ipynb"), ("id", by_id.key)])
    assert status == 200, body
    assert [(c["key"], c["id"]) for c in body] == [(by_id.key, 1)]
    # ... and the name it had: all three, oldest first, each with the key it is under.
    status, body = _query(
        server,
        [("path", "renamed/train.ipynb"), ("id", by_id.key), ("also", "renamed/Untitled.ipynb")],
    )
    assert [(c["key"], c["id"]) for c in body] == [(old.key, 1), (old.key, 2), (by_id.key, 1)]
    # A key a kernel reported works as well as the old path.
    status, body = _query(
        server, [("path", "renamed/train.ipynb"), ("id", by_id.key), ("key", old.key)]
    )
    assert len(body) == 3, body
    # Without a frontend (no id given), the id is read from the notebook file.
    write_notebook = {
        "cells": [],
        "metadata": {"nbcheckpoint": {"id": by_id.key, "path": "renamed/train.ipynb"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / "train.ipynb").write_text(json.dumps(write_notebook))
    status, body = _query(server, [("path", "renamed/train.ipynb")])
    assert [(c["key"], c["id"]) for c in body] == [(by_id.key, 1)]
    # Keys are folder names in the store: anything else is refused.
    for bad in (("key", "../x"), ("id", "a/b"), ("also", "../outside.ipynb")):
        status, _ = _query(server, [("path", "renamed/train.ipynb"), bad])
        assert status == 400, bad


# ------------------------------------------------------------------- diff
def _diff(server: Server, path: str, a: str, b: str, token: str | None = TOKEN):
    query = urllib.parse.urlencode({"path": path, "a": a, "b": b})
    return server.fetch(f"diff?{query}", token)


def test_diff_compares_two_checkpoints_by_key_and_id(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = server.root / "sub" / "compare.ipynb"
    _save_two(str(notebook.parent / ".nbcheckpoint"), notebook, server.key_file, monkeypatch)
    status, listed = server.get("sub/compare.ipynb")
    assert status == 200 and isinstance(listed, list)
    first, second = (f"{c['key']}:{c['id']}" for c in listed)
    status, body = _diff(server, "sub/compare.ipynb", first, second)
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["summary"] == "#1 -> #2: 1 changed, 1 added, 0 removed, 0 same"
    rows = {row["name"]: row for row in body["rows"]}
    assert rows["x"]["change"] == "changed" and rows["y"]["change"] == "added"
    assert rows["y"]["after"]["type"] == "list" and rows["y"]["after"]["size"] > 1000
    assert _diff(server, "sub/compare.ipynb", first, second, token=None)[0] in (401, 403)


def test_diff_refuses_bad_references_with_a_4xx_naming_them(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = server.root / "sub" / "refs.ipynb"
    _save_two(str(notebook.parent / ".nbcheckpoint"), notebook, server.key_file, monkeypatch)
    key = NotebookRef.from_path(str(notebook)).key
    path = "sub/refs.ipynb"
    for a, b, code, needle in [
        (f"{key}:1", f"{key}:99", 404, "No checkpoint #99"),
        (f"{key}:1", "", 400, "is not a checkpoint reference"),
        (f"{key}:1", f"{key}:abc", 400, "'abc' is not a checkpoint id"),
        (f"{key}:1", f"{key}:0", 400, "'0' is not a checkpoint id"),
        (f"{key}:1", "../../etc:1", 400, "is not a checkpoint reference"),
        (f"{key}:1", f"{key}:{'9' * 40}", 400, "is not a checkpoint id"),
        (f"{key}:1", "nobody-0000000000:1", 404, "No checkpoint #1"),
    ]:
        status, body = _diff(server, path, a, b)
        assert status == code, (a, b, body)
        assert needle in json.dumps(body), (a, b, body)
    assert _diff(server, "../x.ipynb", f"{key}:1", f"{key}:2")[0] == 400

    # A manifest damaged in the store: 422 naming it, never a 500.
    manifest = notebook.parent / ".nbcheckpoint" / "notebooks" / key / "manifests" / "00000002.ckpt"
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes()[:-5] + b"xxxxx")
    status, body = _diff(server, path, f"{key}:1", f"{key}:2")
    assert status == 422, body
    assert "Checkpoint #2" in json.dumps(body)


def test_diff_finds_checkpoints_in_the_store_of_an_earlier_path(tmp_path: Path) -> None:
    """A notebook moved to another folder: its checkpoints sit in the old folder's store."""
    from nbcheckpoint.errors import CheckpointNotFound
    from nbcheckpoint.frontend.server import diff_at

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = NotebookRef.from_path(str(tmp_path / "a" / "old.ipynb"))
    store = CheckpointStore(str(tmp_path / "a" / ".nbcheckpoint"))
    store.save({"x": 1}, old)
    store.save({"x": 1, "y": 2}, old)
    refs = (f"{old.key}:1", f"{old.key}:2")
    with pytest.raises(CheckpointNotFound):
        diff_at(str(tmp_path), "b/new.ipynb", *refs)
    found = diff_at(str(tmp_path), "b/new.ipynb", *refs, also=["a/old.ipynb"])
    assert found["summary"] == "#1 -> #2: 0 changed, 1 added, 0 removed, 1 same"
