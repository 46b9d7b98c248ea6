"""A store written by someone else: links out of it, FIFOs, /dev/zero, sparse giants.

Someone who can write the store (a shared folder, a shared bucket, a ``.nbcheckpoint/``
committed to a repository and cloned) plants entries in it. Each test checks that nothing
outside the store is read, changed or deleted (a snapshot of names, contents and mtimes
of a folder outside, with old files in it that gc would delete), that no reader blocks or
reads without bound, that ``verify`` (and ``nbcheckpoint verify``) names the entry, and
that a restore falls back past the checkpoint it spoils.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint import cli
from nbcheckpoint.errors import (
    CheckpointNotFound,
    NoUsableCheckpoint,
    StoreEntryRefused,
    StoreWriteError,
)
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store import store as store_module
from nbcheckpoint.store.backends import LocalBackend, get_backend_class, register_implementation
from nbcheckpoint.store.backends.generic import FsspecBackend
from nbcheckpoint.store.backends.memory import MemoryBackend

DAY = 86400.0
OLD = time.time() - 3 * DAY
ONE = {"a": 1}
TWO = {"a": 1, "b": "two " * 50}


# ------------------------------------------------------------------ helpers
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store, full of old files gc and cleanup would delete if they saw them."""
    folder = tmp_path / "outside"
    folder.mkdir()
    names = [
        "notes.txt",
        "results.csv",
        f"otherhost-4242-{'0' * 32}.tmp",  # a temp name of ours, from another machine
        "ab" + "c" * 62,  # a blob folder's entry
        "c" * 62,
    ]
    for name in names:
        (folder / name).write_text(f"precious {name}\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "deeper.txt").write_text("precious too\n")
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    return folder


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry below ``folder`` (links not followed): kind, content or target, mtime."""
    found: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(folder))
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path), st.st_mtime_ns)
        elif stat.S_ISREG(st.st_mode):
            found[rel] = ("file", path.read_bytes(), st.st_mtime_ns)
        else:
            found[rel] = (stat.S_IFMT(st.st_mode), st.st_mtime_ns)
    return found


def _manifest(root: str, nb: NotebookRef, ident: int) -> Path:
    return Path(root, "notebooks", nb.key, "manifests", f"{ident:08d}.ckpt")


def _blob(root: str, h: str) -> Path:
    return Path(root, "blobs", h[:2], h[2:])


def _two_checkpoints(url: str, nb: NotebookRef) -> tuple[CheckpointStore, str]:
    """Checkpoints #1 and #2 of ``nb``; the address of a blob only #2 uses."""
    store = CheckpointStore(url)
    one = store.save(ONE, nb)
    two = store.save(TWO, nb)
    only_two = sorted(set(two.body["blobs"]) - set(one.body["blobs"]))
    assert only_two, "#2 shares every blob with #1"
    return store, only_two[0]


def _two_checkpoints_apart(
    url: str, nb: NotebookRef
) -> tuple[CheckpointStore, str, dict[str, Any]]:
    """Checkpoints #1 and #2, and a blob of #2 alone of its checkpoint in its folder.

    No blob of #1 shares that blob's ``blobs/xx/`` folder, so a test can replace the
    folder and spoil #2 only. Blob addresses are content hashes and pickles differ
    between Pythons (on 3.13 both payloads' blobs landed in ``dd/``): #2's text changes
    until the folders are apart. Returns #2's payload too.
    """
    for attempt in range(64):
        if attempt:
            shutil.rmtree(url)
        store = CheckpointStore(url)
        one = store.save(ONE, nb)
        second = {**TWO, "b": f"two {attempt} " * 50} if attempt else TWO
        two = store.save(second, nb)
        folders_of_one = {h[:2] for h in one.body["blobs"]}
        apart = sorted(h for h in two.body["blobs"] if h[:2] not in folders_of_one)
        if apart:
            return store, apart[0], second
    raise AssertionError("no text of #2 put one of its blobs in a folder of its own")


def _verify_cli(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["verify", "--store", url])
    return code, capsys.readouterr().out


def _problems(store: CheckpointStore) -> list[str]:
    return [f"{p.notebook} {p.ident} {p.what}" for p in store.verify()]


# ------------------------------------------------------------ links out
def test_a_linked_tmp_folder_is_never_followed(
    local_store_url: str,
    nb: NotebookRef,
    outside: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = CheckpointStore(local_store_url)
    ck = store.save(ONE, nb)
    shutil.rmtree(Path(local_store_url, "tmp"))
    os.symlink(outside, Path(local_store_url, "tmp"))
    before = snapshot(outside)

    with pytest.raises(StoreWriteError, match=r"tmp is a symbolic link.*remove it"):
        store.save(TWO, nb)
    assert store.backend.cleanup_tmp(0) == 0
    # gc writes its lease through tmp/ first, so it refuses too, before deleting anything.
    with pytest.raises(StoreWriteError, match=r"tmp is a symbolic link"):
        store.gc(grace=0)
    store.delete(nb, ck.id)
    with pytest.raises(StoreWriteError, match=r"tmp is a symbolic link"):
        store.gc(grace=0)
    assert snapshot(outside) == before

    assert any(p.startswith("(store) None tmp: it is a symbolic link") for p in _problems(store))
    code, out = _verify_cli(local_store_url, capsys)
    assert code == 1 and "tmp" in out and "symbolic link" in out
    assert snapshot(outside) == before


def test_a_linked_blob_folder_is_never_followed(
    local_store_url: str,
    nb: NotebookRef,
    outside: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, h, second = _two_checkpoints_apart(local_store_url, nb)
    # The real blob folder moves outside (with its valid blobs) beside old files; the store
    # keeps a link to it. Following it would make #2 load, and gc delete the old files.
    folder = Path(local_store_url, "blobs", h[:2])
    moved = outside / "moved"
    shutil.copytree(folder, moved)
    for old in ("cd" * 31, "ef" * 31):
        (moved / old).write_text("old data\n")
        os.utime(moved / old, (OLD, OLD))
    shutil.rmtree(folder)
    os.symlink(moved, folder)
    before = snapshot(outside)

    restored = CheckpointStore(local_store_url).load(nb)
    assert restored.checkpoint.id == 1
    assert "symbolic link" in restored.passed_over[2]
    problems = _problems(store)
    assert any(p.startswith(f"{nb.key} 2 blob {h[:12]} was refused") for p in problems)
    assert any(p.startswith(f"(store) None blobs/{h[:2]}: it is a symbolic link") for p in problems)
    code, out = _verify_cli(local_store_url, capsys)
    assert code == 1 and f"blobs/{h[:2]}" in out

    with pytest.raises(StoreWriteError, match=rf"blobs/{h[:2]} is a symbolic link"):
        CheckpointStore(local_store_url).save(second, nb)  # would write into that folder
    store.gc(grace=0)
    store.delete(nb, 2)
    store.gc(grace=0)
    assert store.backend.cleanup_tmp(0) == 0
    assert snapshot(outside) == before


def test_a_linked_notebook_folder_is_never_followed(
    local_store_url: str, nb: NotebookRef, outside: Path
) -> None:
    store = CheckpointStore(local_store_url)
    store.save(ONE, nb)
    folder = Path(local_store_url, "notebooks", nb.key)
    shutil.move(str(folder), str(outside / "notebook"))  # valid manifests, signed by our key
    os.symlink(outside / "notebook", folder)
    before = snapshot(outside)

    fresh = CheckpointStore(local_store_url)
    assert fresh.list(nb) == []
    with pytest.raises(NoUsableCheckpoint):
        fresh.load(nb)
    with pytest.raises(CheckpointNotFound):
        fresh.delete(nb, 1)
    fresh.gc(grace=0)
    assert any(f"notebooks/{nb.key}: it is a symbolic link" in p for p in _problems(fresh))
    assert snapshot(outside) == before


def test_a_linked_manifest_is_one_bad_checkpoint_and_rm_removes_only_the_link(
    local_store_url: str,
    nb: NotebookRef,
    outside: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _two_checkpoints(local_store_url, nb)
    manifest = _manifest(local_store_url, nb, 2)
    shutil.move(str(manifest), str(outside / "elsewhere.ckpt"))  # a valid, signed manifest
    os.symlink(outside / "elsewhere.ckpt", manifest)
    before = snapshot(outside)

    fresh = CheckpointStore(local_store_url)
    listed = {c.id: c for c in fresh.list(nb)}
    assert listed[1].problem is None
    assert "symbolic link" in (listed[2].problem or "")
    restored = fresh.load(nb)
    assert restored.checkpoint.id == 1 and "symbolic link" in restored.passed_over[2]
    code, out = _verify_cli(local_store_url, capsys)
    assert code == 1 and "00000002.ckpt" in out and "symbolic link" in out

    assert cli.main(["rm", "--store", local_store_url, "--notebook", nb.key, "2"]) == 0
    assert not os.path.lexists(manifest)
    fresh.gc(grace=0)
    assert snapshot(outside) == before
    assert _verify_cli(local_store_url, capsys)[0] == 0


def test_a_cloned_store_with_links_behaves_the_same(
    tmp_path: Path, nb: NotebookRef, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    url = str(project / ".nbcheckpoint")
    store, h, _ = _two_checkpoints_apart(url, nb)
    shutil.rmtree(Path(url, "tmp"), ignore_errors=True)
    os.symlink(outside, Path(url, "tmp"))
    shutil.rmtree(Path(url, "blobs", h[:2]))
    os.symlink(outside, Path(url, "blobs", h[:2]))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", str(project)], check=True)
    subprocess.run([*git, "-C", str(project), "add", "-f", ".nbcheckpoint"], check=True)
    subprocess.run([*git, "-C", str(project), "commit", "-qm", "store"], check=True)
    clone = tmp_path / "clone"
    subprocess.run([*git, "clone", "-q", str(project), str(clone)], check=True)
    cloned = str(clone / ".nbcheckpoint")
    assert os.path.islink(Path(cloned, "tmp")) and os.path.islink(Path(cloned, "blobs", h[:2]))
    before = snapshot(outside)

    store = CheckpointStore(cloned)
    with pytest.raises(StoreWriteError, match="symbolic link"):
        store.save({"new": 3}, nb)
    assert store.load(nb).checkpoint.id == 1  # #2's blob is behind the link
    with pytest.raises(StoreWriteError, match="symbolic link"):
        store.gc(grace=0)  # its lease cannot be written through the linked tmp/
    store.delete(nb, 2)
    with pytest.raises(StoreWriteError, match="symbolic link"):
        store.gc(grace=0)
    code, out = _verify_cli(cloned, capsys)
    assert code == 1 and "tmp" in out and f"blobs/{h[:2]}" in out
    assert snapshot(outside) == before


def test_cleanup_removes_only_its_own_temp_names(local_store_url: str, nb: NotebookRef) -> None:
    store = CheckpointStore(local_store_url)
    store.save(ONE, nb)
    tmp = Path(local_store_url, "tmp")
    dead = tmp / f"otherhost-99-{uuid.uuid4().hex}.tmp"  # a writer that died elsewhere
    mine = tmp / "notes.txt"  # not a name this package ever gives a temp file
    pipe = tmp / f"otherhost-98-{uuid.uuid4().hex}.tmp"
    for path in (dead, mine):
        path.write_text("x")
    os.mkfifo(pipe)
    for path in (dead, mine, pipe):
        os.utime(path, (OLD, OLD), follow_symlinks=False)
    assert store.gc(grace=60).removed_tmp == 1
    assert not dead.exists() and mine.read_text() == "x" and stat.S_ISFIFO(pipe.lstat().st_mode)
    assert any(
        p.endswith("it is a FIFO (named pipe), not a regular file") for p in _problems(store)
    )


# --------------------------------------------------- special files, giants
@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["manifest", "status", "blob"])
def test_a_fifo_never_blocks_a_reader_and_verify_names_it(
    local_store_url: str, nb: NotebookRef, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store, h = _two_checkpoints(local_store_url, nb)
    store.set_status(nb, 2, "interrupted")
    path = {
        "manifest": _manifest(local_store_url, nb, 2),
        "status": Path(local_store_url, "notebooks", nb.key, "status", "2"),
        "blob": _blob(local_store_url, h),
    }[where]
    path.unlink()
    os.mkfifo(path)
    rel = path.relative_to(local_store_url).as_posix()

    fresh = CheckpointStore(local_store_url)
    listed = {c.id: c for c in fresh.list(nb)}
    restored = fresh.load(nb)
    if where == "manifest":
        assert "FIFO" in (listed[2].problem or "")
    # A status record that is not a plain file makes #2 one bad checkpoint, like a damaged one.
    assert restored.checkpoint.id == 1 and "FIFO" in restored.passed_over[2]
    assert any(
        p.endswith(f"{rel}: it is a FIFO (named pipe), not a regular file")
        for p in _problems(fresh)
    )
    code, out = _verify_cli(local_store_url, capsys)
    assert code == 1 and rel in out
    fresh.gc(grace=0)
    assert stat.S_ISFIFO(path.lstat().st_mode)  # reported, never opened nor removed by gc


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["manifest", "blob"])
def test_a_link_to_dev_zero_is_refused_with_bounded_memory(
    local_store_url: str, nb: NotebookRef, where: str
) -> None:
    _, h = _two_checkpoints(local_store_url, nb)
    path = _manifest(local_store_url, nb, 2) if where == "manifest" else _blob(local_store_url, h)
    path.unlink()
    os.symlink("/dev/zero", path)

    fresh = CheckpointStore(local_store_url)
    tracemalloc.start()
    try:
        listed = {c.id: c for c in fresh.list(nb)}
        restored = fresh.load(nb)
        problems = _problems(fresh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes allocated"
    assert restored.checkpoint.id == 1 and "symbolic link" in restored.passed_over[2]
    if where == "manifest":
        assert "symbolic link" in (listed[2].problem or "")
    rel = path.relative_to(local_store_url).as_posix()
    assert any(
        p.endswith(f"{rel}: it is a symbolic link, which nbcheckpoint never follows inside a store")
        for p in problems
    )
    with pytest.raises(StoreEntryRefused, match=rf"{rel} in the store .*: it is a symbolic link"):
        fresh.backend.read(rel)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_in_the_store_is_refused(local_store_url: str, nb: NotebookRef) -> None:
    _two_checkpoints(local_store_url, nb)
    path = _manifest(local_store_url, nb, 2)
    path.unlink()
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError as e:
        pytest.skip(f"this container does not allow mknod: {e}")
    fresh = CheckpointStore(local_store_url)
    assert "a device" in (fresh.list(nb)[1].problem or "")
    assert fresh.load(nb).checkpoint.id == 1
    assert any("00000002.ckpt: it is a device" in p for p in _problems(fresh))


def test_a_sparse_3_gib_manifest_is_refused_before_reading(
    local_store_url: str, nb: NotebookRef, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = _two_checkpoints(local_store_url, nb)
    path = _manifest(local_store_url, nb, 2)
    with open(path, "r+b") as f:
        f.truncate(3 << 30)  # sparse: no disk used, 3 GiB to read
    rel = path.relative_to(local_store_url).as_posix()

    with pytest.raises(StoreEntryRefused, match=r"holds 3\.0 GiB, more than the 64\.0 MiB"):
        store.backend.read(rel, limit=store_module.MAX_MANIFEST)
    fresh = CheckpointStore(local_store_url)
    assert "3.0 GiB" in (fresh.list(nb)[1].problem or "")
    assert fresh.load(nb).checkpoint.id == 1
    code, out = _verify_cli(local_store_url, capsys)
    assert code == 1 and "00000002.ckpt" in out and "3.0 GiB" in out


def test_a_status_record_over_its_cap_makes_one_bad_checkpoint(
    local_store_url: str, nb: NotebookRef
) -> None:
    store, _ = _two_checkpoints(local_store_url, nb)
    store.set_status(nb, 2, "interrupted")
    assert store.list(nb)[1].status_override == "interrupted"
    path = Path(local_store_url, "notebooks", nb.key, "status", "2")
    with open(path, "r+b") as f:
        f.truncate(1 << 30)
    with pytest.raises(StoreEntryRefused, match=r"more than the 256 bytes"):
        store.backend.read(f"notebooks/{nb.key}/status/2", limit=store_module.MAX_STATUS_RECORD)
    assert "status record" in (store.list(nb)[1].problem or "")
    assert store.load(nb).checkpoint.id == 1


def test_a_blob_larger_than_its_manifest_allows_is_refused_before_reading(
    local_store_url: str, nb: NotebookRef
) -> None:
    _, h = _two_checkpoints(local_store_url, nb)
    with open(_blob(local_store_url, h), "r+b") as f:
        f.truncate(2 << 30)
    restored = CheckpointStore(local_store_url).load(nb)
    assert restored.checkpoint.id == 1
    assert "more than the" in restored.passed_over[2]


def test_a_reader_stops_at_the_size_it_opened_even_if_the_file_grows(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "store"))
    backend.replace("grows", b"0123456789")
    with backend.open_read("grows") as f:
        with open(tmp_path / "store" / "grows", "ab") as w:
            w.write(b"x" * (1 << 20))
        # The ten bytes, then one more so a length check sees it grew, then nothing.
        assert len(f.read()) == 11 and f.read() == b""
    with pytest.raises(StoreEntryRefused, match="more than"):
        backend.read("grows", limit=1000)


# ------------------------------------------------------ object stores
def _spy_memory_reads(backend: FsspecBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    fetched: list[str] = []
    real = backend.fs.cat_file

    def cat_file(path: str, *args: Any, **kwargs: Any) -> Any:
        fetched.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(backend.fs, "cat_file", cat_file)
    return fetched


@pytest.mark.parametrize("cls", [FsspecBackend, MemoryBackend])
def test_fsspec_backends_refuse_an_oversized_object_before_fetching_it(
    memory_store_url: str, cls: type[FsspecBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cls(memory_store_url)
    backend.replace("big", b"x" * 5000)
    fetched = _spy_memory_reads(backend, monkeypatch)
    with pytest.raises(StoreEntryRefused, match=r"big in the store memory://.*: it holds 4\.9 KiB"):
        backend.read("big", limit=1000)
    with (
        pytest.raises(StoreEntryRefused, match="more than the 1000 bytes"),
        backend.open_read("big", limit=1000),
    ):
        pass
    assert fetched == []
    assert backend.read("big", limit=5000) == b"x" * 5000
    assert backend.unsafe_entries() == []


def test_an_oversized_manifest_in_memory_is_one_bad_checkpoint(
    memory_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = _two_checkpoints(memory_store_url, nb)
    path = f"notebooks/{nb.key}/manifests/00000002.ckpt"
    store.backend.replace(path, store.backend.read(path) + b" " * 4096)
    monkeypatch.setattr(store_module, "MAX_MANIFEST", 2048)
    fresh = CheckpointStore(memory_store_url)
    assert "more than the 2.0 KiB" in (fresh.list(nb)[1].problem or "")
    assert fresh.load(nb).checkpoint.id == 1


# -------------------------------------------------------------- packaging
def test_backends_are_chosen_by_protocol() -> None:
    assert get_backend_class("file") is LocalBackend
    assert get_backend_class("memory") is MemoryBackend
    assert get_backend_class("gcs") is FsspecBackend  # no fast path of its own: generic
    assert get_backend_class("s3").__name__ == "S3Backend"
    assert issubclass(get_backend_class("s3"), FsspecBackend)

    class Custom(MemoryBackend):
        pass

    with pytest.raises(ValueError, match="already served"):
        register_implementation("memory", Custom)
    register_implementation("nbtest-hostile", Custom)
    assert get_backend_class("NBTEST-HOSTILE") is Custom


def test_each_backend_module_imports_alone_and_a_folder_needs_no_fsspec(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    code = (
        "import sys\n"
        "from nbcheckpoint.store import CheckpointStore\n"
        f"CheckpointStore({str(tmp_path / 'store')!r}).list()\n"
        "assert 'fsspec' not in sys.modules, 'a local store loaded fsspec'\n"
    )
    subprocess.run([sys.executable, "-c", code], env=subprocess_env, check=True)
    modules = ["base", "local", "generic", "memory", "registry"]
    if importlib.util.find_spec("s3fs") is not None:
        modules.append("s3")
    for name in modules:  # a cycle shows as an ImportError when a module loads first
        subprocess.run(
            [sys.executable, "-c", f"import nbcheckpoint.store.backends.{name}"],
            env=subprocess_env,
            check=True,
        )


# --------------------------------------------------------------- S3 (moto)
@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    if importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nbcheckpoint[s3] and moto[server] must be installed under CI")
        pytest.skip("needs nbcheckpoint[s3] and moto[server] (make test installs both)")
    from s3_server import shared_server

    server = shared_server()
    with server.activate():
        yield server


def _spy_s3_bodies(backend: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Keys whose GET body was read, with the range each GET asked for."""
    read: list[tuple[str, str]] = []
    real = backend.fs._call_s3

    async def call(method: str, *args: Any, **kwargs: Any) -> Any:
        resp = await real(method, *args, **kwargs)
        if method == "get_object":
            body, key, asked = resp["Body"], kwargs["Key"], kwargs.get("Range", "")
            real_read = body.read

            async def read_body(*a: Any) -> Any:
                read.append((key.rsplit("/", 1)[-1], asked))
                return await real_read(*a)

            body.read = read_body
        return resp

    monkeypatch.setattr(backend.fs, "_call_s3", call)
    return read


def test_s3_refuses_an_oversized_object_before_downloading_it(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbcheckpoint.store.backends.s3 import S3Backend

    backend = S3Backend(s3.new_store_url())
    backend.replace("big", os.urandom(3 << 20))
    backend.replace("small", b"fits")
    read = _spy_s3_bodies(backend, monkeypatch)
    with pytest.raises(StoreEntryRefused, match=r"big in the store s3://.*: it holds 3\.0 MiB"):
        backend.read("big", limit=64 << 10)
    with (
        pytest.raises(StoreEntryRefused, match=r"more than the 64\.0 KiB"),
        backend.open_read("big", limit=64 << 10),
    ):
        pass
    assert read == []  # both refused from the GET's Content-Range, the body left unread
    assert backend.read("small", limit=64 << 10) == b"fits"
    assert read == [("small", f"bytes=0-{64 << 10}")]  # never more than the cap and one byte
    assert backend.unsafe_entries() == []


def test_s3_oversized_manifest_and_blob_are_bad_checkpoints(
    s3: Any, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = s3.new_store_url()
    store, h = _two_checkpoints(url, nb)
    blob = f"blobs/{h[:2]}/{h[2:]}"
    store.backend.replace(blob, store.backend.read(blob) + os.urandom(1 << 20))
    fresh = CheckpointStore(url)
    read = _spy_s3_bodies(fresh.backend, monkeypatch)
    restored = fresh.load(nb)
    assert restored.checkpoint.id == 1 and "more than the" in restored.passed_over[2]
    assert h[2:] not in {key for key, _ in read}, "the oversized blob was downloaded"

    path = f"notebooks/{nb.key}/manifests/00000002.ckpt"
    store.backend.replace(path, b"x" * (80 << 10))
    monkeypatch.setattr(store_module, "MAX_MANIFEST", 64 << 10)
    read.clear()
    assert "more than the 64.0 KiB" in (fresh.list(nb)[1].problem or "")
    assert "00000002.ckpt" not in {key for key, _ in read}
    code, out = _verify_cli(url, capsys)
    assert code == 1 and "#2" in out


def test_gc_deletes_only_names_a_blob_can_have(local_store_url: str, nb: NotebookRef) -> None:
    # A store root may itself be a link the user made (to another disk, or, by mistake, to
    # a folder of their own): gc must delete nothing there but blobs no manifest uses.
    store = CheckpointStore(local_store_url)
    ck = store.save(ONE, nb)
    blobs = Path(local_store_url, "blobs")
    mine = [blobs / "ab" / "notes.txt", blobs / "ab" / ("ab" * 31 + ".bak"), blobs / "xy" / "cd"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("the user's own\n")
        os.utime(path, (OLD, OLD))
    store.delete(nb, ck.id)
    report = store.gc(grace=0)
    assert report.removed_blobs >= 1  # the deleted checkpoint's own blobs went
    assert all(p.read_text() == "the user's own\n" for p in mine)


def test_a_store_whose_folder_is_a_file_fails_a_save_with_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store's folder should be")
    url = str(blocker / "store")
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    store = CheckpointStore(url)
    with pytest.raises(StoreWriteError, match=r"blocked/store: Not a directory"):
        store.save(ONE, nb)
    assert store.list(nb) == []
    assert blocker.read_text() == "a file where the store's folder should be"


def test_a_record_replaced_while_it_is_read_is_read_not_refused(local_store_url: str) -> None:
    """Leases and status records are replaced by rename while gc and listings read them:
    a reader that finds another regular file than the one it looked at reads it (an old
    or a new version, whole), where it used to refuse it as a swapped entry."""
    import threading

    backend = LocalBackend(local_store_url)
    versions = [f"version {i}".encode() * 50 for i in range(3)]
    backend.replace("leases/x.save", versions[0])
    stop = threading.Event()

    def replacer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            backend.replace("leases/x.save", versions[i % 3])

    thread = threading.Thread(target=replacer)
    thread.start()
    try:
        seen = [backend.read("leases/x.save") for _ in range(3000)]
    finally:
        stop.set()
        thread.join()
    assert set(seen) <= set(versions)
