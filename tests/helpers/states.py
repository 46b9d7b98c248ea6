"""Deterministic-by-seed checkpoint states that carry their own checksum, for crash tests."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def fingerprint(state: dict[str, Any]) -> str:
    """SHA-256 over every value but ``check``: a restored state must reproduce it exactly."""
    h = hashlib.sha256()
    for name in sorted(state):
        if name == "check":
            continue
        value = state[name]
        h.update(name.encode() + b"=")
        if isinstance(value, np.ndarray):
            h.update(str(value.dtype).encode() + str(value.shape).encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(repr(value).encode())
        h.update(b";")
    return h.hexdigest()


def make_state(
    tag: int, seq: int, rng: np.random.Generator, const: np.ndarray, size: int
) -> dict[str, Any]:
    """A state of about ``3 * size`` float64s: one array unchanged between saves, one random, one compressible."""
    ramp = np.repeat(np.arange(size // 64, dtype=np.float64) * (seq + 1), 64)
    state: dict[str, Any] = {
        "tag": tag,
        "seq": seq,
        "const": const,
        "walk": rng.standard_normal(size),
        "ramp": ramp,
        "log": [f"step {i}" for i in range(seq % 7)],
    }
    state["check"] = fingerprint(state)
    return state


def check_state(values: dict[str, Any]) -> None:
    """Raise AssertionError unless ``values`` is a whole, unaltered state."""
    assert set(values) == {"tag", "seq", "const", "walk", "ramp", "log", "check"}, sorted(values)
    assert fingerprint(values) == values["check"], (
        f"state {values['tag']}/{values['seq']} is altered"
    )
