"""Test utilities for the store suite: deep equality, walking a store's files, helper scripts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HELPERS_DIR = Path(__file__).resolve().parent


def script(name: str) -> str:
    """Path of a helper script in this folder, to run with ``sys.executable``."""
    return str(HELPERS_DIR / name)


def assert_same(got: Any, want: Any, where: str = "value") -> None:
    """Deep equality that also checks types, dtypes, index types and NaN positions.

    A restore that comes back "close enough" (float32 instead of float64, a list
    instead of a tuple, a lost categorical) is a wrong value, so it fails here.
    """
    import numpy as np
    import pandas as pd

    assert type(got) is type(want), f"{where}: type {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        if want.dtype == object:
            for index in np.ndindex(want.shape):
                assert_same(got[index], want[index], f"{where}[{index}]")
        else:
            assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), (
                f"{where}: contents differ"
            )
    elif isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    elif isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want, check_exact=True)
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), f"{where}: {got!r} is not NaN"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def store_files(backend: Any, folder: str = "") -> Iterator[str]:
    """Every file below ``folder`` of a store backend, as backend-relative paths."""
    for name in backend.listdir(folder):
        path = f"{folder}/{name}" if folder else name
        children = backend.listdir(path)
        if children:
            yield from store_files(backend, path)
        elif _is_file(backend, path):
            yield path


def _is_file(backend: Any, path: str) -> bool:
    if backend.local:
        return Path(backend.root, *path.split("/")).is_file()
    return bool(backend.fs.isfile(backend._abs(path)))


def blob_paths(backend: Any) -> list[str]:
    return sorted(p for p in store_files(backend, "blobs"))


def manifest_paths(backend: Any) -> list[str]:
    return sorted(p for p in store_files(backend, "notebooks") if p.endswith(".ckpt"))


def count_hashed_bytes(monkeypatch: Any) -> dict[str, int]:
    """Count the bytes the store fast-hashes or BLAKE3-hashes from now on (``["bytes"]``)."""
    from nbcheckpoint.store import store as store_module

    counted = {"bytes": 0}
    real_fast, real_digest = store_module.fast_hash, store_module.digest

    def fast(view: Any, *a: Any, **kw: Any) -> Any:
        counted["bytes"] += memoryview(view).nbytes
        return real_fast(view, *a, **kw)

    def digest(view: Any, *a: Any, **kw: Any) -> Any:
        counted["bytes"] += memoryview(view).nbytes
        return real_digest(view, *a, **kw)

    monkeypatch.setattr(store_module, "fast_hash", fast)
    monkeypatch.setattr(store_module, "digest", digest)
    return counted
