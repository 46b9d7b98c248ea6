"""Hostile and broken records in a store: each is one bad checkpoint to every reader, and nothing crashes.

Someone who can write the store (a shared folder or bucket, a cloned repository) can put
anything in a manifest or a status record. Generated ones (hypothesis) go in as checkpoint
#3 beside two good ones, signed with the store's key (so they reach the manifest check) or
not; then the store's readers, the command line (in-process and once as a process), the
server endpoint and the panel must all still work: #3 listed with a reason, ``verify``
exit status 1 naming it, a restore of the latest falling back to #2.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbcheckpoint.cli import main
from nbcheckpoint.errors import MalformedManifest, NewerFormat, VerificationError
from nbcheckpoint.frontend.server import list_checkpoints
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey
from nbcheckpoint.store.diff import diff_checkpoints, render
from nbcheckpoint.store.manifest import (
    FORMAT,
    STATUSES,
    CellInfo,
    Group,
    LeftOut,
    Manifest,
    NotebookInfo,
    Position,
    Variable,
    decode,
)
from nbcheckpoint.widgets import CheckpointPanel

MAGIC = b"NBCKPT1\n"
HOLE = "\u0000hole\u0000"
SETTINGS = settings(
    max_examples=int(os.environ.get("NBCHECKPOINT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure in CI reproduces here
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ generators
NASTY_TEXT = [
    "\x1b[2J\x1b[H",  # clear the screen
    "\x1b]0;owned\x07",  # retitle the terminal
    "\x9b31m",  # C1 control sequence introducer
    "abc\u202edcba",  # right-to-left override
    "\ud800",  # a lone surrogate: not even printable
    "line\nbreak\r\x00nul",
    "\u2028\u2029\ufeff",
]
texts = st.one_of(st.text(max_size=20), st.sampled_from(NASTY_TEXT))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=10,
)
# JSON text that no value of Python's json.dumps produces: each is malformed wherever it goes.
RAW_JUNK = [
    "[" * 50_000 + "]" * 50_000,  # deeper than any parser's stack
    '{"a":' * 3000 + "1" + "}" * 3000,
    "1" * 5000,  # more digits than int() takes
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "1" + "0" * 400,
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (containers and leaves), as key paths."""
    if path:
        yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _with(body: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    """A copy of ``body`` with the place at ``path`` set to ``value`` (or removed)."""
    body = json.loads(json.dumps(body))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


@dataclass
class Hostile:
    data: bytes  # the whole manifest file
    signed: bool
    certainly_bad: bool  # malformed whatever the signature: every reader must refuse it
    what: str


def _frame(raw: bytes, key: SigningKey | None) -> bytes:
    header: dict[str, Any] = {"alg": "hmac-sha256", "len": len(raw)}
    if key is not None:
        header.update(key_id=key.key_id, sig=key.sign(raw))
    return MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + raw


@st.composite
def hostile_manifests(draw: st.DrawFn, good: dict[str, Any], key: SigningKey) -> Hostile:
    """A manifest for checkpoint #3 made from a good one: one place changed, or junk."""
    signed = draw(st.booleans())
    kind = draw(
        st.sampled_from(["replace", "delete", "raw", "whole", "bytes", "truncate", "header"])
    )
    certainly_bad = kind in ("raw", "bytes", "truncate")
    if kind == "whole":
        raw = json.dumps(draw(json_values)).encode()
        what = "a random JSON value"
        certainly_bad = True
    elif kind == "bytes":
        return Hostile(draw(st.binary(max_size=200)), signed, True, "random bytes")
    elif kind == "header":
        raw = json.dumps(good).encode()
        header: dict[str, Any] = {"alg": "hmac-sha256", "len": len(raw)}
        header.update(key_id=key.key_id, sig=key.sign(raw))
        field = draw(st.sampled_from(sorted(header)))
        header[field] = draw(st.one_of(texts, json_values))
        data = MAGIC + json.dumps(header).encode() + b"\n" + raw
        # Any change to the header leaves the body unsigned, damaged or of another key.
        return Hostile(data, True, True, f"header {field}")
    else:
        path = draw(st.sampled_from(sorted(_paths(good), key=repr)))
        if kind == "replace":
            raw = json.dumps(_with(good, path, draw(json_values))).encode()
        elif kind == "delete":
            raw = json.dumps(_with(good, path, None, delete=True)).encode()
        else:
            text = json.dumps(_with(good, path, HOLE))
            raw = text.replace(json.dumps(HOLE), draw(st.sampled_from(RAW_JUNK))).encode()
        what = f"{kind} at {path!r}"
    data = _frame(raw, key if signed else None)
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
        what = "a truncated manifest"
    return Hostile(data, signed, certainly_bad or not signed, what)


WELL_FORMED_STATUS = re.compile(
    rb"(" + b"|".join(s.encode() for s in STATUSES) + rb")\n\s*[0-9a-f]{64}\s*"
)
hostile_status = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda s, tail: s.encode() + b"\n" + tail, st.sampled_from(STATUSES), st.binary(max_size=80)
    ),
    st.builds(
        lambda s, sig: f"{s}\n{sig}".encode(),
        st.sampled_from(STATUSES),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    ),  # well formed, forged: ignored
    st.just(b"running\n\xff"),
    st.just(b"complete\n" + b"0" * 64 + b"\n" * 300),
)


