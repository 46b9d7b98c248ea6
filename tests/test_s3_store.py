"""The checkpoint store over S3, against a real S3 API server (moto) on 127.0.0.1.

Everything reaches the server through the standard AWS environment only
(``AWS_ENDPOINT_URL``, dummy credentials, a region): no option in nbcheckpoint names it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

from nbcheckpoint import cli
from nbcheckpoint.errors import StoreError, StoreWriteError, UntrustedCheckpoint
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey, load_key
from nbcheckpoint.store.backends import s3 as s3_module
from nbcheckpoint.store.backends.generic import _FsFailure, _transient
from nbcheckpoint.store.backends.s3 import S3Backend
from nbcheckpoint.store.identity import ENV_NOTEBOOK_ID, project_path
from nbcheckpoint.store.store import UNLIMITED, digest

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true"
    and (importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None),
    reason="needs nbcheckpoint[s3] and moto[server] (make test installs both; under CI they must be there)",
)

from s3_server import ACCESS_KEY, SECRET_KEY, S3Server, free_port, shared_server  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = shared_server()
    with server.activate():
        yield server


@pytest.fixture
def url(s3: S3Server) -> str:
    return s3.new_store_url()


def _const(data: bytes) -> Any:
    return lambda f: f.write(data)


def _blob_is_whole(name: str, body: bytes) -> bool:
    """A stored blob decodes to bytes whose BLAKE3 is its name: nothing half-written."""
    header, rest = body[:6], body[6:]
    if header[:5] != b"NBCB\x01":
        return False
    raw = rest if header[5] == 0 else zstandard.ZstdDecompressor().decompress(rest)
    return digest(raw) == name.replace("/", "")


# --------------------------------------------------------------- the basics
def test_the_endpoint_comes_from_the_environment(s3: S3Server, url: str) -> None:
    backend = S3Backend(url)
    backend.replace("hello", b"world")
    # The object is in moto, which only AWS_ENDPOINT_URL points at.
    assert s3.objects(url) == {"hello": b"world"}


def test_fsspec_settings_win_over_the_aws_environment(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": "http://127.0.0.1:9"})
    assert S3Backend("s3://bucket/prefix").fs.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    assert S3Backend("s3://bucket/prefix").fs.endpoint_url == s3.endpoint


def test_moto_enforces_if_none_match_for_puts_and_multipart_uploads(s3: S3Server, url: str) -> None:
    backend = S3Backend(url)
    assert backend.exclusive_writes  # the probe saw the second create refused
    fs = backend.fs
    path = f"{backend.root}/direct"
    with fs.open(path, "xb") as f:
        f.write(b"one")
    with pytest.raises(FileExistsError), fs.open(path, "xb") as f:
        f.write(b"two")
    big = os.urandom(11 * MiB)
    with fs.open(f"{path}-big", "xb", block_size=5 * MiB) as f:
        f.write(big)
    with pytest.raises(FileExistsError), fs.open(f"{path}-big", "xb", block_size=5 * MiB) as f:
        f.write(big[::-1])
    assert fs.cat_file(path) == b"one" and fs.cat_file(f"{path}-big") == big
    assert backend.listdir("tmp") == [], "the probe object was left behind"


def test_round_trip_list_load_verify_gc_and_the_command_line(
    s3: S3Server, url: str, nb: NotebookRef, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(300_000)
    state: dict[str, Any] = {"big": big, "ints": np.arange(100_000), "small": {"k": [1, 2]}}
    store = CheckpointStore(url)
    assert isinstance(store.backend, S3Backend)
    assert store.save(state, nb).id == 1
    assert store.save({**state, "small": "changed", "big": big * 2}, nb).id == 2

    fresh = CheckpointStore(url)  # nothing cached: everything comes from the server
    assert [c.id for c in fresh.list(nb)] == [1, 2]
    restored = fresh.load(nb)
    assert restored.checkpoint.id == 2 and restored.values["small"] == "changed"
    np.testing.assert_array_equal(restored.values["big"], big * 2)
    np.testing.assert_array_equal(fresh.load(nb, 1).values["big"], big)
    assert fresh.verify() == []
    keys = set(s3.objects(url))
    assert f"notebooks/{nb.key}/manifests/00000001.ckpt" in keys
    assert any(k.startswith("blobs/") for k in keys)

    # Removing #1 orphans the array only it used; gc takes it, #2 still verifies.
    fresh.delete(nb, 1)
    # S3 times have one-second steps and gc spares blobs from its own marker's second, so
    # a gc in the second of the saves may take nothing yet: gc again until one takes it.
    deadline = time.monotonic() + 30
    report = fresh.gc(grace=0)
    while report.removed_blobs == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
        report = fresh.gc(grace=0)
    assert report.removed_blobs >= 1
    assert CheckpointStore(url).verify() == []
    np.testing.assert_array_equal(CheckpointStore(url).load(nb).values["big"], big * 2)

    capsys.readouterr()
    assert cli.main(["list", "--store", url]) == 0
    out = capsys.readouterr().out
    assert nb.key in out and "#2" in out and "#1 " not in out
    assert cli.main(["verify", "--store", url]) == 0


MEMORY_PROBE = textwrap.dedent(
    """
    import os, sys

    def status(field):  # VmRSS now, VmHWM the peak (ru_maxrss would include the parent's)
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    from nbcheckpoint.store.backends.s3 import S3Backend

    url, size = sys.argv[1], int(sys.argv[2])
    backend = S3Backend(url, default_block_size=5 << 20)
    backend.create("blobs/warm-up", lambda f: f.write(b"x"))  # imports, connection, probe
    data = os.urandom(size)
    before = status("VmRSS")
    backend.create("blobs/big", lambda f: f.write(memoryview(data)))
    print(status("VmHWM") - before)
    """
)


def test_a_large_blob_goes_up_in_parts_without_a_second_copy_in_memory(
    s3: S3Server, url: str, subprocess_env: dict[str, str]
) -> None:
    size = 48 * MiB
    # A process of its own: the server's memory (it runs in this one) must not count.
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, url, str(size)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    grew = int(out.stdout.split()[-1])
    # About two 5 MiB blocks in flight; one write of the whole buffer would add 2 x 48 MiB.
    assert grew < 32 * MiB, f"memory grew by {grew / MiB:.1f} MiB during the upload"
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    head = s3.client().head_object(Bucket=bucket, Key=f"{prefix}/blobs/big")
    assert head["ContentLength"] == size
    assert "-" in head["ETag"], "not a multipart upload"
    backend = S3Backend(url)
    data = backend.read("blobs/big")
    assert len(data) == size
    with backend.open_read("blobs/big") as f:
        assert f.read(5) == data[:5]


def test_reads_use_ranged_gets_across_blocks_and_seek_like_a_file(url: str) -> None:
    backend = S3Backend(url)
    backend._read_block = 64 << 10  # small blocks, so reads cross them
    data = os.urandom(300_000)
    backend.replace("obj", data)
    with backend.open_read("obj") as f:
        assert f.read(6) == data[:6]
        f.seek((64 << 10) - 2)
        assert f.read(5) == data[(64 << 10) - 2 : (64 << 10) + 3]  # across a block boundary
        assert f.seek(0, os.SEEK_END) == len(data)
        assert f.read(1) == b""
        f.seek(10)
        out = bytearray(len(data) - 10)
        got = 0
        while got < len(out):
            n = f.readinto(memoryview(out)[got:])
            assert 0 < n <= 64 << 10
            got += n
        assert bytes(out) == data[10:] and f.read(1) == b""
        f.seek(299_990)
        assert f.read() == data[299_990:]
    with pytest.raises(FileNotFoundError), backend.open_read("missing"):
        pass


def test_an_error_inside_the_writer_publishes_nothing(s3: S3Server, url: str) -> None:
    backend = S3Backend(url, default_block_size=5 * MiB)

    def fails_after_a_part(f: Any) -> None:
        f.write(os.urandom(12 * MiB))  # two parts are already on the server
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError, match="the writer failed"):
        backend.create("blobs/half", fails_after_a_part)
    assert not backend.exists("blobs/half")
    assert s3.unfinished_uploads(url) == [], "the multipart upload was not aborted"
    assert backend.create("blobs/half", _const(b"whole")) is True


# ------------------------------------------------------- concurrent writers
@pytest.mark.parametrize("instances", ["shared", "separate"])
def test_threads_saving_at_once_lose_nothing(url: str, nb: NotebookRef, instances: str) -> None:
    shared = CheckpointStore(url)
    acked: dict[int, tuple[int, int]] = {}
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(tag: int) -> None:
        store = shared if instances == "shared" else CheckpointStore(url)
        start.wait()
        try:
            for seq in range(6):
                ck = store.save(
                    {"tag": tag, "seq": seq, "data": np.full(5000, tag * 100 + seq)},
                    nb,
                    keep=UNLIMITED,  # all 24 stay (by default only the newest 20 would)
                )
                with lock:
                    assert ck.id not in acked, f"#{ck.id} acknowledged twice"
                    acked[ck.id] = (tag, seq)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    reader = CheckpointStore(url)
    assert [c.id for c in reader.list(nb)] == sorted(acked) == list(range(1, 25))
    for ident, (tag, seq) in acked.items():
        values = reader.load(nb, ident).values
        assert (values["tag"], values["seq"]) == (tag, seq)
        assert values["data"][0] == tag * 100 + seq
    assert reader.verify() == []


PROCESS_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from nbcheckpoint.store import CheckpointStore, NotebookRef
    from nbcheckpoint.store.store import UNLIMITED

    url, key, path, tag, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    store, nb = CheckpointStore(url), NotebookRef.from_key(key, path)
    while not os.path.exists(go):
        time.sleep(0.005)
    for seq in range(8):
        state = {"tag": tag, "seq": seq, "data": np.full(5000, tag * 100 + seq)}
        ck = store.save(state, nb, keep=UNLIMITED)
        print(ck.id, seq, flush=True)
    """
)


