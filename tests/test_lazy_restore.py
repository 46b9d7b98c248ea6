"""Lazy restore: large buffers mapped, each chunk checked by the pager before the process reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from nbcheckpoint.capture.changes import Scanner
from nbcheckpoint.errors import StoreWriteError, VerificationError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.backends.memory import MemoryBackend
from nbcheckpoint.store.pager import Pager, take_damage, unavailable, untouched
from nbcheckpoint.store.pagerd import IDLE
from nbcheckpoint.store.store import CHUNK_SIZE, CODEC_RAW, HEADER_LEN


def _why_not() -> str | None:
    from nbcheckpoint.store.backends.local import LocalBackend

    return unavailable(LocalBackend(os.getcwd()))


pytestmark = pytest.mark.skipif(
    _why_not() is not None and os.environ.get("CI") != "true",
    reason=f"lazy restore is not available here: {_why_not()}",
)

NB = NotebookRef.from_path("lazy.ipynb")


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _untouched(a: np.ndarray) -> bool:
    return untouched(_address(a), a.nbytes)


def _blob_files(root: Path) -> list[Path]:
    return sorted((root / "blobs").glob("*/*"), key=lambda p: p.stat().st_size)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A checkpoint with a 64 MiB random array, a compressible 80 MiB one and small values."""
    rng = np.random.default_rng(0)
    values = {
        "noise": rng.random(8 << 20),  # 64 MiB, 16 raw chunks
        "ramp": np.arange(10 << 20, dtype=np.int64),  # 80 MiB, compresses: zstd chunks
        "small": np.ones(1000),
        "words": ["a", "b"],
    }
    store = CheckpointStore(str(tmp_path))
    store.save(values, NB)
    return tmp_path, values


def test_restore_maps_large_arrays_and_they_read_back_equal(saved):
    root, want = saved
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    noise, ramp = restored.values["noise"], restored.values["ramp"]
    assert restored.mapped == want["noise"].nbytes + want["ramp"].nbytes
    # Nothing of the large arrays was read at restore.
    assert _untouched(noise) and _untouched(ramp)
    assert restored.values["words"] == ["a", "b"]
    np.testing.assert_array_equal(restored.values["small"], want["small"])
    np.testing.assert_array_equal(noise, want["noise"])
    np.testing.assert_array_equal(ramp, want["ramp"])  # decompressed by the pager
    assert not _untouched(noise)
    # Written like any array, and the store's chunks stay as they were.
    noise[:] = 0.5
    assert float(noise.sum()) == 0.5 * noise.size
    assert CheckpointStore(str(root)).verify() == []


def test_groups_with_no_mapped_buffer_are_unpickled_while_the_pager_answers(saved, monkeypatch):
    """The pager opens the mapped blobs while the small variables are unpickled: only the
    groups that hold a mapped buffer wait for its answer. The variables keep their order."""
    from nbcheckpoint.store import store as store_module

    root, _ = saved
    events: list[str] = []
    real_end, real_deserialize = Pager.map_end, store_module.deserialize

    def map_end(self, ticket):
        events.append("map answered")
        return real_end(self, ticket)

    def deserialize(payload, buffers, pickler):
        loaded = real_deserialize(payload, buffers, pickler)
        events.append("unpickled " + ",".join(sorted(loaded)))
        return loaded

    monkeypatch.setattr(Pager, "map_end", map_end)
    monkeypatch.setattr(store_module, "deserialize", deserialize)
    store = CheckpointStore(str(root))
    saved_order = list(store.list(NB)[-1].manifest.variables)
    restored = store.load(NB, lazy=True)
    assert restored.mapped > 0
    first_map = events.index("map answered")
    before = [e for e in events[:first_map] if e.startswith("unpickled")]
    after = [e for e in events[first_map:] if e.startswith("unpickled")]
    assert before and after
    assert not any("noise" in e or "ramp" in e for e in before)
    assert all("noise" in e or "ramp" in e for e in after)
    assert list(restored.values) == [n for n in saved_order if n in restored.values]


