"""Comparing checkpoints from their manifests: added, removed, changed, same, shapes and dtypes."""

from __future__ import annotations

import json
import pathlib
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from nbcheckpoint.errors import MalformedManifest, UntrustedCheckpoint
from nbcheckpoint.store import CheckpointStore
from nbcheckpoint.store.diff import (
    diff_checkpoints,
    diff_sides,
    live_side,
    read_side,
    render,
    side_of,
)
from nbcheckpoint.store.manifest import parse


def _rows(diff):
    return {r.name: r for r in diff.rows}


def test_added_removed_changed_same_with_shapes_and_dtypes(store, nb):
    ns = {
        "same": [1, 2, 3],
        "gone": "bye",
        "arr": np.zeros((3, 4)),
        "grown": np.arange(10),
        "df": pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}),
        "edited": {"k": 1},
    }
    a = store.save(ns, nb)
    del ns["gone"]
    ns["new"] = 42
    ns["arr"] = ns["arr"].astype("float32")  # same shape, new dtype
    ns["grown"] = np.arange(20)
    ns["df"] = ns["df"].assign(c=[True, False])
    ns["edited"] = {"k": 2}
    b = store.save(ns, nb)

    diff = diff_checkpoints(store, nb, a.id, b.id)
    rows = _rows(diff)
    assert {n: r.change for n, r in rows.items()} == {
        "same": "same",
        "gone": "removed",
        "new": "added",
        "arr": "changed",
        "grown": "changed",
        "df": "changed",
        "edited": "changed",
    }
    assert rows["arr"].notes == ("dtype float64 -> float32",)
    assert rows["grown"].notes == ("shape (10,) -> (20,)",)
    assert rows["df"].notes == (
        "shape (2, 2) -> (2, 3)",
        "dtype float64 x1, int64 x1 -> bool x1, float64 x1, int64 x1",
    )
    assert rows["edited"].notes == () and rows["edited"].certain
    assert rows["grown"].before.size < rows["grown"].after.size
    assert diff.counts() == {"changed": 4, "added": 1, "removed": 1, "not saved": 0, "same": 1}
    assert diff.summary() == f"#{a.id} -> #{b.id}: 4 changed, 1 added, 1 removed, 1 same"
    text = render(diff)
    assert "grown" in text and "(10,) -> (20,)" in text and "same  " not in text
    json.dumps(diff.to_dict())  # what the server sends


def test_an_edit_inside_an_array_is_a_change_without_a_shape_change(store, nb):
    ns = {"w": np.ones(1000)}
    a = store.save(ns, nb)
    ns["w"][500] = 2.0
    b = store.save(ns, nb)
    c = store.save(ns, nb)
    assert _rows(diff_checkpoints(store, nb, a.id, b.id))["w"].change == "changed"
    assert _rows(diff_checkpoints(store, nb, b.id, c.id))["w"].change == "same"


def test_variables_pickled_together_are_changed_but_not_certain(store, nb):
    shared = [1, 2]
    ns = {"x": shared, "y": {"ref": shared}, "z": 3}
    a = store.save(ns, nb)
    shared.append(3)
    b = store.save(ns, nb)
    rows = _rows(diff_checkpoints(store, nb, a.id, b.id))
    assert rows["x"].change == rows["y"].change == "changed"
    assert not rows["x"].certain and "saved together with y" in rows["x"].notes[0]
    assert rows["z"].change == "same"
    assert "changed?" in render(diff_checkpoints(store, nb, a.id, b.id))


def test_now_is_what_a_save_would_record_and_nothing_is_written(store, nb):
    ns = {"arr": np.zeros(5), "n": 1}
    a = store.save(ns, nb)
    blobs_before = store.disk_usage()
    assert {
        r.change for r in diff_sides(read_side(store, nb, a.id), live_side(store, ns, nb, ns)).rows
    } == {"same"}
    ns["arr"] = np.zeros(7)
    rows = _rows(diff_sides(read_side(store, nb, a.id), live_side(store, ns, nb, ns)))
    assert rows["arr"].change == "changed" and rows["arr"].notes == ("shape (5,) -> (7,)",)
    assert rows["n"].change == "same"
    assert store.disk_usage() == blobs_before
    assert [c.id for c in store.list(nb)] == [a.id]


def test_skipped_and_imported_variables(store, nb):
    ns = {"lock_holder": (x for x in []), "os": __import__("os"), "v": 1}
    a = store.save(ns, nb)
    ns["json"] = json
    b = store.save(ns, nb)
    rows = _rows(diff_checkpoints(store, nb, a.id, b.id))
    assert rows["json"].change == "added" and rows["json"].after.type == "module"
    assert rows["os"].change == "same"
    assert rows["lock_holder"].change == "not saved"
    assert rows["lock_holder"].notes[0].startswith(f"not saved in #{a.id}: ")