# ------------------------------------------------------------------ the store under test
@dataclass
class Scene:
    """A notebook with checkpoints #1, #2 (good) and #3 (replaced by each example)."""

    url: str
    root: Path  # the server root: the notebook and its store (.nbcheckpoint) are in it
    nb: NotebookRef
    good: dict[str, Any]  # checkpoint #3's real manifest body
    key: SigningKey

    @classmethod
    def make(cls, root: Path, url: str | None = None) -> Scene:
        root.mkdir(parents=True, exist_ok=True)
        url = url or str(root / ".nbcheckpoint")
        store = CheckpointStore(url)
        nb = NotebookRef.from_path(str(root / "nb.ipynb"))
        store.save({"x": 1}, nb)
        store.save({"x": 2}, nb)
        store.save(
            {"x": 3, "os": os, "gen": (i for i in range(2)), "ys": list(range(100))},
            nb,
            status="running",
            cell={"execution_count": 4, "first_line": "for i in range(9):", "cell_id": "c"},
            position={"description": "for i at 3/9", "sp": 1, "counters": [3], "lengths": [9]},
            kernel={"pid": 1, "host": "h", "started": 1.0},
        )
        data = store.backend.read(cls.manifest_path(nb, 3))
        good = json.loads(data.split(b"\n", 2)[2])
        return cls(url, root, nb, good, store.key)

    @staticmethod
    def manifest_path(nb: NotebookRef, ident: int) -> str:
        return f"notebooks/{nb.key}/manifests/{ident:08d}.ckpt"

    def put(self, data: bytes) -> None:
        CheckpointStore(self.url).backend.replace(self.manifest_path(self.nb, 3), data)

    def put_status(self, ident: int, data: bytes | None) -> None:
        backend = CheckpointStore(self.url).backend
        path = f"notebooks/{self.nb.key}/status/{ident}"
        if data is None:
            backend.delete(path)
        else:
            backend.replace(path, data)


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _safe_for_a_terminal(text: str) -> bool:
    return all(c == "\n" or c.isprintable() for c in text)