def test_one_chunk_read_loads_that_chunk_only(saved):
    root, want = saved
    noise = CheckpointStore(str(root)).load(NB, lazy=True).values["noise"]
    per_chunk = CHUNK_SIZE // noise.itemsize
    assert noise[3 * per_chunk + 7] == want["noise"][3 * per_chunk + 7]
    assert noise[9 * per_chunk] == want["noise"][9 * per_chunk]
    time.sleep(0.5)  # any read-ahead would have landed by now
    chunks = [noise[i : i + per_chunk] for i in range(0, noise.size, per_chunk)]
    assert [not _untouched(c) for c in chunks] == [i in (3, 9) for i in range(len(chunks))]
    # Reads in order load ahead of the reader, up to the end.
    assert float(noise[: 12 * per_chunk].sum()) == float(want["noise"][: 12 * per_chunk].sum())
    deadline = time.monotonic() + 30
    while _untouched(noise[12 * per_chunk : 13 * per_chunk]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _untouched(noise[12 * per_chunk : 13 * per_chunk])


def test_a_save_of_untouched_restored_arrays_reads_none_of_them(saved):
    root, want = saved
    store = CheckpointStore(str(root))
    restored = store.load(NB, lazy=True)
    ns = dict(restored.values)
    ck = store.save(ns, NB)
    assert ck.manifest.stats.bytes_new == 0
    assert _untouched(ns["noise"]) and _untouched(ns["ramp"])
    # One element edited: that chunk is written, the others stay unread.
    per_chunk = CHUNK_SIZE // 8
    ns["noise"][5 * per_chunk + 1] = -1.0
    ck = store.save(ns, NB)
    assert ck.manifest.stats.bytes_new == CHUNK_SIZE
    assert _untouched(ns["ramp"])
    # The search for the signing key across the written chunk's seams reads the edges of
    # its two neighbours (so they load, and the one after it reads ahead a little); no
    # chunk before them is read, nor the rest.
    assert _untouched(ns["noise"][: 4 * per_chunk]) and _untouched(ns["noise"][12 * per_chunk :])
    back = CheckpointStore(str(root)).load(NB, ck.id).values["noise"]  # read, not mapped
    expected = want["noise"].copy()
    expected[5 * per_chunk + 1] = -1.0
    np.testing.assert_array_equal(back, expected)


def test_a_forked_child_reads_pages_the_parent_never_loaded(saved):
    root, want = saved
    noise = CheckpointStore(str(root)).load(NB, lazy=True).values["noise"]
    with warnings.catch_warnings():
        # (3.12+ warns of fork in a process with threads: the child here only reads memory.)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if np.array_equal(noise, want["noise"]) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _untouched(noise)  # the child's reads filled the child's pages only


def test_store_files_removed_after_the_restore_still_read(saved):
    root, want = saved
    store = CheckpointStore(str(root))
    restored = store.load(NB, lazy=True)
    store.delete(NB, restored.checkpoint.id)
    report = store.gc(grace=0)
    assert report.removed_blobs > 0
    assert _blob_files(root) == []
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])
    np.testing.assert_array_equal(restored.values["ramp"], want["ramp"])


def test_a_missing_or_refused_blob_fails_the_restore_at_once(saved):
    root, _ = saved
    big = _blob_files(root)[-1]
    big.unlink()
    with pytest.raises(VerificationError, match=rf"blob {big.parent.name}\w* it is missing"):
        CheckpointStore(str(root)).load(NB, 1, lazy=True)
    big.symlink_to("/etc/passwd")
    with pytest.raises(VerificationError, match="was refused"):
        CheckpointStore(str(root)).load(NB, 1, lazy=True)


def test_a_truncated_raw_blob_fails_the_restore_at_once(saved):
    root, _ = saved
    raw = [p for p in _blob_files(root) if p.read_bytes()[HEADER_LEN - 1] == CODEC_RAW]
    victim = raw[-1]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size - 1)
    with pytest.raises(VerificationError, match="wrong length"):
        CheckpointStore(str(root)).load(NB, 1, lazy=True)


