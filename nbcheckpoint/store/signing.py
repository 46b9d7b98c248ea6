"""Per-user HMAC-SHA256 signing of manifests over canonical, length-delimited bytes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from ..errors import ConfigError

KEY_BYTES = 32
DOMAIN = b"nbcheckpoint-manifest-v1"
ENV_KEY = "NBCHECKPOINT_KEY"
ENV_KEY_FILE = "NBCHECKPOINT_KEY_FILE"


def default_key_path() -> str:
    """Where the signing key lives unless ``NBCHECKPOINT_KEY_FILE`` says otherwise."""
    try:
        from jupyter_core.paths import jupyter_data_dir

        base = jupyter_data_dir()
    except ImportError:  # pragma: no cover - jupyter_core is a dependency
        base = os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter")
    return os.path.join(base, "nbcheckpoint", "signing.key")


@dataclass(frozen=True)
class SigningKey:
    """A secret key and where it came from (shown by ``%checkpoint config``)."""

    secret: bytes
    source: str

    @property
    def key_id(self) -> str:
        """A short public fingerprint, so a refusal can say "signed with another key"."""
        return hmac.new(self.secret, b"key-id", hashlib.sha256).hexdigest()[:16]

    def sign(self, body: bytes) -> str:
        """HMAC-SHA256 of ``body``, framed so that no two inputs share a signature.

        Examples
        --------
        >>> k = SigningKey(b"k" * 32, "test")
        >>> k.sign(b"a") != k.sign(b"a\\x00")
        True
        """
        framed = _frame(DOMAIN) + _frame(body)
        return hmac.new(self.secret, framed, hashlib.sha256).hexdigest()

    def verify(self, body: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(body), signature)


def _frame(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big") + part


def _read_key_file(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read().strip()
    try:
        secret = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            f"The signing key file {path} is not a hex key; delete it to make a new one."
        ) from e
    if len(secret) < KEY_BYTES:
        raise ConfigError(
            f"The signing key in {path} is shorter than 256 bits; delete it to make a new one."
        )
    return secret


def _create_key_file(path: str) -> bytes:
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    secret = secrets.token_bytes(KEY_BYTES)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secret.hex().encode("ascii") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() does not replace: when two kernels race, both end up with the winner's key.
            os.link(tmp, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return secret


def load_key(create: bool = True) -> SigningKey:
    """The user's signing key: ``NBCHECKPOINT_KEY`` (hex), ``NBCHECKPOINT_KEY_FILE``, or the default file.

    The default file is created with mode 0600 in a 0700 folder on first use.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        try:
            secret = bytes.fromhex(env.strip())
        except ValueError as e:
            raise ConfigError(f"{ENV_KEY} must be a hex string of at least 64 characters.") from e
        if len(secret) < KEY_BYTES:
            raise ConfigError(f"{ENV_KEY} must be at least 256 bits (64 hex characters).")
        return SigningKey(secret, f"${ENV_KEY}")
    path = os.environ.get(ENV_KEY_FILE) or default_key_path()
    if os.path.exists(path):
        return SigningKey(_read_key_file(path), path)
    if not create:
        raise ConfigError(
            f"No signing key at {path}. Copy the key from the machine that saved the checkpoints "
            f"there, or set {ENV_KEY} or {ENV_KEY_FILE}."
        )
    return SigningKey(_create_key_file(path), path)
