"""Columnar and sparse data from other libraries: bytes out of band, chunked, deduplicated.

PyArrow tables, pandas columns backed by Arrow, SciPy sparse matrices and polars frames
all come back equal, with their data handed to the store as buffers (not copied into the
pickle), so a re-save after one column changed writes about that column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.serializer import serialize

N = 400_000


def _arrow_table():
    pa = pytest.importorskip("pyarrow")
    return pa.table({"x": np.arange(N, dtype=np.float64), "s": [f"row {i}" for i in range(N)]})


def _pandas_arrow():
    pytest.importorskip("pyarrow")
    return pd.DataFrame(
        {
            "s": pd.array([f"row {i}" for i in range(N)], dtype="string[pyarrow]"),
            "x": np.arange(N, dtype=np.float64),
        }
    )


def _sparse():
    sparse = pytest.importorskip("scipy.sparse")
    return sparse.random(3000, 3000, density=0.05, format="csr", random_state=0)


def _polars_frame():
    pl = pytest.importorskip("polars")
    return pl.DataFrame(
        {
            "x": np.arange(N, dtype=np.float64),
            "s": [f"row {i}" for i in range(N)],
            "level": pl.Series(["lo", "hi"] * (N // 2), dtype=pl.Enum(["lo", "hi"])),
            "tag": pl.Series(["a", "b", "c", "d"] * (N // 4), dtype=pl.Categorical),
        }
    )


def _polars_series():
    pl = pytest.importorskip("polars")
    return pl.Series("ids", np.arange(N, dtype=np.int64))


def _equal(a: object, b: object) -> bool:
    if type(a).__module__.startswith("scipy"):
        return type(a) is type(b) and (a != b).nnz == 0  # type: ignore[operator,attr-defined]
    if type(a).__module__.startswith("polars"):
        same = a.equals(b)  # type: ignore[attr-defined]
        schema = a.schema if hasattr(a, "schema") else (a.name, a.dtype)  # type: ignore[attr-defined]
        back = b.schema if hasattr(b, "schema") else (b.name, b.dtype)  # type: ignore[attr-defined]
        return bool(same) and schema == back
    return bool(a.equals(b))  # type: ignore[attr-defined]


MAKERS = {
    "pyarrow table": _arrow_table,
    "pandas with Arrow strings": _pandas_arrow,
    "scipy sparse": _sparse,
    "polars DataFrame": _polars_frame,
    "polars Series": _polars_series,
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_data_goes_out_of_band_and_comes_back_equal(
    kind: str, store: CheckpointStore, nb: NotebookRef
) -> None:
    value = MAKERS[kind]()
    snap = serialize({"v": value})
    group = snap.groups[0]
    data = sum(b.nbytes for b in group.buffers)
    assert data > 1_000_000 and len(group.payload) < 20_000, (len(group.payload), data)
    store.save({"v": value}, nb)
    back = CheckpointStore(store.url).load(nb).values["v"]
    assert _equal(value, back)


def test_a_polars_column_changed_rewrites_about_that_column(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({f"c{i}": np.random.default_rng(i).standard_normal(N) for i in range(6)})
    store.save({"frame": frame}, nb)
    changed = frame.with_columns(pl.col("c2") + 1.0)  # a new frame sharing five columns
    second = store.save({"frame": changed}, nb)
    column = N * 8
    assert second.new_bytes <= column * 1.3, (second.new_bytes, column)
    assert _equal(CheckpointStore(store.url).load(nb).values["frame"], changed)


def test_a_polars_column_arrow_cannot_carry_is_pickled_by_polars_or_skipped_with_reason() -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"o": pl.Series([object(), 1], dtype=pl.Object), "x": [1, 2]})
    snap = serialize({"frame": frame, "ok": 1})
    # polars itself cannot pickle Object columns: skipped and said why, the rest saved.
    assert "Object" in snap.skipped["frame"]["reason"]
    assert [g.names for g in snap.groups] == [["ok"]]


def test_comparing_checkpoints_shows_polars_shapes_and_column_types(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    pl = pytest.importorskip("polars")
    from nbcheckpoint.store.diff import diff_checkpoints

    a = store.save({"frame": pl.DataFrame({"x": [1, 2], "s": ["a", "b"]})}, nb)
    b = store.save({"frame": pl.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})}, nb)
    (row,) = diff_checkpoints(store, nb, a.id, b.id).rows
    assert row.notes == (
        "shape (2, 2) -> (3, 2)",
        "dtype Int64 x1, String x1 -> Float64 x1, String x1",
    )