def test_damage_found_by_the_background_check_names_the_variables(saved):
    root, _ = saved
    raw = [p for p in _blob_files(root) if p.stat().st_size > (1 << 20)]
    victim = raw[-1]
    with open(victim, "r+b") as f:
        f.seek(HEADER_LEN + 1000)
        f.write(b"\xff" * 8)
    take_damage()
    started = time.monotonic()
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    found = []
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline:
        found = take_damage()
        time.sleep(0.02)
    assert len(found) == 1, "the background check did not report the damaged chunk"
    # It waited as after a read, leaving the CPU to the restore that was still unpickling.
    assert time.monotonic() - started >= 0.9 * IDLE
    d = found[0]
    assert d.checkpoint == restored.checkpoint.id
    assert victim.parent.name + victim.name == d.blob
    assert d.why == "its content does not match its hash"
    assert set(d.names) <= {"noise", "ramp"} and d.names
    # Checked twice, then set aside: the next restore says why at once.
    deadline = time.monotonic() + 30
    while victim.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (root / "tmp" / f"damaged-{d.blob}").is_file()
    for lazy in (True, False):  # this process's pager knows; a fresh read finds it set aside
        with pytest.raises(VerificationError, match="was found damaged when read"):
            CheckpointStore(str(root)).load(NB, 1, lazy=lazy)