def test_a_malformed_manifest_is_one_error_naming_the_checkpoint(local_store_url, nb):
    store = CheckpointStore(local_store_url)
    a = store.save({"x": np.zeros(3)}, nb)
    b = store.save({"x": np.zeros(4)}, nb)
    body = json.loads(json.dumps(dict(store.read_checkpoint(nb, b.id).body)))
    for bad, why in (
        ("not a shape", "variables['x'].shape must be a list"),
        ([1] * 65, "more than 64 dimensions"),
        ([-1], "variables['x'].shape[0] is out of range"),
    ):
        body["variables"]["x"]["shape"] = bad
        with pytest.raises(MalformedManifest, match=re.escape(why)) as e:
            parse(body, key=nb.key, ident=b.id)
        assert f"#{b.id}" in str(e.value)
    body["variables"]["x"]["shape"] = [4]
    body["variables"]["x"]["dtype"] = "x" * 301
    with pytest.raises(MalformedManifest, match="longer than 300"):
        parse(body, key=nb.key, ident=b.id)

    # Signed with the key, yet malformed (a writer with the key, or a bug): the diff refuses
    # it with the one error, naming its id; nothing is unpickled.
    body["variables"]["x"]["dtype"] = {"not": "text"}
    target = pathlib.Path(local_store_url, "notebooks", nb.key, "manifests", f"{b.id:08d}.ckpt")
    target.chmod(0o644)
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    header = {"alg": "hmac-sha256", "key_id": store.key.key_id, "len": len(raw)}
    header["sig"] = store.key.sign(raw)
    target.write_bytes(b"NBCKPT1\n" + json.dumps(header).encode() + b"\n" + raw)
    with pytest.raises(MalformedManifest) as e:
        diff_checkpoints(CheckpointStore(local_store_url), nb, a.id, b.id)
    assert str(e.value).startswith(f"Checkpoint #{b.id} ")
    assert "variables['x'].dtype must be text" in str(e.value)


def test_an_older_manifest_without_shapes_says_shape_unknown(store, nb):
    a = store.save({"x": np.zeros(3)}, nb)
    m = store.read_checkpoint(nb, a.id).manifest
    body = m.to_dict()
    body["format_minor"] = 0
    del body["variables"]["x"]["shape"], body["variables"]["x"]["dtype"]
    old = parse(body, key=nb.key, ident=a.id)
    assert old.variables["x"].shape is None
    diff = diff_sides(side_of(old), side_of(m))
    assert _rows(diff)["x"].change == "same" and not diff.shapes_known
    assert "shape unknown" in render(diff)


def test_control_characters_in_names_are_escaped(store, nb):
    a = store.save({"ok": 1}, nb)
    b = store.save({"ok": 1, "bad\x1b[2Jname": 2}, nb)
    text = render(diff_checkpoints(store, nb, a.id, b.id))
    assert "\x1b" not in text and "bad\\x1b[2Jname" in text


def test_shape_is_recorded_for_arrays_frames_and_series_only(store, nb):
    ck = store.save(
        {"a": np.zeros((2, 3), "int8"), "s": pd.Series([1.0]), "l": [1], "p": pickle}, nb
    )
    v = store.read_checkpoint(nb, ck.id).manifest.variables
    assert (v["a"].shape, v["a"].dtype) == ((2, 3), "int8")
    assert (v["s"].shape, v["s"].dtype) == ((1,), "float64")
    assert (v["l"].shape, v["l"].dtype) == (None, None)


def test_a_checkpoint_signed_with_another_key_is_refused_saying_how_to_compare_it(
    local_store_url, nb, tmp_path, monkeypatch
):
    store = CheckpointStore(local_store_url)
    a = store.save({"x": 1}, nb)
    b = store.save({"x": 2}, nb)
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(tmp_path / "other" / "signing.key"))
    with pytest.raises(UntrustedCheckpoint) as e:
        diff_checkpoints(CheckpointStore(local_store_url), nb, a.id, b.id)
    text = str(e.value)
    assert text.startswith(f"Checkpoint #{a.id} is not trusted: it was signed with a different key")
    assert "Only signed checkpoints are compared" in text and "--trust" not in text


def test_dataframe_dtypes_from_blocks_agree_with_the_public_way():
    from nbcheckpoint.store.serializer import _column_dtypes

    df = pd.DataFrame({"a": [1], "b": [1.0], "c": [2.0], "d": pd.Categorical(["x"])})

    class Public:  # no block manager: what another pandas layout falls back to
        dtypes = df.dtypes
        shape = df.shape

    expected = {"int64": 1, "float64": 2, "category": 1}
    assert _column_dtypes(df) == _column_dtypes(Public()) == expected


def test_docstring_examples() -> None:
    import doctest

    from nbcheckpoint.store import diff
    from nbcheckpoint.widgets import diff as diff_widget

    for module in (diff, diff_widget):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
