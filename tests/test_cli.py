"""The ``nbcheckpoint`` command over a real store: each command in-process, and once as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.cli import main
from nbcheckpoint.store import CheckpointStore, NotebookRef

REPO = Path(__file__).resolve().parent.parent

SUMMARY_KEYS = {
    "id", "notebook", "path", "created", "time", "status", "cell", "position",
    "variables", "total_bytes", "new_bytes", "pinned", "verified", "problem",
}  # fmt: skip


@dataclass
class Fixture:
    """A store with three checkpoints of ``train.ipynb`` and one of ``eval.ipynb``."""

    url: str
    root: Path
    train: NotebookRef
    eval: NotebookRef
    y_hash: str  # the blob holding only checkpoint train #3's data


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(tmp_path / "signing.key"))
    monkeypatch.delenv("NBCHECKPOINT_KEY", raising=False)
    monkeypatch.delenv("NBCHECKPOINT_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store (./.nbcheckpoint) must not land in the repo
    return tmp_path


@pytest.fixture
def fx(isolated: Path) -> Fixture:
    root = isolated / "store"
    store = CheckpointStore(str(root))
    train = NotebookRef.from_path(str(isolated / "train.ipynb"))
    other = NotebookRef.from_path(str(isolated / "eval.ipynb"))
    data = list(range(500))
    store.save(
        {"x": data, "alias": data, "gen": (i for i in range(3)), "password": "hunter2", "os": os},
        train,
        status="auto",
        cell={"execution_count": 7, "first_line": "for epoch in range(100):"},
        position={"description": "for epoch at 57/100", "line": 2},
    )
    store.save({"x": list(range(1000, 2000))}, train)
    third = store.save({"y": os.urandom(5000)}, train)
    store.save({"z": "eval"}, other)
    (group,) = third.body["groups"]
    return Fixture(str(root), root, train, other, group["pickle"])


def run(capsys: pytest.CaptureFixture[str], fx: Fixture | None, *args: str) -> Result:
    argv = ["--store", fx.url, *args] if fx else list(args)
    code = main(argv)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_error_line(r: Result, code: int, *needles: str) -> None:
    assert r.code == code, r
    assert r.err.startswith("nbcheckpoint: error: "), r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------- list
def test_list_table(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "list")
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0].split()[:4] == ["id", "notebook", "time", "status"]
    assert set(lines[1]) <= {"-", " "}
    rows = lines[2:]
    assert len(rows) == 4
    first = next(line for line in rows if line.startswith("#1") and fx.train.key in line)
    assert "auto" in first
    assert "[7] for epoch in range(100):" in first
    assert "for epoch at 57/100" in first
    assert "ago" in first or "just now" in first
    assert first.rstrip().endswith("yes")


def test_list_json(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "list", "--json")
    assert r.code == 0
    items = r.json()
    assert isinstance(items, list) and all(set(i) == SUMMARY_KEYS for i in items)
    assert [(i["notebook"], i["id"]) for i in items] == sorted(
        [(fx.train.key, 1), (fx.train.key, 2), (fx.train.key, 3), (fx.eval.key, 1)]
    )
    first = next(i for i in items if i["notebook"] == fx.train.key and i["id"] == 1)
    assert first["cell"] == {"execution_count": 7, "first_line": "for epoch in range(100):"}
    assert first["position"] == "for epoch at 57/100"
    assert first["variables"] == ["alias", "x"]  # gen skipped, password withheld, os is a module
    assert first["status"] == "auto" and first["verified"] and not first["pinned"]
    assert first["path"] == fx.train.path
    assert first["new_bytes"] > 0 and first["total_bytes"] > 0
    # Stable: the same store prints the same JSON.
    assert run(capsys, fx, "list", "--json").out == r.out


def test_list_accepts_key_prefix_and_path(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    for nb in (fx.train.key, "train", fx.train.path, os.path.relpath(fx.train.path)):
        r = run(capsys, fx, "list", "--json", "--notebook", nb)
        assert r.code == 0, (nb, r.err)
        assert [i["id"] for i in r.json()] == [1, 2, 3]
    r = run(capsys, fx, "list", "-n", "new.ipynb")  # a notebook without checkpoints yet
    assert r.code == 0 and "No checkpoints for new-" in r.out


def test_list_unknown_and_ambiguous_notebook(
    capsys: pytest.CaptureFixture[str], fx: Fixture
) -> None:
    assert_one_error_line(
        run(capsys, fx, "list", "-n", "zzz"), 1, "'zzz'", fx.train.key, fx.eval.key
    )
    CheckpointStore(fx.url).save({"a": 1}, NotebookRef.from_path("train2.ipynb"))
    r = run(capsys, fx, "list", "-n", "train")
    assert_one_error_line(r, 2, "several notebooks", fx.train.key)


def test_store_option_before_or_after_command_and_from_env(
    capsys: pytest.CaptureFixture[str], fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = run(capsys, fx, "list", "--json").out
    assert run(capsys, None, "list", "--json", "--store", fx.url).out == before
    monkeypatch.setenv("NBCHECKPOINT_STORE", fx.url)
    assert run(capsys, None, "list", "--json").out == before


def test_empty_store(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    r = run(capsys, None, "list")
    assert r.code == 0 and "No checkpoints in" in r.out
    assert run(capsys, None, "list", "--json").json() == []
    r = run(capsys, None, "verify")
    assert r.code == 0 and "0 checkpoints verified" in r.out
    assert_one_error_line(
        run(capsys, None, "show", "1"), 1, "No checkpoint #1", "no checkpoints yet"
    )
    assert not (isolated / ".nbcheckpoint").exists()  # reading does not create a store


# ------------------------------------------------------------------- show
def test_show_text(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "show", "1", "--notebook", "train")
    assert r.code == 0, r.err
    out = r.out
    assert out.startswith(f"Checkpoint #1 of {fx.train.key} ({fx.train.path})")
    assert "status    auto" in out and "verified  yes" in out
    assert "[7] for epoch in range(100):" in out and "for epoch at 57/100" in out
    assert "python " in out and "dill " in out
    variables = out.split("Variables (2):")[1].split("\n\n")[0]
    assert "alias" in variables and "list" in variables
    rows = [line.split() for line in variables.splitlines() if line.strip()]
    assert rows[3][:2] == ["x", "list"] and rows[3][-1] == "alias"
    skipped = out.split("Skipped, could not be saved (1):")[1].split("\n\n")[0]
    assert "gen" in skipped and "generator" in skipped and "pickle" in skipped
    withheld = out.split("Withheld on purpose (1):")[1].split("\n\n")[0]
    assert "password" in withheld and "credential" in withheld
    assert "os" in out.split("Modules, re-imported on restore (1):")[1]


def test_show_json_and_hash_id(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "show", "#1", "-n", fx.train.key, "--json")
    assert r.code == 0
    d = r.json()
    assert set(d) >= SUMMARY_KEYS
    assert d["variables"] == [
        {"name": "alias", "type": "list", "size": d["variables"][0]["size"], "shared_with": ["x"]},
        {"name": "x", "type": "list", "size": d["variables"][0]["size"], "shared_with": ["alias"]},
    ]
    assert [s["name"] for s in d["skipped"]] == ["gen"] and d["skipped"][0]["reason"]
    assert d["withheld"] == [
        {"name": "password", "type": "str", "reason": d["withheld"][0]["reason"]}
    ]
    assert d["modules"] == [{"name": "os", "module": "os"}]
    assert "python" in d["versions"]
    # An id only one notebook has needs no --notebook.
    assert run(capsys, fx, "show", "3", "--json").json()["variables"][0]["name"] == "y"


def test_show_unknown_id(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    assert_one_error_line(run(capsys, fx, "show", "42"), 1, "No checkpoint #42", fx.train.key)
    r = run(capsys, fx, "show", "#42", "-n", "train")
    assert_one_error_line(r, 1, "No checkpoint #42", "#1, #2, #3")


def test_ambiguous_id_names_the_notebooks(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    for command in ("show", "rm", "pin"):
        r = run(capsys, fx, command, "1")
        assert_one_error_line(r, 2, "#1", fx.train.key, fx.eval.key, "--notebook")
    assert len(run(capsys, fx, "list", "--json").json()) == 4  # rm removed nothing


def test_bad_id_text_is_a_usage_error(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    assert_one_error_line(run(capsys, fx, "show", "abc"), 2, "'abc' is not a checkpoint id")


# ----------------------------------------------------------------- verify
def test_verify_clean(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "verify")
    assert r.code == 0 and r.out.strip() == "4 checkpoints verified."
    r = run(capsys, fx, "verify", "--json")
    assert r.code == 0 and r.json() == []
    r = run(capsys, fx, "verify", "-n", "eval")
    assert r.code == 0 and r.out.strip() == "1 checkpoint verified."


def test_verify_corrupt_blob(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    flip_byte(fx.root / "blobs" / fx.y_hash[:2] / fx.y_hash[2:])
    r = run(capsys, fx, "verify")
    assert r.code == 1
    assert fx.train.key in r.out and "#3" in r.out and "does not match its hash" in r.out
    assert "1 problem in 1 of 4 checkpoints" in r.out
    problems = run(capsys, fx, "verify", "--json").json()
    assert problems == [{"notebook": fx.train.key, "id": 3, "what": problems[0]["what"]}]
    assert fx.y_hash[:12] in problems[0]["what"]


def test_verify_missing_blob(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    (fx.root / "blobs" / fx.y_hash[:2] / fx.y_hash[2:]).unlink()
    r = run(capsys, fx, "verify", "--json")
    assert r.code == 1
    assert [(p["notebook"], p["id"]) for p in r.json()] == [(fx.train.key, 3)]
    assert "missing" in r.json()[0]["what"]


def test_verify_corrupt_manifest(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    flip_byte(fx.root / "notebooks" / fx.eval.key / "manifests" / "00000001.ckpt", -2)
    r = run(capsys, fx, "verify")
    assert r.code == 1 and fx.eval.key in r.out and "#1" in r.out and "signature" in r.out
    assert [(p["notebook"], p["id"]) for p in run(capsys, fx, "verify", "--json").json()] == [
        (fx.eval.key, 1)
    ]
    # The damaged checkpoint is still listed, marked, and showing it fails cleanly.
    r = run(capsys, fx, "list")
    assert r.code == 0 and f"#1 of {fx.eval.key}: the manifest content is malformed" in r.out
    bad = next(i for i in run(capsys, fx, "list", "--json").json() if i["notebook"] == fx.eval.key)
    assert bad["status"] == "damaged" and not bad["verified"] and bad["problem"]
    assert_one_error_line(run(capsys, fx, "show", "1", "-n", "eval"), 1, "failed verification")


def test_verify_other_key(
    capsys: pytest.CaptureFixture[str], fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCHECKPOINT_KEY_FILE", str(fx.root.parent / "another.key"))
    r = run(capsys, fx, "verify", "--json")
    assert r.code == 1 and len(r.json()) == 4
    assert all("different key" in p["what"] for p in r.json())
    # Listing still works and says which ones are not verified.
    assert not any(i["verified"] for i in run(capsys, fx, "list", "--json").json())


# ------------------------------------------------------ rm, pin and unpin
def test_rm(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "rm", "2", "--notebook", "train")
    assert r.code == 0 and f"Removed checkpoint #2 of {fx.train.key}" in r.out
    ids = [(i["notebook"], i["id"]) for i in run(capsys, fx, "list", "--json").json()]
    assert (fx.train.key, 2) not in ids and len(ids) == 3
    assert_one_error_line(run(capsys, fx, "rm", "2", "-n", "train"), 1, "No checkpoint #2")


def test_pin_and_unpin(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    def pinned() -> list[tuple[str, int]]:
        return [
            (i["notebook"], i["id"])
            for i in run(capsys, fx, "list", "--json").json()
            if i["pinned"]
        ]

    assert run(capsys, fx, "pin", "3").code == 0
    assert pinned() == [(fx.train.key, 3)]
    r = run(capsys, fx, "unpin", "#3", "-n", "train")
    assert r.code == 0 and "Unpinned checkpoint #3" in r.out
    assert pinned() == []
    assert_one_error_line(run(capsys, fx, "pin", "99"), 1, "No checkpoint #99")


# --------------------------------------------------------------------- gc
def test_gc_keep_spares_pinned_and_newest(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    assert run(capsys, fx, "pin", "1", "-n", "train").code == 0
    r = run(capsys, fx, "gc", "--keep", "1", "--grace", "0")
    assert r.code == 0, r.err
    assert f"Removed 1 checkpoint: {fx.train.key} #2." in r.out
    assert "freed" in r.out and "The store now holds" in r.out
    left = [(i["notebook"], i["id"]) for i in run(capsys, fx, "list", "--json").json()]
    assert sorted(left) == sorted([(fx.train.key, 1), (fx.train.key, 3), (fx.eval.key, 1)])
    assert run(capsys, fx, "verify").code == 0


def test_gc_max_size_json(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "gc", "--max-size", "1KB", "--grace", "0s", "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report["removed_checkpoints"] == [
        {"notebook": fx.train.key, "id": 1},
        {"notebook": fx.train.key, "id": 2},
    ]
    assert report["removed_blobs"] >= 2 and report["freed_bytes"] > 0
    assert report["disk_usage"] > 0
    assert run(capsys, fx, "verify").code == 0


def test_gc_grace_spares_young_blobs(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    assert run(capsys, fx, "rm", "2", "-n", "train").code == 0
    report = run(capsys, fx, "gc", "--json").json()
    assert report["removed_blobs"] == 0 and report["kept_recent"] >= 1
    assert report["removed_checkpoints"] == []
    r = run(capsys, fx, "gc", "--grace", "0")
    assert r.code == 0 and "Removed 1 unused blob" in r.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-size", "10XB"], "'10XB' is not a size"),
        (["--max-size", "lots"], "'lots' is not a size"),
        (["--grace", "soon"], "'soon' is not a duration"),
        (["--keep", "0"], "'0' is not a number of checkpoints"),
    ],
)
def test_gc_bad_arguments(
    capsys: pytest.CaptureFixture[str], fx: Fixture, args: list[str], needle: str
) -> None:
    assert_one_error_line(run(capsys, fx, "gc", *args), 2, needle)
    assert len(run(capsys, fx, "list", "--json").json()) == 4


# ------------------------------------------------------------ entry point
def test_usage(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    assert_one_error_line(run(capsys, None), 2, "required")
    assert_one_error_line(run(capsys, None, "frobnicate"), 2, "frobnicate")
    r = run(capsys, None, "--help")
    assert r.code == 0 and "verify" in r.out and "gc" in r.out
    r = run(capsys, None, "gc", "--help")
    assert r.code == 0 and "--max-size" in r.out


def _subprocess(fx: Fixture, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NBCHECKPOINT_STORE=fx.url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "nbcheckpoint", *args],
        env=env,
        cwd=fx.root.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_subprocess_list_json(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    proc = _subprocess(fx, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == run(capsys, fx, "list", "--json").json()


def test_subprocess_error_has_no_traceback(fx: Fixture) -> None:
    proc = _subprocess(fx, "show", "42")
    assert proc.returncode == 1
    assert proc.stderr.startswith("nbcheckpoint: error: No checkpoint #42")
    assert proc.stderr.count("\n") == 1


# ------------------------------------------------------------------- diff
def test_diff_table_and_json(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    r = run(capsys, fx, "diff", "1", "#2", "-n", "train")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "#1 -> #2: 1 changed, 0 added, 4 removed, 0 same"
    # In #1, x and alias were one list, pickled together: which of them changed is not known.
    assert any(line.startswith("x ") and " changed? " in line for line in lines)
    assert any(line.startswith("alias ") and " removed " in line for line in lines)
    d = run(capsys, fx, "diff", "2", "3", "--json", "-n", "train").json()
    assert d["counts"] == {"changed": 0, "added": 1, "removed": 1, "not saved": 0, "same": 0}
    assert [(row["name"], row["change"]) for row in d["rows"]] == [("y", "added"), ("x", "removed")]
    assert d["rows"][0]["after"]["type"] == "bytes"


def test_diff_errors_are_one_line(capsys: pytest.CaptureFixture[str], fx: Fixture) -> None:
    assert_one_error_line(run(capsys, fx, "diff", "1", "9", "-n", "train"), 1, "No checkpoint #9")
    assert_one_error_line(run(capsys, fx, "diff", "1", "x"), 2, "'x' is not a checkpoint id")
    flip_byte(next((fx.root / "notebooks" / fx.train.key / "manifests").glob("*3.ckpt")))
    assert_one_error_line(
        run(capsys, fx, "diff", "2", "3", "-n", "train"), 1, "Checkpoint #3 failed verification"
    )