_READER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from nbcheckpoint.store import CheckpointStore, NotebookRef
    root = Path(sys.argv[1])
    noise = CheckpointStore(str(root)).load(NotebookRef.from_path("lazy.ipynb"), lazy=True).values["noise"]
    print("restored", flush=True)
    for p in (root / "blobs").glob("*/*"):
        if p.stat().st_size > (1 << 20):
            with open(p, "r+b") as f:
                f.seek(100 << 10)
                f.write(b"junk")
    print("sum", float(noise.sum()), flush=True)
    """
)


def test_a_chunk_damaged_after_the_restore_stops_the_read_with_the_reason(saved):
    root, _ = saved
    proc = subprocess.run(
        [sys.executable, "-c", _READER, str(root)], capture_output=True, text=True, timeout=120
    )
    assert "restored" in proc.stdout
    assert "sum" not in proc.stdout, "a damaged chunk was read"
    assert proc.returncode == -7  # SIGBUS
    assert "failed its check when first read" in proc.stderr
    assert "checkpoint #1, noise" in proc.stderr
    # The damaged chunk was set aside: restoring again fails at once, saying why, instead
    # of stopping the next kernel on the same read.
    aside: list[Path] = []
    deadline = time.monotonic() + 30
    while not aside and time.monotonic() < deadline:
        aside = list((root / "tmp").glob("damaged-*"))
        time.sleep(0.05)
    assert aside, "the damaged blob was not set aside"
    h = aside[0].name.removeprefix("damaged-")
    assert not (root / "blobs" / h[:2] / h[2:]).exists()
    for lazy in (True, False):
        with pytest.raises(VerificationError, match=r"blob (\w+) was found damaged when read") as e:
            CheckpointStore(str(root)).load(NB, 1, lazy=lazy)
        named = str(e.value).split("blob ")[1][:12]  # (the reader damaged several)
        assert any(p.name.startswith(f"damaged-{named}") for p in (root / "tmp").iterdir())


def test_the_change_scanner_reads_no_untouched_restored_chunk(saved):
    root, _ = saved
    ns = dict(CheckpointStore(str(root)).load(NB, lazy=True).values)
    scanner = Scanner()
    first = scanner.scan(ns, ["noise", "ramp", "small"]).fingerprints
    assert _untouched(ns["noise"]) and _untouched(ns["ramp"])
    assert scanner.scan(ns, ["noise", "ramp", "small"]).fingerprints == first
    ns["noise"][-1] = 7.0
    after = scanner.scan(ns, ["noise", "ramp", "small"]).fingerprints
    assert after["noise"] != first["noise"]
    assert after["ramp"] == first["ramp"]
    assert _untouched(ns["ramp"])


def test_where_lazy_restore_is_unavailable_it_says_why(monkeypatch, saved):
    assert unavailable(MemoryBackend("memory://lazy-test")) == "the store is not a local folder"
    monkeypatch.setenv("NBCHECKPOINT_LAZY", "0")
    root, want = saved
    store = CheckpointStore(str(root))
    assert unavailable(store.backend) == "turned off (NBCHECKPOINT_LAZY=0)"
    restored = store.load(NB, lazy=True)
    assert restored.mapped == 0
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])


def test_a_freed_restored_array_lets_its_memory_go(saved):
    root, _ = saved
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    assert Pager.any_mapped()
    [pager] = [p for (pid, at), p in Pager._pagers.items() if at == os.path.realpath(root)]

    def blobs_held() -> int:
        fds = Path(f"/proc/{pager.proc.pid}/fd")
        return sum(1 for fd in fds.iterdir() if str(root) in os.path.realpath(fd))

    assert blobs_held() > 0
    del restored
    import gc

    gc.collect()
    assert not Pager.any_mapped()
    # The pager closes the blobs it held for the freed arrays (their disk space can go).
    deadline = time.monotonic() + 30
    while blobs_held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blobs_held() == 0


def test_a_withdrawn_variable_raises_a_clear_error_and_is_not_saved(tmp_path):
    from nbcheckpoint.errors import DamagedData
    from nbcheckpoint.ipython.damage import DamagedVariable, describe, withdraw
    from nbcheckpoint.store.pager import Damage

    damage = Damage(4, ("x", "y", "z"), "ab" * 32, "its content does not match its hash")
    x, y = np.zeros(3), np.ones(3)
    ns = {"x": x, "y": y, "other": 1}
    taken, kept = withdraw(ns, damage, {"x": id(x), "y": id(y) + 1})
    assert (taken, kept) == (["x"], ["y"])
    assert isinstance(ns["x"], DamagedVariable) and ns["y"] is y
    with pytest.raises(DamagedData, match=r"x was restored from checkpoint #4.*blob abababababab"):
        ns["x"].sum()
    with pytest.raises(DamagedData):
        ns["x"] + 1
    assert getattr(ns["x"], "shape", None) is None  # display code asks quietly
    assert "damaged" in repr(ns["x"])
    text = describe(damage, taken, kept)
    assert "checkpoint #4" in text and "x now raise an error" in text and "y were given" in text
    ck = CheckpointStore(str(tmp_path)).save(ns, NB)
    assert "x" in ck.manifest.skipped and "damaged" in str(ck.manifest.skipped["x"])
    assert set(ck.manifest.variables) == {"y", "other"}


def test_a_pager_that_ends_is_replaced(saved):
    root, want = saved
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    [pager] = [p for (pid, at), p in Pager._pagers.items() if at == os.path.realpath(root)]
    first = pager.proc
    first.kill()
    first.wait()
    deadline = time.monotonic() + 30
    while pager.proc is first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pager.proc is not first and pager.proc.poll() is None
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])
    np.testing.assert_array_equal(restored.values["ramp"], want["ramp"])


def test_the_pager_starts_before_the_restore_when_one_is_likely(saved, tmp_path_factory):
    root, want = saved
    store = CheckpointStore(str(root))
    latest = store.read_checkpoint(NB, store.latest_id(NB))
    key = (os.getpid(), os.path.realpath(root))
    assert key not in Pager._pagers
    assert store.prepare_lazy(latest)
    pager = Pager._pagers[key]
    assert pager.alive()
    # The restore uses the pager already running.
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    assert Pager._pagers[key] is pager and restored.mapped > 0
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])
    # Nothing large to map: no pager is started.
    small_root = tmp_path_factory.mktemp("small")
    small = CheckpointStore(str(small_root))
    small.save({"small": np.ones(1000), "words": ["a"]}, NB)
    assert not small.prepare_lazy(small.read_checkpoint(NB, small.latest_id(NB)))
    assert (os.getpid(), os.path.realpath(small_root)) not in Pager._pagers


def test_a_pager_started_ahead_and_never_used_stops(saved, monkeypatch):
    """A kernel that never restores does not keep an idle pager for its whole life."""
    from nbcheckpoint.store import pager as pager_module

    root, want = saved
    store = CheckpointStore(str(root))
    latest = store.read_checkpoint(NB, store.latest_id(NB))
    key = (os.getpid(), os.path.realpath(root))
    monkeypatch.setattr(pager_module, "IDLE_RETIRE", 0.3)
    assert store.prepare_lazy(latest)
    idle = Pager._pagers[key]
    assert idle.proc.wait(timeout=30) is not None  # the process ended
    deadline = time.monotonic() + 30
    while key in Pager._pagers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in Pager._pagers and not idle.alive()
    # A restore afterwards starts another pager and maps as before.
    restored = CheckpointStore(str(root)).load(NB, lazy=True)
    used = Pager._pagers[key]
    assert used is not idle and restored.mapped > 0
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])
    # A pager that served a restore is never stopped for idleness.
    assert not used._retire_if_unused() and used.alive()


def test_a_pager_started_ahead_and_then_used_keeps_serving(saved, monkeypatch):
    from nbcheckpoint.store import pager as pager_module

    root, want = saved
    store = CheckpointStore(str(root))
    key = (os.getpid(), os.path.realpath(root))
    monkeypatch.setattr(pager_module, "IDLE_RETIRE", 1.0)
    assert store.prepare_lazy(store.read_checkpoint(NB, store.latest_id(NB)))
    pager = Pager._pagers[key]
    restored = CheckpointStore(str(root)).load(NB, lazy=True)  # before the second is up
    assert restored.mapped > 0 and _untouched(restored.values["noise"])
    time.sleep(1.5)
    assert pager.alive() and Pager._pagers[key] is pager
    np.testing.assert_array_equal(restored.values["noise"], want["noise"])  # read after it


def test_a_state_with_little_to_map_is_read_whole_without_a_pager(tmp_path):
    """Arrays over 1 MB adding up to under 64 MiB: a pager would cost what it saves."""
    from nbcheckpoint.store import pager as pager_module

    rng = np.random.default_rng(5)
    values = {"a": rng.random(3 << 20), "b": rng.random(3 << 20)}  # 24 MiB each: 48 MiB
    store = CheckpointStore(str(tmp_path))
    store.save(values, NB)
    key = (os.getpid(), os.path.realpath(tmp_path))
    assert not store.prepare_lazy(store.read_checkpoint(NB, store.latest_id(NB)))
    restored = CheckpointStore(str(tmp_path)).load(NB, lazy=True)
    assert restored.mapped == 0 and key not in Pager._pagers
    np.testing.assert_array_equal(restored.values["a"], values["a"])
    np.testing.assert_array_equal(restored.values["b"], values["b"])
    # The same state just over the limit is mapped.
    lower = pager_module.LAZY_TOTAL_MIN
    try:
        pager_module.LAZY_TOTAL_MIN = 40 << 20
        again = CheckpointStore(str(tmp_path)).load(NB, lazy=True)
        assert again.mapped == 2 * values["a"].nbytes and key in Pager._pagers
        np.testing.assert_array_equal(again.values["b"], values["b"])
    finally:
        pager_module.LAZY_TOTAL_MIN = lower


def test_maps_asked_together_are_answered_each_its_own(saved):
    """Maps go to the pager before any answer is awaited; answers find their own map."""
    root, want = saved
    store = CheckpointStore(str(root))
    m = store.read_checkpoint(NB, 1).manifest
    [noise_parts] = [
        parts for g in m.groups for parts in g.buffer_pieces() if len(parts) == 16
    ]  # noise: 16 raw chunks
    pieces = [(h, m.blobs[h]) for h in noise_parts]
    pager = Pager.for_store(store.backend)
    first = pager.map_begin(pieces[:4], 1, ("first",))
    broken = pager.map_begin([("ab" * 32, 100)], 1, ("broken",))  # no such blob
    last = pager.map_begin(pieces[4:], 1, ("last",))
    per_chunk = len(want["noise"]) // 16
    tail = np.frombuffer(pager.map_end(last), dtype=np.float64)
    np.testing.assert_array_equal(tail, want["noise"][4 * per_chunk :])
    with pytest.raises(LookupError, match="it is missing"):
        pager.map_end(broken)
    head = np.frombuffer(pager.map_end(first), dtype=np.float64)
    np.testing.assert_array_equal(head, want["noise"][: 4 * per_chunk])
    assert not pager.waiting


def test_set_aside_moves_only_the_stores_own_files_and_cleanup_takes_them_later(tmp_path):
    from nbcheckpoint.store.backends.local import LocalBackend

    backend = LocalBackend(str(tmp_path / "store"))
    h = "ab" * 32
    blob = tmp_path / "store" / "blobs" / h[:2] / h[2:]
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"damaged")
    os.utime(blob, (1, 1))  # an old blob: set aside, it is dated now
    assert backend.set_aside(f"blobs/{h[:2]}/{h[2:]}", f"damaged-{h}")
    aside = tmp_path / "store" / "tmp" / f"damaged-{h}"
    assert aside.read_bytes() == b"damaged" and not blob.exists()
    assert backend.cleanup_tmp(3600) == 0  # kept a while: restores say why they fail
    os.utime(aside, (1, 1))
    assert backend.cleanup_tmp(3600) == 1 and not aside.exists()
    # A link where a blob should be is left alone, and what it points at is never moved.
    outside = tmp_path / "outside.txt"
    outside.write_text("yours")
    blob.symlink_to(outside)
    assert not backend.set_aside(f"blobs/{h[:2]}/{h[2:]}", f"damaged-{h}")
    assert blob.is_symlink() and outside.read_text() == "yours"
    assert not backend.set_aside("blobs/cd/missing", f"damaged-{'cd' * 32}")
    # Something else where the set-aside file goes: a clear error, the blob stays.
    blob.unlink()
    blob.write_bytes(b"damaged again")
    (tmp_path / "store" / "tmp" / f"damaged-{h}").mkdir()
    with pytest.raises(StoreWriteError):
        backend.set_aside(f"blobs/{h[:2]}/{h[2:]}", f"damaged-{h}")
    assert blob.read_bytes() == b"damaged again"


def test_the_opener_walks_each_folder_once_and_refuses_links(tmp_path):
    from nbcheckpoint.errors import StoreEntryRefused
    from nbcheckpoint.store.backends.local import LocalBackend

    store = tmp_path / "store"
    (store / "blobs" / "ab").mkdir(parents=True)
    (store / "blobs" / "ab" / "one").write_bytes(b"1")
    (store / "blobs" / "ab" / "two").write_bytes(b"22")
    (store / "blobs" / "ab" / "link").symlink_to(store / "blobs" / "ab" / "one")
    backend = LocalBackend(str(store))
    walked = []
    real_walk = backend._walk
    backend._walk = lambda parts, *a, **k: walked.append(tuple(parts)) or real_walk(parts, *a, **k)
    with backend.opener() as open_file:
        sizes = []
        for name in ("one", "two"):
            fd, size = open_file(f"blobs/ab/{name}")
            os.close(fd)
            sizes.append(size)
        with pytest.raises(StoreEntryRefused):
            open_file("blobs/ab/link")
    assert sizes == [1, 2]
    assert walked == [("blobs", "ab")]


def test_tensors_and_frames_come_back_mapped_and_whole(tmp_path, monkeypatch):
    """PyTorch parameters with their optimizer, pandas, Arrow and polars columns: mapped."""
    from nbcheckpoint.store import pager as pager_module

    monkeypatch.setattr(pager_module, "LAZY_TOTAL_MIN", 0)  # a small state, mapped all the same
    torch = pytest.importorskip(
        "torch",
        reason="PyTorch is installed for the tests on Python 3.11 on x86_64 only"
        if sys.version_info[:2] != (3, 11)
        else "PyTorch is not installed: `make test` installs it (pyproject.toml, test extra)",
    )
    import pandas as pd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 512))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1024)).sum().backward()
    opt.step()
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.random(300_000), "k": np.arange(300_000)})
    values: dict[str, object] = {"model": model, "opt": opt, "frame": frame}
    pa = pytest.importorskip("pyarrow", reason="pyarrow is a test dependency")
    pl = pytest.importorskip("polars", reason="polars is a test dependency")
    values["table"] = pa.table({"y": rng.random(300_000)})
    values["pf"] = pl.DataFrame({"z": rng.random(300_000)})
    store = CheckpointStore(str(tmp_path))
    store.save(values, NB)

    restored = CheckpointStore(str(tmp_path)).load(NB, lazy=True)
    back = restored.values
    # Weights and Adam's moments (4 MiB and 2 MiB each) and the columns (2.4 MB each).
    assert restored.mapped >= 3 * (4 << 20)
    m2, o2 = back["model"], back["opt"]
    assert _untouched(m2[0].weight.detach().numpy())
    for (name, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), name
    params = list(m2.parameters())
    assert all(p.requires_grad for p in params)
    assert all(a is b for a, b in zip(o2.param_groups[0]["params"], params))
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(o2.state_dict()["state"][0][key], value), key
    pd.testing.assert_frame_equal(back["frame"], frame)
    assert back["table"].equals(values["table"])
    assert back["pf"].equals(values["pf"])
    # Training goes on in the mapped memory; the store's chunks stay as they were.
    m2(torch.randn(4, 1024)).sum().backward()
    o2.step()
    assert not torch.equal(m2[0].weight, model[0].weight)
    assert CheckpointStore(str(tmp_path)).verify() == []
