"""Secrets stay out of the store: the signing key in any object, key files others can touch, credentials nested anywhere."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
import requests
from helpers import store_files

from nbcheckpoint.errors import ConfigError
from nbcheckpoint.store import CheckpointStore, NotebookRef, SigningKey, load_key
from nbcheckpoint.store.credentials import MAX_DEPTH, find_credentials, redact

KEY_HEX = secrets.token_hex(32)


def _everything(store: CheckpointStore) -> bytes:
    return b"\n".join(store.backend.read(path) for path in store_files(store.backend))


def _spellings(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), secret.hex().upper().encode()]


# --------------------------------------------------------------- the signing key
class Vault:
    """A plain object that keeps the key where no credential name points at it."""

    def __init__(self, material: bytes) -> None:
        self.material = material


def test_the_signing_key_never_reaches_the_store_whatever_holds_it(
    store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCHECKPOINT_KEY", KEY_HEX)
    store = CheckpointStore(store_url)
    secret = bytes.fromhex(KEY_HEX)
    assert store.key.secret == secret
    big = np.zeros(3 << 20, np.uint8)  # 3 MiB: searched in place, across chunk edges
    big[(1 << 20) - 7 : (1 << 20) + 25] = np.frombuffer(secret, np.uint8)
    shared = [1, 2, 3]
    namespace: dict[str, Any] = {
        # The README's setup for S3 puts the key in the environment (other credentials in
        # it, such as a test S3 server's, would be withheld too and named in `where`).
        "env": {k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "notes": ["x", ("y", KEY_HEX.upper())],
        "raw": np.frombuffer(secret, np.uint8).copy(),
        "big": big,
        "vault": Vault(secret),
        "holder": {"data": shared, "k": KEY_HEX},  # pickled with `alias`, which is clean
        "alias": shared,
        "fine": np.arange(10),
    }
    cell = {"first_line": f"os.environ['NBCHECKPOINT_KEY'] = '{KEY_HEX}'", "execution_count": 3}
    ck = store.save(namespace, nb, cell=cell)
    withheld = ck.body["withheld"]
    assert set(withheld) == {"env", "notes", "raw", "big", "vault", "holder"}
    assert withheld["env"]["where"] == "env['NBCHECKPOINT_KEY']"
    for name in ("notes", "raw", "big", "vault", "holder"):
        assert "signing key" in withheld[name]["reason"], name
    assert "[withheld]" in ck.body["cell"]["first_line"]
    restored = store.load(nb).values
    assert set(restored) == {"alias", "fine"}
    assert restored["alias"] == [1, 2, 3]
    everything = _everything(store)
    for spelling in _spellings(secret):
        assert spelling not in everything
    # Even when the user asks for credentials to be saved, the key is not.
    ck = store.save({"notes": ["x", KEY_HEX]}, nb, include_credentials=True)
    assert set(ck.body["withheld"]) == {"notes"}
    for spelling in _spellings(secret):
        assert spelling not in _everything(store)


def test_the_key_across_two_chunks_of_an_array_is_found(
    local_store_url: str, nb: NotebookRef
) -> None:
    store = CheckpointStore(local_store_url)
    secret = store.key.secret
    # Random bytes (stored raw, not compressed), as three 4 MiB chunks, each its own blob.
    arr = np.random.default_rng(1).integers(0, 256, 12 << 20, dtype=np.uint8)
    arr[(4 << 20) - 16 : (4 << 20) + 16] = np.frombuffer(secret, np.uint8)
    ck = store.save({"arr": arr, "n": 1}, nb)
    assert set(ck.body["withheld"]) == {"arr"}
    halves = (secret[:16], secret[16:])
    files = [store.backend.read(p) for p in store_files(store.backend)]
    assert not any(halves[0] in f and f.find(halves[0]) == len(f) - 16 for f in files)
    assert not any(f.startswith(halves[1], 6) for f in files)  # after a blob's header


def _candidates(data: bytes) -> set[bytes]:
    """What an attacker who reads the store would try as the key: hex strings, raw windows."""
    found = {bytes.fromhex(m.decode()) for m in re.findall(rb"[0-9a-fA-F]{64}", data)}
    found |= {data[i : i + 32] for i in range(len(data) - 31)}
    return found


def test_a_forger_reading_the_store_finds_no_key_to_sign_with(
    local_store_url: str, nb: NotebookRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCHECKPOINT_KEY", KEY_HEX)
    store = CheckpointStore(local_store_url)
    store.save({"env": dict(os.environ), "copy": [KEY_HEX], "n": 1}, nb)
    target = store.key.key_id  # public: every manifest header names it
    candidates = _candidates(_everything(store))
    assert len(candidates) > 1000
    assert not [c for c in candidates if SigningKey(c, "guess").key_id == target]
    # The same search finds a key that was written (the attack itself works).
    leaked = _candidates(_everything(store) + b"junk" + KEY_HEX.encode() + b"junk")
    assert [c for c in leaked if SigningKey(c, "guess").key_id == target]


def test_the_key_in_cell_text_is_redacted_from_the_manifest(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    key_hex = store.key.secret.hex()
    position = {"description": f"loop over {key_hex.upper()}"}
    ck = store.save({"n": 1}, nb, cell={"first_line": f"k = '{key_hex}'"}, position=position)
    assert ck.body["cell"]["first_line"] == "k = '[withheld]'"
    assert key_hex.upper() not in ck.body["position"]["description"]
    for spelling in _spellings(store.key.secret):
        assert spelling not in _everything(store)


# ------------------------------------------------------------------- key files
def _key_file(path: Path, content: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_file_others_can_read_is_refused_with_the_fix(
    _isolated_signing_key: Path, mode: int
) -> None:
    path = _key_file(_isolated_signing_key, secrets.token_hex(32), mode)
    with pytest.raises(ConfigError, match=re.escape(f"chmod 600 {path}")):
        load_key()
    path.chmod(0o600)
    assert load_key().source == str(path)


def test_a_key_file_of_another_user_is_refused(
    _isolated_signing_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _key_file(_isolated_signing_key, secrets.token_hex(32))
    if os.geteuid() == 0:
        os.chown(path, 12345, 12345)  # really another owner
    else:
        monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(ConfigError, match="belongs to another user") as e:
        load_key()
    assert f"rm {path}" in str(e.value)


def test_a_key_file_that_is_a_symlink_is_refused(_isolated_signing_key: Path) -> None:
    real = _key_file(_isolated_signing_key.parent / "elsewhere.key", secrets.token_hex(32))
    _isolated_signing_key.symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link") as e:
        load_key()
    assert f"chmod 600 {_isolated_signing_key}" in str(e.value)
    # A dangling link is refused the same way, not replaced by a new key.
    real.unlink()
    with pytest.raises(ConfigError, match="symbolic link"):
        load_key()


@pytest.mark.parametrize(
    ("content", "why"),
    [("00" * 32, "the same"), ("00" * 64, "the same"), ("ab" * 16, "shorter than 256 bits")],
)
def test_weak_keys_are_refused(
    _isolated_signing_key: Path, monkeypatch: pytest.MonkeyPatch, content: str, why: str
) -> None:
    _key_file(_isolated_signing_key, content)
    with pytest.raises(ConfigError, match=why):
        load_key()
    monkeypatch.setenv("NBCHECKPOINT_KEY", content)
    with pytest.raises(ConfigError, match=f"NBCHECKPOINT_KEY is too weak: .*{why}"):
        load_key()


def test_a_new_key_file_is_private_and_accepted(_isolated_signing_key: Path) -> None:
    key = load_key()
    assert stat.S_IMODE(os.stat(_isolated_signing_key).st_mode) == 0o600
    assert load_key().secret == key.secret
    assert key.secret.hex() not in repr(key)


# ------------------------------------------------------------------ credentials
@dataclasses.dataclass
class DbConfig:
    host: str
    password: str


class ApiClient:
    def __init__(self, **attrs: str) -> None:
        self.__dict__.update(attrs)
        self.retries = 3


class Slotted:
    __slots__ = ("name", "secret")

    def __init__(self) -> None:
        self.name = "svc"
        self.secret = "slot-secret-value-16"


def _session_with_header() -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer header-secret-value-10"
    return session


def _boto_session() -> Any:
    return boto3.Session(
        aws_access_key_id="AKIAABCDEFGHIJKLMNOP",
        aws_secret_access_key="boto-secret-value-12",
        region_name="us-east-1",
    )


# 16 shapes in which a secret got onto disk (issue #12): variable, where it is, its text.
SHAPES: list[tuple[str, Any, str, str]] = [
    (
        "config",
        {"db": {"password": "nested-secret-value-01"}},
        "config['db']['password']",
        "nested-secret-value-01",
    ),
    (
        "servers",
        [{"host": "h", "passwd": "list-secret-value-02"}],
        "servers[0]['passwd']",
        "list-secret-value-02",
    ),
    (
        "conn",
        ("host", 5432, {"secret": "tuple-secret-value-03"}),
        "conn[2]['secret']",
        "tuple-secret-value-03",
    ),
    ("db", DbConfig("h", "dataclass-secret-value-04"), "db.password", "dataclass-secret-value-04"),
    ("client", ApiClient(api_key="attr-secret-value-05"), "client.api_key", "attr-secret-value-05"),
    (
        "account",
        ApiClient(password="attr-secret-value-06"),
        "account.password",
        "attr-secret-value-06",
    ),
    ("hub", ApiClient(token="attr-secret-value-07"), "hub.token", "attr-secret-value-07"),
    (
        "environment",
        {"HOME": "/root", "AWS_SECRET_ACCESS_KEY": "env-secret-value-08"},
        "environment['AWS_SECRET_ACCESS_KEY']",
        "env-secret-value-08",
    ),
    ("http", _session_with_header(), "http.headers['Authorization']", "header-secret-value-10"),
    ("aws", _boto_session(), "aws._session._credentials", "boto-secret-value-12"),
    ("token", "plain-token-value-13", "token", "plain-token-value-13"),
    ("pw", "plain-pw-value-14", "pw", "plain-pw-value-14"),
    ("db_pass", "plain-dbpass-value-15", "db_pass", "plain-dbpass-value-15"),
    ("auth", ("user", "auth-tuple-value-16"), "auth", "auth-tuple-value-16"),
    ("keys", {"ghp_" + "Z9y8X7w6" * 5}, "keys{...}", "ghp_" + "Z9y8X7w6" * 5),
    ("svc", Slotted(), "svc.secret", "slot-secret-value-16"),
]
KEPT = {
    "tokens": ["the", "tokens", "of", "a", "sentence"],
    "tokenizer": "bert-base-uncased",
    "secretary_df": pd.DataFrame({"name": ["Ann"], "desk": [3]}),
    "author": "Ann",
    "next_token": 5,
}


def test_sixteen_credential_shapes_are_withheld_and_listed_where_found(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    assert len(SHAPES) == 16
    namespace = {name: value for name, value, _, _ in SHAPES} | KEPT
    ck = store.save(namespace, nb)
    withheld = ck.body["withheld"]
    for name, _value, where, _ in SHAPES:
        assert name in withheld, name
        assert where in withheld[name]["where"].split(", "), (name, withheld[name])
        assert withheld[name]["reason"], name
    assert set(withheld) == {name for name, *_ in SHAPES}
    restored = store.load(nb).values
    assert set(restored) == set(KEPT)
    pd.testing.assert_frame_equal(restored["secretary_df"], KEPT["secretary_df"])
    everything = _everything(store)
    for _, _, _, text in SHAPES:
        assert text.encode() not in everything, text


def test_withheld_values_are_redacted_from_the_recorded_cell_text(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    cell = {"first_line": 'config = {"db": {"password": "hunter2-in-cell"}}', "execution_count": 1}
    ck = store.save({"config": {"db": {"password": "hunter2-in-cell"}}, "n": 1}, nb, cell=cell)
    assert ck.body["cell"]["first_line"] == 'config = {"db": {"password": "[withheld]"}}'
    assert b"hunter2-in-cell" not in _everything(store)
    # A token spelled out in a cell is redacted by its shape alone, withheld or not.
    assert redact("gh = 'ghp_" + "a1B2c3D4" * 5 + "'", []) == "gh = '[withheld]'"


def test_the_walk_is_bounded() -> None:
    deep: Any = "deep-secret-value"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    deep = {"password_holder": deep}
    assert find_credentials("x", deep) == []  # beyond the depth bound: not looked at
    wide = [f"word {i}" for i in range(1_000_000)] + ["ghp_" + "a1B2c3D4" * 5]
    assert find_credentials("words", wide) == []  # beyond the node budget
    cyclic: dict[str, Any] = {"password": "cyclic-secret"}
    cyclic["self"] = cyclic
    assert [f.where for f in find_credentials("c", cyclic)] == ["c['password']"]
    shallow = [["ghp_" + "a1B2c3D4" * 5]]
    assert [f.where for f in find_credentials("w", shallow)] == ["w[0][0]"]