def test_processes_saving_at_once_lose_nothing(
    url: str, nb: NotebookRef, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    load_key()  # create the shared key file before the writers race to
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_WRITER, url, nb.key, nb.path, str(tag), str(go)],
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in range(3)
    ]
    time.sleep(1.0)  # let them import, so that they start saving together
    go.touch()
    acked: dict[int, tuple[int, int]] = {}
    for tag, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        for row in out.strip().splitlines():
            ident, seq = map(int, row.split())
            assert ident not in acked, f"#{ident} acknowledged by two writers"
            acked[ident] = (tag, seq)
    reader = CheckpointStore(url)
    assert [c.id for c in reader.list(nb)] == sorted(acked) == list(range(1, 25))
    for ident, (tag, seq) in acked.items():
        values = reader.load(nb, ident).values
        assert (values["tag"], values["seq"]) == (tag, seq)
    assert reader.verify() == []


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-match", "checked-fallback"])
def test_racing_creates_of_one_name_have_exactly_one_winner(url: str, conditional: bool) -> None:
    backends = [S3Backend(url) for _ in range(4)]
    for b in backends:
        if conditional:
            assert b.exclusive_writes
        else:
            b._exclusive = False  # as on a store that ignores If-None-Match
    for round_ in range(8):
        barrier = threading.Barrier(len(backends))
        won: dict[int, bool] = {}

        def race(i: int, name: str, barrier: threading.Barrier, won: dict[int, bool]) -> None:
            barrier.wait()
            won[i] = backends[i].create(name, _const(f"writer {i} ".encode() * 1000))

        threads = [
            threading.Thread(target=race, args=(i, f"race/{round_}", barrier, won))
            for i in range(len(backends))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [i for i, w in won.items() if w]
        assert len(won) == len(backends) and len(winners) == 1, won
        assert backends[0].read(f"race/{round_}") == f"writer {winners[0]} ".encode() * 1000


def test_writers_with_retention_and_a_concurrent_gc_leave_a_store_that_verifies(
    url: str, nb: NotebookRef
) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(tag: int) -> None:
        store = CheckpointStore(url)
        try:
            for seq in range(6):
                data = np.random.default_rng(tag * 10 + seq).standard_normal(20_000)
                store.save({"tag": tag, "seq": seq, "data": data}, nb, keep=3)
        except BaseException as e:
            errors.append(e)

    def collector() -> None:
        store = CheckpointStore(url)
        try:
            while not stop.is_set():
                store.gc()
        except BaseException as e:
            errors.append(e)

    writers = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    gc_thread.join(timeout=60)
    assert errors == []
    reader = CheckpointStore(url)
    assert reader.verify() == []
    listed = reader.list(nb)
    assert 3 <= len(listed) <= 6
    for ck in listed:
        assert reader.load(nb, ck.id).values["data"].shape == (20_000,)


# ------------------------------------------------------------ a writer killed
KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nbcheckpoint.store import CheckpointStore, NotebookRef

    import nbcheckpoint.store.store as store_module
    from nbcheckpoint.store.backends.s3 import S3Backend

    store_module.CHUNK_MIN = 1 << 40  # one 64 MiB blob: an upload in many parts
    url, key, path = sys.argv[1:4]
    store = CheckpointStore(url, compress=False)
    store.backend = S3Backend(url, default_block_size=5 << 20)  # many parts, quickly
    big = np.random.default_rng(1).standard_normal(8 << 20)  # 64 MiB
    print("saving", flush=True)
    store.save({"marker": "second", "big": big}, NotebookRef.from_key(key, path))
    print("saved", flush=True)
    """
)


def test_a_writer_killed_mid_upload_leaves_nothing_partial(
    s3: S3Server, url: str, nb: NotebookRef, subprocess_env: dict[str, str]
) -> None:
    store = CheckpointStore(url)
    store.save({"marker": "first", "small": np.arange(1000)}, nb)
    before = s3.objects(url)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url, nb.key, nb.path],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bucket = url.removeprefix("s3://").partition("/")[0]
        client = s3.client()

        def parts_sent() -> int:
            uploads = s3.unfinished_uploads(url)
            if not uploads:
                return 0
            u = uploads[0]
            parts = client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
            return len(parts.get("Parts", []))

        deadline = time.monotonic() + 60
        while parts_sent() < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the upload never got going"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    after = s3.objects(url)
    new = {k: v for k, v in after.items() if k not in before}
    # Only whole blobs may have appeared (the small pickle went up before the array),
    # and the dead writer's lease; no manifest, no half of the array.
    leases = [k for k in new if k.startswith("leases/")]
    assert len(leases) == 1 and leases[0].endswith(".save"), sorted(new)
    blobs = {k: v for k, v in new.items() if k not in leases}
    assert all(k.startswith("blobs/") for k in blobs), sorted(new)
    assert all(_blob_is_whole(k.removeprefix("blobs/"), v) for k, v in blobs.items())
    reader = CheckpointStore(url)
    assert [c.id for c in reader.list(nb)] == [1]
    assert reader.load(nb).values["marker"] == "first"
    assert reader.verify() == []
    # The unfinished upload is invisible; cleanup aborts it once it is older than the grace.
    assert len(s3.unfinished_uploads(url)) == 1
    assert S3Backend(url).cleanup_tmp(max_age=0) >= 1
    assert s3.unfinished_uploads(url) == []
    # gc spares what is not older than its own marker on the store's clock, and S3 times
    # have one-second steps: blobs written in the marker's second wait for a later gc.
    deadline = time.monotonic() + 30
    reader.gc(grace=0)
    while set(s3.objects(url)) != set(before) and time.monotonic() < deadline:
        time.sleep(0.25)
        reader.gc(grace=0)
    assert set(s3.objects(url)) == set(before)
    assert CheckpointStore(url).load(nb).values["marker"] == "first"


# ------------------------------------------------------- passing failures
def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def _wrapped(inner: Exception) -> OSError:
    outer = OSError(5, str(inner))
    outer.__cause__ = inner  # as s3fs re-raises botocore's errors
    return outer


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: ConnectionResetError("reset by peer"), True),
        (lambda: TimeoutError("timed out"), True),
        (lambda: _endpoint_error(), True),
        (lambda: _wrapped(_client_error("SlowDown", 503)), True),
        (lambda: _wrapped(_client_error("InternalError", 500)), True),
        (lambda: _wrapped(_client_error("AccessDenied", 403)), False),
        (lambda: FileNotFoundError("gone"), False),
        (lambda: PermissionError("denied"), False),
        (lambda: ValueError("bug"), False),
    ],
    ids=["reset", "timeout", "endpoint", "503", "500", "403", "missing", "denied", "bug"],
)
def test_which_failures_count_as_passing(make: Any, expected: bool) -> None:
    assert _transient(make()) is expected


def _endpoint_error() -> Exception:
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def test_reads_are_retried_with_backoff(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = S3Backend(url, backoff=0.01)
    backend.replace("x", b"data")
    real = backend.fs._call_s3
    calls: list[str] = []

    async def flaky(method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "get_object":  # a read is one ranged GET
            calls.append(method)
            if len(calls) <= 2:
                raise _endpoint_error()
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(backend.fs, "_call_s3", flaky)
    assert backend.read("x") == b"data" and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(backend, "attempts", 2)
    with pytest.raises(StoreError, match=r"did not answer.*tried 2 times"):
        backend.read("x")


def test_a_create_whose_answer_was_lost_is_checked_not_sent_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = S3Backend(url, backoff=0.01)
    assert backend.exclusive_writes  # probe before the upload is wrapped
    real_upload = backend._upload
    sent: list[str] = []

    def upload_then_lose_the_answer(final: str, *args: Any) -> None:
        real_upload(final, *args)
        sent.append(final)
        if len(sent) == 1:
            raise _FsFailure(ConnectionResetError("connection lost before the answer"))

    monkeypatch.setattr(backend, "_upload", upload_then_lose_the_answer)
    assert backend.create("manifests/1.ckpt", _const(b"mine")) is True
    assert len(sent) == 1, "a create that may have succeeded was sent again"
    assert backend.read("manifests/1.ckpt") == b"mine"

    # The same, but what is there now is another writer's: the create reports it lost.
    other = S3Backend(url)
    tries: list[str] = []

    def lose_the_connection_while_another_writer_wins(final: str, *args: Any) -> None:
        tries.append(final)
        other.create("manifests/2.ckpt", _const(b"theirs"))
        raise _FsFailure(ConnectionResetError("connection lost"))

    monkeypatch.setattr(backend, "_upload", lose_the_connection_while_another_writer_wins)
    assert backend.create("manifests/2.ckpt", _const(b"mine")) is False
    assert len(tries) == 1 and backend.read("manifests/2.ckpt") == b"theirs"


def test_a_store_that_is_down_fails_the_save_quickly_and_clearly(nb: NotebookRef) -> None:
    url = "s3://nbcheckpoint-test/down"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = CheckpointStore(url)
    store.backend = S3Backend(url, endpoint_url=dead, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(StoreError, match="did not answer") as err:
        store.save({"x": 1}, nb)
    assert time.monotonic() - started < 15
    assert url in str(err.value)
    with pytest.raises(StoreWriteError, match="tried 4 times"):
        store.backend.replace("x", b"1")


# ------------------------------------------------------------------ aging
def test_touch_renews_the_age_of_an_object_that_gc_would_find_old(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "RENEW_AFTER", 0.5)
    backend = S3Backend(url)
    backend.create("blobs/ab/cdef", _const(b"NBCB\x01\x00data"))
    old = backend.mtime("blobs/ab/cdef")
    time.sleep(1.2)  # S3 keeps whole seconds
    backend.touch("blobs/ab/cdef")
    assert backend.mtime("blobs/ab/cdef") > old
    assert backend.read("blobs/ab/cdef") == b"NBCB\x01\x00data"


# ---------------------------------------------------------- secrets and names
def test_credentials_are_never_written_to_the_store(
    s3: S3Server, url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(url)
    ck = store.save({"x": np.arange(10), "label": "run"}, nb)
    store.set_status(nb, ck.id, "interrupted")
    store.pin(nb, ck.id)
    stored = s3.objects(url)
    assert any("/manifests/" in k for k in stored)
    for key, body in stored.items():
        assert SECRET_KEY.encode() not in body, key
        assert ACCESS_KEY.encode() not in body, key


def test_the_same_notebook_in_another_checkout_has_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "machine-a" / "home" / "ann" / "proj"
    b = tmp_path / "machine-b" / "scratch" / "clone"
    for root in (a, b):
        (root / "notebooks").mkdir(parents=True)
    (a / "pyproject.toml").touch()
    (b / ".git").mkdir()
    key_a = NotebookRef.from_path(str(a / "notebooks" / "train.ipynb")).key
    key_b = NotebookRef.from_path(str(b / "notebooks" / "train.ipynb")).key
    assert key_a == key_b and key_a.startswith("train-")
    assert project_path(str(b / "notebooks" / "train.ipynb")) == "notebooks/train.ipynb"
    # Another place in the project, or another name, is another notebook.
    assert NotebookRef.from_path(str(a / "train.ipynb")).key != key_a
    assert NotebookRef.from_path(str(a / "notebooks" / "eval.ipynb")).key != key_a
    # The nearest marker wins; .nbcheckpoint-root marks a root that has no other marker.
    (a / "notebooks" / ".nbcheckpoint-root").touch()
    assert project_path(str(a / "notebooks" / "train.ipynb")) == "train.ipynb"
    # An explicit id overrides the path, from the environment or a setting.
    from nbcheckpoint.ipython.identity import notebook_ref

    ns = {"__session__": str(a / "notebooks" / "train.ipynb")}
    assert notebook_ref(ns).key != "team-train"
    monkeypatch.setenv(ENV_NOTEBOOK_ID, "team-train")
    assert notebook_ref(ns).key == "team-train"
    assert notebook_ref(ns, notebook_id="other id").key.startswith("other_id-")


def test_a_checkpoint_signed_elsewhere_is_refused_with_how_to_provide_the_key(
    url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = SigningKey(os.urandom(32), "machine a")
    CheckpointStore(url, key=saver).save({"x": 1}, nb)
    with pytest.raises(UntrustedCheckpoint) as err:
        CheckpointStore(url, key=SigningKey(os.urandom(32), "machine b")).load(nb, 1)
    message = str(err.value)
    for needle in (
        "signed with a different key",
        "Nothing was loaded",
        "%checkpoint config",
        "NBCHECKPOINT_KEY_FILE=",
        "NBCHECKPOINT_KEY to the hex string",
        "%checkpoint restore --trust",
    ):
        assert needle in message, message
    # The saver's key, given as the message says, makes it load.
    monkeypatch.setenv("NBCHECKPOINT_KEY", saver.secret.hex())
    assert CheckpointStore(url).load(nb, 1).values == {"x": 1}