def check_every_reader(scene: Scene, bad: bool | None, panel: bool = True) -> bool:
    """Run every reader over the scene; returns whether #3 was found bad.

    ``bad`` is what #3 must be (None: either, but every reader must agree).
    """
    store = CheckpointStore(scene.url)
    listed = store.list(scene.nb)
    assert [c.id for c in listed] == [1, 2, 3]
    third = listed[2]
    if third.manifest is None:
        assert third.problem and third.status in ("damaged", "newer format")
    problems = store.verify(scene.nb)
    reported = {p.ident for p in problems}
    assert reported <= {3}, problems
    found_bad = 3 in reported
    if bad is not None:
        assert found_bad == bad, (problems, third)
    if third.manifest is None:
        assert found_bad  # what cannot even be listed cannot verify

    restored = store.load(scene.nb)
    if found_bad:
        assert restored.checkpoint.id == 2 and restored.values == {"x": 2}
        assert restored.passed_over.get(3)
    else:
        assert restored.checkpoint.id == 3

    url = scene.url
    code, out, err = _cli("--store", url, "list")
    assert code == 0 and _safe_for_a_terminal(out + err), (out, err)
    assert "#3" in out and "#2" in out
    code, out, _ = _cli("--store", url, "list", "--json")
    assert code == 0 and [i["id"] for i in json.loads(out)] == [1, 2, 3]
    code, out, err = _cli("--store", url, "verify")
    assert code == (1 if found_bad else 0) and _safe_for_a_terminal(out + err)
    if found_bad:
        assert "#3" in out
    code, out, err = _cli("--store", url, "show", "3")
    assert code in (0, 1) and "Traceback" not in err and _safe_for_a_terminal(out + err)
    if third.manifest is None:
        assert code == 1 and err.startswith("nbcheckpoint: error: Checkpoint #3")
    code, out, err = _cli("--store", url, "show", "2")
    assert code == 0, err

    if scene.url == str(scene.root / ".nbcheckpoint"):  # the store the server finds
        served = list_checkpoints(str(scene.root), "nb.ipynb")
        json.dumps(served)  # what the handler sends
        assert [c["id"] for c in served] == [1, 2, 3]
        if third.manifest is None:
            assert served[2]["problem"] and not served[2]["verified"]

    # A diff reads #3's manifest only: refused with one error naming it, or a table safe to print.
    try:
        compared = diff_checkpoints(store, scene.nb, 2, 3)
    except VerificationError as e:
        assert str(e).startswith("Checkpoint #3 ") and found_bad
    else:
        assert third.manifest is not None
        json.dumps(compared.to_dict())
        assert _safe_for_a_terminal(render(compared))

    if panel:
        view = CheckpointPanel(store, scene.nb, namespace={}, live=False)
        try:
            assert sorted(view.ids) == [1, 2, 3]
            for ident in (3, 2, 1):
                view.history.value = ident  # renders its details and variable rows
            assert "Could not" not in view.message.value
        finally:
            view.close()
    return found_bad


