"""The versioned manifest: typed fields, format 1 upgraded on read, a newer format refused and reported as such."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nbcheckpoint.cli import main
from nbcheckpoint.errors import MalformedManifest, NewerFormat, StoreError, VerificationError
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey
from nbcheckpoint.store import manifest as mf
from nbcheckpoint.store.manifest import (
    FORMAT,
    CellInfo,
    Group,
    Manifest,
    NotebookInfo,
    Position,
    get_version,
    parse,
    upgrade,
)

MAGIC = b"NBCKPT1\n"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _signed(raw: bytes, key: SigningKey) -> bytes:
    header = {"alg": "hmac-sha256", "key_id": key.key_id, "len": len(raw), "sig": key.sign(raw)}
    return MAGIC + _canonical(header) + b"\n" + raw


def _path(nb: NotebookRef, ident: int) -> str:
    return f"notebooks/{nb.key}/manifests/{ident:08d}.ckpt"


def _raw_body(store: CheckpointStore, nb: NotebookRef, ident: int) -> dict[str, Any]:
    data = store.backend.read(_path(nb, ident))
    return json.loads(data.split(b"\n", 2)[2])


def _put(store: CheckpointStore, nb: NotebookRef, ident: int, body: dict[str, Any]) -> None:
    store.backend.replace(_path(nb, ident), _signed(_canonical(body), store.key))


# ------------------------------------------------------------ typed fields
def test_a_saved_checkpoint_reads_back_as_typed_fields(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    import os as os_module

    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB: stored in chunks
    ck = store.save(
        {"x": [1, 2], "alias": None, "big": big, "os": os_module, "gen": (i for i in range(2))},
        nb,
        status="running",
        cell={"execution_count": 7, "first_line": "for epoch in range(3):", "cell_id": "c1"},
        position={"description": "for epoch at 2/3", "sp": 1, "counters": [1], "lengths": [3]},
        kernel={"pid": 42, "host": "box", "started": 12.5},
    )
    m = store.read_checkpoint(nb, ck.id, use_cache=False).manifest
    assert isinstance(m, Manifest)
    assert (m.id, m.notebook, m.status, m.parent) == (
        1,
        NotebookInfo(nb.key, nb.path),
        "running",
        None,
    )
    assert m.cell == CellInfo(7, "for epoch in range(3):", None, "c1")
    assert m.position == Position("for epoch at 2/3", 1, (1,), (3,), False)
    assert (m.kernel.pid, m.kernel.host, m.kernel.started) == (42, "box", 12.5)
    assert set(m.variables) == {"x", "alias", "big"}
    assert m.variables["big"].type == "numpy.ndarray"
    assert m.modules == {"os": "os"}
    assert set(m.skipped) == {"gen"} and m.skipped["gen"].reason
    [(kind, name, entry)] = m.left_out()
    assert (kind, name, entry.type) == ("skipped", "gen", "generator")
    big_group = m.groups[m.variables["big"].group]
    assert isinstance(big_group, Group) and len(big_group.buffer_pieces()) == 1
    assert len(big_group.buffer_pieces()[0]) == len(big_group.buffers) > 1  # one buffer, chunked
    assert m.total_bytes == sum(m.blobs.values()) == m.stats.bytes_total
    assert m.new_bytes == m.stats.bytes_new > 0
    assert m.stats.duration is not None and m.stats.duration >= 0
    # What the store wrote is the current format with every field spelled out.
    raw = _raw_body(store, nb, 1)
    assert (raw["format"], raw["format_minor"]) == (FORMAT, mf.FORMAT_MINOR)
    assert all("chunks" in g and "pickler" in g for g in raw["groups"])
    # The records are frozen (and copy and pickle), and the compatibility body is read-only.
    with pytest.raises(AttributeError):
        m.status = "complete"  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.variables["x"] = m.variables["big"]  # type: ignore[index]
    assert copy.deepcopy(m) == m == pickle.loads(pickle.dumps(m))
    with pytest.raises(TypeError):
        ck.body["status"] = "complete"  # type: ignore[index]
    assert ck.body["status"] == "running"


def test_to_dict_and_parse_agree() -> None:
    m = Manifest(
        id=4,
        notebook=NotebookInfo("k", "a/k.ipynb"),
        created=1.5,
        status="auto",
        cell=CellInfo(3, "x = 1"),
        position=Position("between statements", 2, (), (), True),
        parent=3,
    )
    assert parse(m.to_dict(), key="k", ident=4) == m
    with pytest.raises(MalformedManifest, match="another checkpoint id or notebook"):
        parse(m.to_dict(), key="k", ident=5)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"id": True}, "id must be a whole number"),
        ({"created": "yesterday"}, "created must be a number"),
        ({"created": 1e308}, "created is out of range"),
        ({"status": "finished"}, "status is unknown"),
        ({"cell": {"execution_count": -1}}, "cell.execution_count is out of range"),
        ({"cell": ["x"]}, "cell must be an object"),
        ({"variables": {"x": {"type": "int", "size": 1, "group": 0}}}, "names a group"),
        ({"blobs": {"zz": {"size": 1}}}, "is not a blob address"),
        ({"blobs": {"a" * 64: {"size": 1 << 60}}}, "size is out of range"),
        ({"modules": {"np": 1}}, "modules['np'] must be text"),
        ({"rng": "b" * 64}, "rng names a blob"),
    ],
)
def test_a_malformed_field_is_named(change: dict[str, Any], says: str) -> None:
    body = {**Manifest(id=1, notebook=NotebookInfo("k", "k"), created=1.0, status="auto").to_dict()}
    body.update(change)
    with pytest.raises(MalformedManifest) as info:
        parse(body, key="k", ident=1)
    assert says in info.value.reason
    assert str(info.value).startswith(
        "Checkpoint #1 failed verification: the manifest content is malformed"
    )


def test_a_missing_field_is_named() -> None:
    body = Manifest(id=1, notebook=NotebookInfo("k", "k"), created=1.0, status="auto").to_dict()
    del body["blobs"]
    with pytest.raises(MalformedManifest, match="blobs is missing"):
        parse(body, key="k", ident=1)


def test_writing_a_body_that_would_not_read_back_is_refused(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    ck = store.save({"x": 1}, nb)
    body = dict(ck.body)
    body["status"] = "bogus"
    with pytest.raises(StoreError, match="cannot read back"):
        store._encode_manifest(body)


# ------------------------------------------------------------ upgrades
def _as_format_1(body: dict[str, Any]) -> dict[str, Any]:
    """A body as nbcheckpoint wrote it in format 1: no format_minor, optional fields left out."""
    old = {k: v for k, v in body.items() if k != "format_minor"}
    old["format"] = 1
    old["groups"] = []
    for g in body["groups"]:
        g = dict(g)
        if all(n == 1 for n in g["chunks"]):
            del g["chunks"]  # format 1 wrote chunks only for cut buffers
        if g["pickler"] == "dill":
            del g["pickler"]  # and the pickler only once there were two
        old["groups"].append(g)
    old["cell"] = {k: v for k, v in (body["cell"] or {}).items() if k != "cell_id"} or None
    del old["withheld"]
    return old


def test_a_format_1_checkpoint_is_upgraded_and_restored(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    import fractions
    import threading

    values = {
        "small": [1, 2, 3],
        "f": fractions.Fraction(1, 3),
        "big": np.arange(2_000_000, dtype=np.int64),  # 16 MB: chunked
        "lock": threading.Lock(),  # only dill pickles it
    }
    store.save(values, nb, cell={"execution_count": 2, "first_line": "big = ..."})
    store.save({"later": 1}, nb)
    olds = {ident: _as_format_1(_raw_body(store, nb, ident)) for ident in (1, 2)}
    for ident, old in olds.items():
        assert get_version(old) == (1, 0)
        _put(store, nb, ident, old)
    # Format 1 as it was: chunks only where a buffer was cut, pickler only when not dill.
    groups = olds[1]["groups"]
    assert any("chunks" in g for g in groups) and any("chunks" not in g for g in groups)
    assert any("pickler" not in g for g in groups)

    fresh = CheckpointStore(store.url)
    assert fresh.verify() == []
    restored = fresh.load(nb, 1)
    assert restored.values["small"] == [1, 2, 3]
    assert restored.values["f"] == fractions.Fraction(1, 3)
    assert np.array_equal(restored.values["big"], values["big"])
    assert restored.values["lock"].acquire(blocking=False)
    m = restored.checkpoint.manifest
    assert m is not None and m.format_minor == 0
    assert m.cell == CellInfo(2, "big = ...", None, None)
    assert m.withheld == {}
    assert all(g.pickler in ("pickle", "dill") and g.chunks for g in m.groups if g.buffers)
    assert fresh.load(nb).checkpoint.id == 2
    # The upgrade is a step function of its own, and it leaves what it is given alone.
    old = olds[2]
    before = json.loads(json.dumps(old))
    new = upgrade(old)
    assert old == before and new["format"] == FORMAT and new["format_minor"] == 0


def test_a_newer_minor_version_is_read_and_its_additions_kept(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    store.save({"x": 1}, nb)
    body = _raw_body(store, nb, 1)
    body["format_minor"] = 7
    body["added_later"] = {"something": [1, 2]}
    body["cell"] = {"execution_count": 1, "first_line": "x = 1", "added_too": True}
    _put(store, nb, 1, body)
    fresh = CheckpointStore(store.url)
    ck = fresh.read_checkpoint(nb, 1)
    assert ck.manifest is not None and ck.manifest.format_minor == 7
    assert ck.body["added_later"] == {"something": [1, 2]}
    assert fresh.load(nb).values == {"x": 1}
    assert fresh.verify() == []


# ------------------------------------------------------------ a newer format
@pytest.fixture
def newer(store: CheckpointStore, nb: NotebookRef) -> CheckpointStore:
    """Checkpoints #1 and #2 of this version, then #3 of a (signed) format 3."""
    store.save({"x": 1}, nb)
    store.save({"x": 2}, nb)
    store.save({"x": 3}, nb)
    body = _raw_body(store, nb, 3)
    body["format"] = FORMAT + 1
    body["groups"] = {"a whole": "new layout"}
    _put(store, nb, 3, body)
    return CheckpointStore(store.url)


