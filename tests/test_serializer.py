"""Round trips through the store: types, shared references, modules, random state, skipped and withheld variables."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import json
import mmap
import os
import random
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import assert_same, script, store_files

from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.serializer import restore_rng


def _numpy_values() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((40, 30))
    obj = np.empty(4, dtype=object)
    obj[:] = [{"a": 1}, [1, 2], "text", None]
    values: dict[str, Any] = {
        "f64": base,
        "f32": base.astype(np.float32),
        "f16": base.astype(np.float16),
        "i8": rng.integers(-128, 127, 1000, dtype=np.int8),
        "u64": rng.integers(0, 2**63, 100, dtype=np.uint64),
        "c128": base[:5] + 1j * base[5:10],
        "bools": base > 0,
        "dt64": np.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]"),
        "td64": np.array([1, 2, 3], dtype="timedelta64[ms]"),
        "unicode": np.array(["alpha", "βeta", ""]),
        "bytes_arr": np.array([b"x", b"yz"]),
        "structured": np.array([(1, 2.5, b"ab")], dtype=[("a", "i4"), ("b", "f8"), ("c", "S2")]),
        "zero_d": np.array(3.5),
        "empty": np.empty((0, 3)),
        "nan_inf": np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]),
        "fortran": np.asfortranarray(base),
        "strided_view": base[::3, ::2],
        "transposed": base.T,
        "objects": obj,
        "scalar_f64": np.float64(2.25),
        "scalar_i32": np.int32(-5),
        "big_endian": np.arange(10, dtype=">i4"),
    }
    return values


def _pandas_values() -> dict[str, Any]:
    index = pd.date_range("2024-01-01", periods=6, freq="h", tz="Europe/Paris")
    frame = pd.DataFrame(
        {
            "ints": np.arange(6, dtype=np.int64),
            "floats": [0.5, np.nan, 1.5, 2.5, np.inf, -1.0],
            "strings": ["a", "b", None, "d", "e", "f"],
            "cats": pd.Categorical(
                ["x", "y", "x", "z", "y", "x"], categories=["z", "y", "x"], ordered=True
            ),
            "bools": [True, False, True, True, False, False],
            "when": pd.to_datetime(
                ["2020-01-01", "2021-06-30", None, "1999-12-31", "2000-02-29", "2024-01-01"]
            ),
            "nullable": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
        },
        index=index,
    )
    multi = pd.DataFrame(
        np.arange(12).reshape(4, 3),
        index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"]),
        columns=["p", "q", "r"],
    )
    return {
        "frame": frame,
        "multi": multi,
        "series": pd.Series([1.0, 2.0, np.nan], index=["a", "b", "c"], name="s"),
        "cat_series": pd.Series(pd.Categorical(["lo", "hi", "lo"])),
        "time_series": pd.Series(range(4), index=pd.date_range("2024-03-01", periods=4, freq="D")),
    }


Point = collections.namedtuple("Point", "x y")


def _python_values() -> dict[str, Any]:
    return {
        "number": 42,
        "huge_int": 2**200,
        "neg_zero": -0.0,
        "nan": float("nan"),
        "text": "naïve ☃ text",
        "raw": b"\x00\xffbytes",
        "mutable_raw": bytearray(b"grow me"),
        "nested": {
            "a": [1, (2, 3), {"b": {4, 5}}],
            "c": {frozenset({1, 2}): None},
            7: [[], {}, ()],
        },
        "a_set": {1, "two", (3, 4)},
        "frozen": frozenset({"x", "y"}),
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        "counter": collections.Counter("abracadabra"),
        "deque": collections.deque([1, 2, 3], maxlen=5),
        "point": Point(1, 2),
        "when": datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc),
        "money": decimal.Decimal("1.10"),
        "ratio": fractions.Fraction(3, 7),
        "span": range(3, 30, 4),
        "nothing": None,
        "cplx": 1 + 2j,
    }


def test_round_trip_of_many_types(store: CheckpointStore, nb: NotebookRef) -> None:
    namespace = {**_numpy_values(), **_pandas_values(), **_python_values()}
    ck = store.save(namespace, nb)
    assert ck.verified
    assert ck.body["skipped"] == {}
    assert set(ck.variables) == set(namespace)

    restored = CheckpointStore(store.url).load(nb)  # a fresh instance: nothing cached in memory
    assert restored.failed == {}
    assert set(restored.values) == set(namespace)
    for name, want in namespace.items():
        got = restored.values[name]
        if name in {"ordered", "counter", "deque", "point"}:
            assert type(got) is type(want) and got == want, name
            assert getattr(got, "maxlen", None) == getattr(want, "maxlen", None)
            continue
        assert_same(got, want, name)
    values = restored.values
    assert values["fortran"].flags.f_contiguous
    assert values["zero_d"].ndim == 0
    assert values["big_endian"].dtype.byteorder == ">"
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            assert value.flags.writeable, f"{name} came back read-only"
    # pandas 3 names its classes from the top package; pandas 2 (the last for 3.10) does not.
    frame_type = f"{pd.DataFrame.__module__}.{pd.DataFrame.__qualname__}"
    assert ck.variables["frame"]["type"] == frame_type
    assert ck.variables["f64"]["type"] == "numpy.ndarray"


def test_restored_arrays_are_writeable_and_independent(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    arr = np.arange(1000.0)
    store.save({"arr": arr}, nb)
    first = store.load(nb).values["arr"]
    first[:] = -1  # must not write through to the store or to a second restore
    second = store.load(nb).values["arr"]
    assert_same(second, np.arange(1000.0))
    assert second.flags.writeable


def test_shared_references_survive(store: CheckpointStore, nb: NotebookRef) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(500)
    model = [rng.standard_normal((20, 20)), rng.standard_normal(20), a]
    optimizer = {
        "params": [model[0], model[1]],
        "state": {id(model[0]): {"momentum": np.zeros((20, 20))}},
    }
    items = [1, 2]
    namespace = {
        "a": a,
        "b": a,
        "model": model,
        "optimizer": optimizer,
        "items": items,
        "alias": items,
        "other": [1, 2],
    }
    ck = store.save(namespace, nb)
    groups = [sorted(g["names"]) for g in ck.body["groups"]]
    assert ["a", "b", "model", "optimizer"] in groups
    assert ["alias", "items"] in groups

    v = store.load(nb).values
    assert v["b"] is v["a"]
    assert v["model"][2] is v["a"]
    assert v["optimizer"]["params"][0] is v["model"][0]
    assert v["optimizer"]["params"][1] is v["model"][1]
    assert v["alias"] is v["items"]
    assert v["other"] is not v["items"]
    # A step of the "optimizer" must move the "model": the restore shares memory, not copies.
    v["optimizer"]["params"][0] += 1.0
    assert_same(v["model"][0], model[0] + 1.0)
    assert v["a"].flags.writeable and v["model"][0].flags.writeable


def test_numpy_views_come_back_views_of_the_same_array(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """``X_train = X[:800]`` and friends: the same memory after a restore (and after a
    restore, a save and a restore again), not copies; the array is stored once."""
    X = np.random.default_rng(2).random((1000, 60))
    frozen = X[5:9]
    frozen.flags.writeable = False
    fortran = np.asfortranarray(X[:200, :20])
    views = {
        "train": X[:800],
        "test": X[800:],
        "column": X[:, 3],
        "reversed": X[::-1, ::2],
        "transposed": X.T,
        "row": X[7],
        "nested": X[:800][10:20],
        "frozen": frozen,
        "as_bytes": X.view(np.uint8)[:64],
    }
    namespace = {"X": X, **views, "fortran": fortran, "fortran_part": fortran[1:, 2:]}
    first = store.save(namespace, nb)
    assert first.new_bytes < X.nbytes * 1.2 + fortran.nbytes  # no copy of X stored
    for cycle in range(2):
        back = store.load(nb).values
        for name, view in views.items():
            got = back[name]
            assert_same(got, view)
            assert got.strides == view.strides, name
            assert got.flags.writeable == view.flags.writeable, name
            assert np.shares_memory(got, back["X"]), (cycle, name)
        assert np.shares_memory(back["fortran_part"], back["fortran"])
        back["X"][7, 0] = -1.0  # seen through every view of that row
        assert back["row"][0] == -1.0 and back["transposed"][0, 7] == -1.0
        back["X"][7, 0] = X[7, 0]
        store.save(back, nb)  # the restored views, saved again


def test_pandas_frames_over_an_array_still_share_it_after_a_restore(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """``pd.DataFrame(X, copy=False)``: the frame's block is a view of `X`. pandas pickles a
    block with protocol 5 as a contiguous copy: the restored frame and `X` were two copies."""
    X = np.random.default_rng(3).random((1000, 6))
    namespace = {
        "X": X,
        "left": pd.DataFrame(X[:, :3], copy=False),  # a transposed, strided view of X
        "whole": pd.DataFrame(X, copy=False),
        "col": pd.Series(X[:, 4], copy=False),
    }
    namespace["arr"] = namespace["whole"].to_numpy()
    assert all(np.shares_memory(namespace[n].to_numpy(), X) for n in ("left", "whole", "col"))
    store.save(namespace, nb)
    for cycle in range(2):
        back = store.load(nb).values
        pd.testing.assert_frame_equal(back["left"], namespace["left"])
        pd.testing.assert_frame_equal(back["whole"], namespace["whole"])
        pd.testing.assert_series_equal(back["col"], namespace["col"])
        assert_same(back["arr"], namespace["arr"])
        for name in ("left", "whole", "col", "arr"):
            value = back[name]
            memory = value if isinstance(value, np.ndarray) else value.to_numpy()
            assert np.shares_memory(memory, back["X"]), (cycle, name)
        store.save(back, nb)  # the restored frames, saved again


def test_a_view_nothing_else_holds_is_saved_as_what_it_shows(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """The array under a lone view is nobody else's: only the view's bytes are saved. Two
    views of one array nothing else holds come back over one array."""
    lone = np.arange(1_000_000.0)[10:20]
    scratch = np.arange(1_000_000.0)
    halves = [scratch[:10], scratch[10:20]]
    del scratch
    objects = np.array([1, "a", None, [2]], dtype=object)[1:]  # no memory to share
    ck = store.save({"lone": lone, "objects": objects}, nb)
    assert ck.new_bytes < 100_000  # not the 8 MB array under `lone` (random states aside)
    back = store.load(nb).values
    assert_same(back["lone"], lone)
    assert list(back["objects"]) == list(objects)
    store.save({"halves": halves}, nb)
    a, b = store.load(nb).values["halves"]
    assert_same(a, halves[0]) and assert_same(b, halves[1])
    assert a.base is b.base and a.base.nbytes == 8_000_000


def test_modules_are_recorded_as_imports(store: CheckpointStore, nb: NotebookRef) -> None:
    import os.path as osp

    import numpy.linalg

    namespace = {"np": np, "pd": pd, "osp": osp, "la": numpy.linalg, "json": json, "x": 1}
    ck = store.save(namespace, nb)
    expected = {
        "np": "numpy",
        "pd": "pandas",
        "osp": osp.__name__,
        "la": "numpy.linalg",
        "json": "json",
    }
    assert ck.body["modules"] == expected
    restored = store.load(nb)
    assert restored.modules == expected
    assert restored.values == {"x": 1}
    assert store.load(nb, names=["np"]).modules == {"np": "numpy"}


def test_random_states_come_back(store: CheckpointStore, nb: NotebookRef) -> None:
    random.seed(1234)
    np.random.seed(4321)
    random.random(), np.random.rand(5)  # move both away from their seeded starts
    store.save({"x": 1}, nb)
    expected_py = [random.random() for _ in range(5)]
    expected_np = np.random.rand(5)
    expected_int = random.getrandbits(64)
    # Disturb both generators as a long computation (or a new kernel) would.
    random.seed(999)
    np.random.seed(999)
    restored = store.load(nb)
    assert restored.rng is not None
    # PyTorch's generator too, when another test imported torch in this process.
    torch = ["torch"] if "torch" in sys.modules else []
    assert sorted(restore_rng(restored.rng)) == ["numpy.random", "random", *torch]
    assert [random.random() for _ in range(5)] == expected_py
    assert_same(np.random.rand(5), expected_np)
    assert random.getrandbits(64) == expected_int


def test_selected_names_only(store: CheckpointStore, nb: NotebookRef) -> None:
    namespace = {"a": 1, "b": [2], "c": np.arange(3)}
    ck = store.save(namespace, nb, names=["a", "c", "not_there"])
    assert set(ck.variables) == {"a", "c"}
    restored = store.load(nb, names=["c"])
    assert list(restored.values) == ["c"]
    assert restored.rng is None


# ----------------------------------------------------------------- __main__ code
def test_functions_and_classes_from_main_survive_a_new_process(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Code defined in ``__main__`` (as in a kernel) restored by a fresh interpreter (a new kernel).

    IPython runs cells in a real module registered as ``__main__``; the helper does the same
    with exec. Functions and classes from ``__main__`` are pickled by value; the names their
    bodies use are looked up in the restoring ``__main__``, where the restore puts them back.
    """
    store_dir = str(tmp_path / "store")
    run = [sys.executable, script("main_code.py"), store_dir, str(tmp_path / "nb.ipynb")]
    saved = subprocess.run(
        [*run, "save"], env=subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert saved.returncode == 0, saved.stderr
    report = json.loads(saved.stdout.strip().splitlines()[-1])
    assert report["skipped"] == {}

    loaded = subprocess.run(
        [*run, "load"], env=subprocess_env, capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr
    results = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert results == {
        "failed": {},
        "lambda": 11,
        "closure": 21,
        "method": 17.0,
        "class_identity": True,
        "global_lookup": 110,
        "subclass": "Derived(2)",
        "dataclass": {"lr": 0.1, "epochs": 3},
        "generator_function": [0, 1, 4],
        "decorated": 9,
        # Notebook enums: dill pickled them by name (a new kernel has none), and a restore
        # lost them and every variable saved with them.
        "enums": [True, True, "blue", 5.97e24, True, 6],
    }


# ------------------------------------------------------ skipped and withheld
def _generator() -> Any:
    yield 1


def test_unpicklable_variables_are_skipped_and_reported(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    sock = socket.socket()
    conn = sqlite3.connect(":memory:")
    mm = mmap.mmap(-1, 16)
    try:
        arr = np.arange(10)
        namespace = {
            "gen": _generator(),
            "sock": sock,
            "conn": conn,
            "mm": mm,
            "frame": sys._getframe(),
            "holder": {"arr": arr, "conn": conn},  # picklable alone? no: it holds the connection
            "arr": arr,
            "ok": "fine",
        }
        ck = store.save(namespace, nb)
    finally:
        sock.close()
        conn.close()
        mm.close()
    skipped = ck.body["skipped"]
    assert set(skipped) == {"gen", "sock", "conn", "mm", "frame", "holder"}
    assert skipped["gen"]["type"] == "generator"
    assert skipped["sock"]["type"] == "socket.socket"
    assert skipped["conn"]["type"] == "sqlite3.Connection"
    assert skipped["mm"]["type"] == "mmap.mmap"
    assert skipped["holder"]["type"] == "dict"
    for name, info in skipped.items():
        assert info["reason"].strip(), f"no reason recorded for {name}"
    assert "generator" in skipped["gen"]["reason"]
    assert "sqlite3.Connection" in skipped["holder"]["reason"]
    assert set(ck.variables) == {"arr", "ok"}
    restored = store.load(nb)
    assert set(restored.values) == {"arr", "ok"}
    assert_same(restored.values["arr"], np.arange(10))
    # The listing (what a user sees) reports the skips too.
    [listed] = store.list(nb)
    assert set(listed.body["skipped"]) == set(skipped)


WITHHELD = {
    "password": "hunter2-pw-value",
    "db_password": "pg-pw-value",
    "secret": "s3cr3t-value",
    "api_key": "key-value-123",
    "apiKey": "key-value-456",
    "access_key": "access-value",
    "auth_token": "auth-token-value",
    "github_token": "ghp_" + "a1B2c3D4" * 5,
    "aws_config": "AKIAIOSFODNN7EXAMPLE",
}
NOT_WITHHELD = {
    "tokens": "some ordinary tokens text",
    "tokenizer": "bert-base-uncased",
    "secretary_df": pd.DataFrame({"name": ["Ann"], "desk": [3]}),
    "secretary": "Ann",
    "next_token": 5,
    "n_tokens": 128,
}


def test_credentials_are_withheld_by_default(store: CheckpointStore, nb: NotebookRef) -> None:
    namespace = {**WITHHELD, **NOT_WITHHELD}
    ck = store.save(namespace, nb)
    assert set(ck.body["withheld"]) == set(WITHHELD)
    for name, info in ck.body["withheld"].items():
        assert info["type"] == "str" and info["reason"], name
    assert "AWS" in ck.body["withheld"]["aws_config"]["reason"]
    restored = store.load(nb)
    assert set(restored.values) == set(NOT_WITHHELD)
    for name, want in NOT_WITHHELD.items():
        assert_same(restored.values[name], want, name)
    # Not a byte of any withheld value may reach the store, in any file.
    everything = b"".join(store.backend.read(path) for path in store_files(store.backend))
    for value in WITHHELD.values():
        assert value.encode() not in everything


def test_credentials_included_on_request(store: CheckpointStore, nb: NotebookRef) -> None:
    namespace = {**WITHHELD, **NOT_WITHHELD}
    ck = store.save(namespace, nb, include_credentials=True)
    assert ck.body["withheld"] == {}
    restored = store.load(nb)
    assert set(restored.values) == set(namespace)
    for name, want in WITHHELD.items():
        assert restored.values[name] == want


def test_a_credential_inside_a_container_withholds_the_variable_and_says_where(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    namespace = {"settings": {"password": "inner-pw"}, "password": "outer-pw", "n": 1}
    ck = store.save(namespace, nb)
    assert set(ck.body["withheld"]) == {"password", "settings"}
    assert ck.body["withheld"]["settings"]["where"] == "settings['password']"
    assert "settings['password']" in ck.body["withheld"]["settings"]["reason"]
    assert store.load(nb).values == {"n": 1}


def test_key_environment_is_isolated(_isolated_signing_key: Path) -> None:
    assert "NBCHECKPOINT_KEY" not in os.environ
    assert os.environ["NBCHECKPOINT_KEY_FILE"] == str(_isolated_signing_key)


# ------------------------------------------------ operating-system handles (issue 17)
def test_file_handles_and_processes_are_skipped_with_their_reason(
    store: CheckpointStore, nb: NotebookRef, tmp_path: Path
) -> None:
    import threading

    path = tmp_path / "results.csv"
    with open(path, "w") as closed:
        closed.write("a,b\n1,2\n")
    before = path.read_bytes()
    reading = open(path)  # noqa: SIM115
    raw = open(path, "rb", buffering=0)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    thread = threading.Thread(target=print, name="worker")
    try:
        namespace = {
            "closed": closed,
            "reading": reading,
            "raw": raw,
            "proc": proc,
            "thread": thread,
            "holder": {"out": closed, "n": 1},
            "buf": __import__("io").BytesIO(b"in memory"),
            "ok": [1, 2],
        }
        ck = store.save(namespace, nb)
    finally:
        reading.close()
        raw.close()
    skipped = ck.body["skipped"]
    assert set(skipped) == {"closed", "reading", "raw", "proc", "thread", "holder"}
    name = repr(str(path))
    assert skipped["closed"]["reason"].startswith(f"closed file {name}: file handles are not saved")
    assert skipped["reading"]["reason"].startswith(f"open file {name}: file handles are not saved")
    assert skipped["raw"]["type"] == "_io.FileIO"
    assert skipped["holder"]["reason"].startswith(f"holds closed file {name}")
    assert skipped["proc"]["reason"].startswith(f"subprocess (pid {proc.pid})")
    assert skipped["thread"]["reason"].startswith("thread 'worker'")
    restored = store.load(nb)
    assert set(restored.values) == {"buf", "ok"}
    assert restored.values["buf"].getvalue() == b"in memory"
    assert path.read_bytes() == before


def test_locks_come_back_unlocked(store: CheckpointStore, nb: NotebookRef) -> None:
    import threading

    lock, rlock = threading.Lock(), threading.RLock()
    lock.acquire()
    rlock.acquire()
    try:
        store.save({"lock": lock, "rlock": rlock, "pair": (lock, 1)}, nb)
    finally:
        lock.release()
        rlock.release()
    values = store.load(nb).values
    # Their holder (a thread, or a `with lock:` that a resumed cell enters again) is gone.
    assert values["lock"].acquire(blocking=False)
    assert values["rlock"].acquire(blocking=False)
    assert values["pair"][0] is values["lock"]


def test_a_restore_never_reopens_a_file_an_older_checkpoint_holds(
    store: CheckpointStore, nb: NotebookRef, tmp_path: Path, monkeypatch: Any
) -> None:
    """A checkpoint from a version that let dill save file handles: loading it must not
    open (and with mode 'w', truncate) the user's file."""
    import nbcheckpoint.store.serializer as serializer

    path = tmp_path / "results.csv"
    with open(path, "w") as f:
        f.write("a,b\n1,2\n")
    appending = open(path, "a")  # noqa: SIM115
    try:
        monkeypatch.setattr(serializer, "handle_reason", lambda obj: None)  # the old behaviour
        ck = store.save({"f": f, "appending": appending, "x": 1}, nb)
        monkeypatch.undo()
    finally:
        appending.close()
    assert {"f", "appending"} <= set(ck.variables)  # the old version saved them
    before = path.read_bytes()
    restored = store.load(nb)
    assert restored.values == {"x": 1}
    # (Variables pickled in one group with a refused handle are not restored either.)
    for name in ("f", "appending"):
        assert restored.failed[name].startswith("HandleRefused: "), restored.failed[name]
        assert "results.csv' (mode " in restored.failed[name]
        assert "was not reopened" in restored.failed[name]
    assert path.read_bytes() == before


def test_the_c_unpickler_refuses_to_reopen_files_too(tmp_path: Path) -> None:
    import dill
    import pytest

    from nbcheckpoint.store.handles import HandleRefused
    from nbcheckpoint.store.serializer import deserialize

    path = tmp_path / "results.csv"
    path.write_text("keep me")
    with open(path, "w+") as f:
        f.write("keep me")
        payload = dill.dumps({"f": f})
    for pickler in ("pickle", "dill"):
        with pytest.raises(HandleRefused, match=r"results\.csv"):
            deserialize(payload, [], pickler)
    assert path.read_text() == "keep me"


class _Holder:
    """An instance of a class every variable below may hold: the class is importable, so
    it is pickled by reference and must not join the variables that use it."""

    def __init__(self, item: object) -> None:
        self.item = item


def _groups_of(namespace: dict[str, Any]) -> set[frozenset[str]]:
    from nbcheckpoint.store.serializer import serialize

    snap = serialize(namespace, include_credentials=True, with_rng=False)
    assert not snap.skipped, snap.skipped
    return {frozenset(group.names) for group in snap.groups}


def _shared_namespace(rng: random.Random, trial: int) -> tuple[dict[str, Any], set[frozenset]]:
    """Random nested variables holding items of a common pool here and there, and the
    groups they must come out in: variables joined where their pool items share."""
    base = np.arange(1000.0)
    pool: list[Any] = [
        {"k": trial},  # untracked by the garbage collector: scalars only
        bytearray(b"abc"),
        base,
        base[10:20],  # a view: shares with `base`
        [1, 2],
        _Holder("x"),
        np.ones(3),
    ]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    pool.append(cyclic)
    holder = np.empty(2, dtype=object)  # an array of objects holding the untracked dict
    holder[:] = [pool[0], "text"]
    pool.append(holder)
    sharing = {i: {i} for i in range(len(pool))}
    sharing[2] = sharing[3] = {2, 3}
    sharing[0] = sharing[len(pool) - 1] = {0, len(pool) - 1}
    used: dict[str, set[int]] = {}

    def build(depth: int, name: str) -> Any:
        pick = rng.random()
        if depth == 0 or pick < 0.25:
            if rng.random() < 0.3:
                item = rng.randrange(len(pool))
                used[name].add(item)
                return pool[item]
            return rng.choice([rng.randrange(10**6), f"s{rng.randrange(9)}", 2.5, None])
        parts = [build(depth - 1, name) for _ in range(rng.randrange(1, 4))]
        if pick < 0.45:
            return {f"key{i}": part for i, part in enumerate(parts)}
        if pick < 0.6:
            return (*parts, "t")
        if pick < 0.75:
            return _Holder(parts)
        return parts

    namespace: dict[str, Any] = {}
    for name in [f"v{i}" for i in range(8)]:
        used[name] = set()
        namespace[name] = build(rng.randrange(1, 5), name)
        if rng.random() < 0.2:
            namespace[name] = [namespace[name]]
            namespace[name].append(namespace[name])  # a variable holding itself
    namespace["n1"] = 7
    namespace["n2"] = 7  # the same small int object: immutable, no group needed
    groups = [{name} for name in namespace]
    for a in used:
        reach = set().union(*(sharing[i] for i in used[a]))
        for b in used:
            if reach & used[b]:
                joined = [g for g in groups if a in g or b in g]
                groups = [g for g in groups if g not in joined] + [set().union(*joined)]
    return namespace, {frozenset(g) for g in groups}


def test_variables_are_grouped_exactly_when_they_reach_a_common_object() -> None:
    """The grouping keeps every shared reference and joins nothing else, whatever the depth,
    the container kinds, the cycles, and objects the garbage collector does not track
    (a dict of scalars, a bytearray, NumPy arrays and views): checked against the sharing
    each random namespace was built with, 40 times over."""
    rng = random.Random(11)
    for trial in range(40):
        namespace, expected = _shared_namespace(rng, trial)
        assert _groups_of(namespace) == expected, trial


def test_a_long_list_of_records_is_grouped_apart_from_the_rest() -> None:
    """100k dicts, the shape of a loaded JSON file: the grouping still sees that they share
    nothing with the arrays or `x`, so a change to `x` re-pickles `x` alone, and a restore
    of `x` alone does not unpickle the records."""
    records = [{"id": i, "name": f"n{i}", "tags": [i, i + 1]} for i in range(100_000)]
    lookup = {r["id"]: r for r in records[:1000]}
    arrays = [np.random.default_rng(i).random(1000) for i in range(20)]
    namespace = {"records": records, "lookup": lookup, "arrays": arrays, "x": [3]}
    assert _groups_of(namespace) == {
        frozenset({"records", "lookup"}),
        frozenset({"arrays"}),
        frozenset({"x"}),
    }


def test_a_state_too_large_to_walk_is_one_group_found_without_listing_it(monkeypatch) -> None:
    """Past the walk's bound every variable goes in one group (every shared reference
    kept). The walk sees that from the containers' lengths, before it lists what they
    hold: listing the keys and values of a million dicts took a third of a second."""
    from nbcheckpoint.store import serializer

    listed: list[int] = []
    real = serializer.gc.get_referents

    def get_referents(*objs: Any) -> list[Any]:
        listed.append(len(objs))
        return real(*objs)

    monkeypatch.setattr(serializer.gc, "get_referents", get_referents)
    many = serializer.MAX_WALK // 3
    records = [{"id": i, "name": "n", "score": 0.5} for i in range(many)]
    assert _groups_of({"records": records, "x": [3], "y": np.zeros(3)}) == {
        frozenset({"records", "x", "y"})
    }
    assert max(listed) == 1, listed  # the list itself: its dicts were never listed


def test_frames_that_share_only_their_dtypes_are_grouped_apart() -> None:
    """Every string column of every frame holds the same ``StringDtype`` object (pandas 3),
    and dtypes are never changed and come back equal: sharing one must not make one group
    of all the notebook's frames, which a change to any of them would pickle again."""
    sales = pd.DataFrame({"store": ["north", "south", "north"], "qty": [1.0, 2.0, 3.0]})
    frames = {
        "sales": sales,
        "by_store": sales.groupby("store").sum(),  # pandas 3: the same dtype object
        "kinds": pd.Series(pd.Categorical(["a", "b"])),
        "arr": np.zeros(3),
    }
    frames["also"] = {"view": frames["arr"][1:]}  # a real link: still grouped
    assert _groups_of(frames) == {
        frozenset({"sales"}),
        frozenset({"by_store"}),
        frozenset({"kinds"}),
        frozenset({"arr", "also"}),
    }


_SEEN_GC: list[bool] = []


def _note_gc(value: int) -> int:
    import gc

    _SEEN_GC.append(gc.isenabled())
    if value < 0:
        raise ValueError("a load that fails half way")
    return value


class _NotesGc:
    """Unpickled through ``_note_gc``, which records whether the collector runs."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        return _note_gc, (self.value,)


@pytest.mark.parametrize("enabled", [True, False], ids=["gc on", "gc off"])
def test_unpickling_pauses_the_garbage_collector_and_leaves_it_as_it_was(
    store: CheckpointStore, nb: NotebookRef, enabled: bool
) -> None:
    """A restore makes objects by the hundred thousand; each 700 set off a collection
    (100,000 small dicts: 134 ms with it, 43 ms without)."""
    import gc

    ok = store.save({"a": _NotesGc(1), "records": [{"i": i} for i in range(1000)]}, nb)
    bad = store.save({"b": _NotesGc(-1)}, nb)
    _SEEN_GC.clear()
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        assert store.load(nb, ok.id).values["a"] == 1
        failed = store.load(nb, bad.id)
        assert "b" in failed.failed and "a load that fails half way" in failed.failed["b"]
        assert gc.isenabled() is enabled  # as it was, after a failed load too
    finally:
        gc.enable() if was else gc.disable()
    assert _SEEN_GC == [False, False]


def test_a_notebook_enum_with_its_own_new_is_skipped_with_why(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    """dill pickles such a class by name, which a new kernel does not have: the save said
    nothing and the restore lost it. Now the save skips it, and whatever holds a member."""
    import enum

    class Coin(enum.Enum):
        def __new__(cls, cents: int) -> Coin:
            member = object.__new__(cls)
            member._value_ = cents * 10
            return member

        PENNY = 1

    ck = store.save({"Coin": Coin, "purse": [Coin.PENNY], "other": [1]}, nb)
    assert set(ck.body["skipped"]) == {"Coin", "purse"}
    assert "own __new__" in ck.body["skipped"]["purse"]["reason"]
    assert store.load(nb).values == {"other": [1]}