# ------------------------------------------------------------------ properties
def test_generated_manifests_are_one_bad_checkpoint(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")
    seen = {"bad": 0, "good": 0}

    @SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        hostile = data.draw(hostile_manifests(scene.good, scene.key))
        scene.put(hostile.data)
        bad = check_every_reader(
            scene, True if hostile.certainly_bad else None, panel=data.draw(st.booleans())
        )
        seen["bad" if bad else "good"] += 1

    run()
    # The generator must mostly make bad manifests, or the property says little.
    assert seen["bad"] > seen["good"], seen


def test_generated_status_records_are_one_bad_checkpoint_or_ignored(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")

    @SETTINGS
    @given(hostile_status)
    def run(record: bytes) -> None:
        scene.put_status(3, record)
        well_formed = WELL_FORMED_STATUS.fullmatch(record) is not None and len(record) <= 256
        # Well formed but not signed here: ignored. Anything else: #3 is a bad checkpoint.
        check_every_reader(scene, not well_formed, panel=False)
        if well_formed:
            assert CheckpointStore(scene.url).read_checkpoint(scene.nb, 3).status == "running"

    run()


# ------------------------------------------------------------------ the cases of the issue
def test_a_ten_byte_status_record(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")
    scene.put_status(3, b"running\n\xff")
    assert check_every_reader(scene, True)
    [listed] = [c for c in CheckpointStore(scene.url).list(scene.nb) if c.id == 3]
    assert listed.status == "damaged" and "status record" in (listed.problem or "")


@pytest.mark.parametrize("signed", [True, False])
def test_escape_sequences_are_shown_escaped(tmp_path: Path, signed: bool) -> None:
    scene = Scene.make(tmp_path / "root")
    body = json.loads(json.dumps(scene.good))
    body["cell"]["first_line"] = "\x1b[2J\x1b]0;owned\x07 x"
    body["notebook"]["path"] = "\u202enb.ipynb"
    body["skipped"] = {"\x1b[31mgen": {"type": "\x9b1m", "reason": "bad\rreason"}}
    scene.put(_frame(json.dumps(body).encode(), scene.key if signed else None))
    check_every_reader(scene, None if signed else True)
    code, out, _ = _cli("--store", scene.url, "list")
    assert "\\x1b[2J\\x1b]0;owned\\x07 x" in out and "\x1b" not in out
    code, out, _ = _cli("--store", scene.url, "show", "3")
    assert code == 0 and "\\u202enb.ipynb" in out and "\\x1b[31mgen" in out and "\\x9b1m" in out


def test_a_signature_that_is_not_ascii(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")
    raw = json.dumps(scene.good).encode()
    header = {"alg": "hmac-sha256", "len": len(raw), "key_id": scene.key.key_id, "sig": "\xff" * 64}
    scene.put(MAGIC + json.dumps(header).encode() + b"\n" + raw)
    assert check_every_reader(scene, True)


def test_deep_nesting_and_wrong_types_signed(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")
    raw = json.dumps(scene.good).replace('"running"', "[" * 100_000 + "]" * 100_000, 1)
    scene.put(_frame(raw.encode(), scene.key))
    assert check_every_reader(scene, True)
    for change in ({"variables": []}, {"blobs": {"a": "b"}}, {"id": "3"}, {"created": True}):
        scene.put(_frame(json.dumps({**scene.good, **change}).encode(), scene.key))
        assert check_every_reader(scene, True, panel=False)


def test_the_command_line_as_a_process(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    scene = Scene.make(tmp_path / "root")
    body = {**scene.good, "status": "\x1b[2Jrunning"}
    scene.put(_frame(json.dumps(body).encode(), scene.key))
    scene.put_status(2, b"running\n\xff")
    run = [sys.executable, "-m", "nbcheckpoint", "--store", scene.url]
    listed = subprocess.run([*run, "list"], env=subprocess_env, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stderr == ""
    assert "\x1b" not in listed.stdout and "\\x1b[2Jrunning" in listed.stdout
    assert "#2" in listed.stdout and "status record" in listed.stdout
    checked = subprocess.run([*run, "verify"], env=subprocess_env, capture_output=True, text=True)
    assert checked.returncode == 1 and checked.stderr == ""
    assert "#2" in checked.stdout and "#3" in checked.stdout
    assert "2 problems in 2 of 3 checkpoints" in checked.stdout


# ------------------------------------------------------------------ S3 and the real server
@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from s3_server import shared_server

    server = shared_server()
    with server.activate():
        yield server


def test_s3_restore_falls_back_past_malformed_manifests(tmp_path: Path, s3: Any) -> None:
    scene = Scene.make(tmp_path / "root", url=s3.new_store_url())
    cases = [
        _frame(json.dumps({**scene.good, "groups": "\x1b[2J"}).encode(), scene.key),
        _frame(json.dumps({**scene.good, "format": 99}).encode(), scene.key),
        _frame(json.dumps(scene.good).replace("{", "[" * 5000, 1).encode(), scene.key),
    ]
    for data in cases:
        scene.put(data)
        assert check_every_reader(scene, True, panel=False)
    scene.put(cases[0])
    scene.put_status(3, b"running\n\xff")
    assert check_every_reader(scene, True, panel=False)


@pytest.mark.integration
def test_the_server_endpoint_lists_a_bad_checkpoint_with_its_reason(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_server_endpoint import _start

    with contextlib.contextmanager(_start)(tmp_path_factory.mktemp("server"), {}) as server:
        monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(server.key_file))
        scene = Scene.make(server.root / "sub")
        raw = json.dumps(scene.good).replace('"running"', "[" * 100_000 + "]" * 100_000, 1)
        scene.put(_frame(raw.encode(), scene.key))
        scene.put_status(2, b"running\n\xff")
        status, body = server.get("sub/nb.ipynb")
        assert status == 200, body
        assert isinstance(body, list) and [c["id"] for c in body] == [1, 2, 3]
        assert body[0]["problem"] is None and body[0]["verified"] is True
        assert body[1]["status"] == "damaged" and "status record" in body[1]["problem"]
        assert body[2]["status"] == "damaged" and "nested too deeply" in body[2]["problem"]
        scene.put(_frame(json.dumps({**scene.good, "format": 3}).encode(), scene.key))
        status, body = server.get("sub/nb.ipynb")
        assert status == 200 and body[2]["status"] == "newer format"
        assert "upgrade nbcheckpoint" in body[2]["problem"]


def test_odd_names_and_a_folder_in_the_manifests_folder(tmp_path: Path) -> None:
    scene = Scene.make(tmp_path / "root")
    folder = Path(scene.url) / "notebooks" / scene.nb.key / "manifests"
    for name in ("\u00b2\u00b2.ckpt", "9" * 5000 + ".ckpt", "\u0661.ckpt", "x.ckpt", "7.tmp"):
        with contextlib.suppress(OSError):  # a name too long for the file system is no test
            (folder / name).write_bytes(b"junk")
    assert check_every_reader(scene, None) is False  # ignored: not names the store writes
    status = folder.parent / "status"
    status.mkdir(exist_ok=True)
    (status / "3").mkdir()
    assert check_every_reader(scene, True)
    (status / "3").rmdir()
    (folder / "00000003.ckpt").unlink()
    (folder / "00000003.ckpt").mkdir()
    assert check_every_reader(scene, True)


def test_the_magics_pass_over_bad_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.testing import globalipapp

    scene = Scene.make(tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBCHECKPOINT_STORE", scene.url)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "root" / "nb.ipynb"))
    body = {**scene.good, "cell": {"first_line": "\x1b[2J", "execution_count": "7"}}
    scene.put(_frame(json.dumps(body).encode(), scene.key))
    scene.put_status(2, b"running\n\xff")
    globalipapp.start_ipython()
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "nbcheckpoint")
    try:
        ip.run_line_magic("checkpoint", "list")
        out = capsys.readouterr().out
        assert "#3" in out and "cell.execution_count" in out and "status record" in out
        assert "\x1b" not in out
        ip.user_ns.pop("x", None)
        ip.run_line_magic("checkpoint", "restore")
        out = capsys.readouterr().out
        assert "Restored checkpoint #1" in out and "passed over #3" in out
        assert ip.user_ns["x"] == 1
        ip.run_cell("%%checkpoint\nfor i in range(2):\n    y = i\n").raise_error()
        assert ip.user_ns["y"] == 1
        assert [c.id for c in CheckpointStore(scene.url).list(scene.nb)] == [1, 2, 3, 4]
    finally:
        ip.run_line_magic("unload_ext", "nbcheckpoint")


# ------------------------------------------------------------------ the checker alone
def _synthetic_body() -> dict[str, Any]:
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    return Manifest(
        id=3,
        notebook=NotebookInfo("nb-0", "nb.ipynb"),
        created=1.0,
        status="running",
        cell=CellInfo(1, "for i in x:", "0" * 64, "id"),
        position=Position("for i at 1/2", 1, (1,), (2,), True),
        groups=(Group(("x", "y"), a, (b, c), 10, "pickle", (2,)),),
        variables={
            "x": Variable("int", 10, 0, ("y",)),
            "y": Variable("int", 10, 0, ("x",)),
        },
        modules={"np": "numpy"},
        skipped={"g": LeftOut("generator", "cannot pickle")},
        rng=a,
        blobs={a: 10, b: 4, c: 4},
        versions={"python": "3"},
        parent=2,
    ).to_dict()


SYNTHETIC = _synthetic_body()


@st.composite
def _mutated(draw: st.DrawFn, good: dict[str, Any]) -> bytes:
    path = draw(st.sampled_from(sorted(_paths(good), key=repr)))
    kind = draw(st.sampled_from(["replace", "delete", "raw"]))
    if kind == "replace":
        return json.dumps(_with(good, path, draw(json_values))).encode()
    if kind == "delete":
        return json.dumps(_with(good, path, None, delete=True)).encode()
    text = json.dumps(_with(good, path, HOLE))
    return text.replace(json.dumps(HOLE), draw(st.sampled_from(RAW_JUNK))).encode()


@settings(SETTINGS, max_examples=int(os.environ.get("NBCHECKPOINT_FUZZ_EXAMPLES", "60")) * 5)
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        _mutated(SYNTHETIC),
    )
)
def test_decode_raises_only_its_own_error(raw: bytes) -> None:
    try:
        m, body = decode(raw, key="nb-0", ident=3)
    except (MalformedManifest, NewerFormat) as e:
        assert str(e).startswith("Checkpoint #3 ")
    else:
        assert m.id == 3 and body["format"] == FORMAT


def test_the_synthetic_body_is_valid() -> None:
    m, _ = decode(json.dumps(SYNTHETIC).encode(), key="nb-0", ident=3)
    assert m.groups[0].buffer_pieces() == [("b" * 64, "c" * 64)]