def test_a_newer_format_is_refused_with_upgrade(newer: CheckpointStore, nb: NotebookRef) -> None:
    with pytest.raises(NewerFormat) as info:
        newer.read_checkpoint(nb, 3)
    assert str(info.value).startswith(
        f"Checkpoint #3 was written by a newer nbcheckpoint (format {FORMAT + 1}): upgrade nbcheckpoint"
    )
    assert isinstance(info.value, VerificationError)  # so every reader passes over it
    restored = newer.load(nb)
    assert restored.checkpoint.id == 2 and restored.values == {"x": 2}
    assert "newer nbcheckpoint" in restored.passed_over[3]
    [problem] = newer.verify()
    assert problem.ident == 3 and "upgrade nbcheckpoint" in problem.what
    assert "malformed" not in problem.what and "damaged" not in problem.what
    listed = {ck.id: ck for ck in newer.list(nb)}
    assert listed[3].status == "newer format" and listed[3].newer_format == FORMAT + 1
    assert listed[2].status == "manual"


def test_a_newer_container_format_is_refused_with_upgrade(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    store.save({"x": 1}, nb)
    store.backend.replace(_path(nb, 1), b"NBCKPT2\n" + os.urandom(100))
    with pytest.raises(NewerFormat, match="upgrade nbcheckpoint"):
        CheckpointStore(store.url).read_checkpoint(nb, 1)


def test_the_command_line_reports_a_newer_format(
    newer: CheckpointStore, nb: NotebookRef, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--store", newer.url, "verify"]) == 1
    out = capsys.readouterr().out
    assert "#3" in out and "newer nbcheckpoint" in out and "upgrade nbcheckpoint" in out
    assert main(["--store", newer.url, "list", "--json"]) == 0
    items = {i["id"]: i for i in json.loads(capsys.readouterr().out)}
    assert items[3]["status"] == "newer format" and "upgrade" in items[3]["problem"]
    assert main(["--store", newer.url, "show", "3"]) == 1
    err = capsys.readouterr().err
    assert "written by a newer nbcheckpoint" in err and "upgrade nbcheckpoint" in err


def test_docstring_examples() -> None:
    import doctest

    from nbcheckpoint.store import records

    for module in (mf, records):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_referenced_addresses_of_a_manifest_that_cannot_be_read(
    newer: CheckpointStore, nb: NotebookRef
) -> None:
    """What gc may use to keep the blobs of a checkpoint it cannot read."""
    from nbcheckpoint.store.manifest import referenced_addresses

    data = newer.backend.read(_path(nb, 3))
    found = referenced_addresses(data)
    body = _raw_body(newer, nb, 3)
    assert set(body["blobs"]) <= found
    assert referenced_addresses(data[: len(data) // 2]) <= found  # damaged: what is left
