"""Per-user HMAC-SHA256 signing of manifests over canonical, length-delimited bytes."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from typing import Any

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

    secret: bytes = field(repr=False)
    source: str
    # The key as the user wrote it (NBCHECKPOINT_KEY may be mixed-case hex).
    text: str = field(default="", repr=False, compare=False)

    @property
    def patterns(self) -> tuple[bytes, ...]:
        """Every spelling of the key that must never reach the store: raw, hex in both cases.

        Examples
        --------
        >>> len(SigningKey(bytes(range(32)), "test").patterns)
        3
        """
        hexed = self.secret.hex()
        found = [self.secret, hexed.encode(), hexed.upper().encode()]
        written = self.text.strip().encode("ascii", "ignore")
        if written and written not in found:
            found.append(written)
        return tuple(found)

    @property
    def text_patterns(self) -> tuple[str, ...]:
        """The spellings of the key that can appear in text (to redact it from cell text)."""
        return tuple(p.decode("ascii") for p in self.patterns[1:])

    def found_in(self, data: Any) -> bool:
        """Whether any spelling of the key occurs in ``data`` (bytes or a flat buffer of bytes)."""
        return any(_contains(data, p) for p in self.patterns)

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


def _libc_memmem() -> Any:
    """libc's memmem, or None. Looked up in the process's own symbols, where libc is:
    ``ctypes.util.find_library`` would run ``ldconfig -p`` in a subprocess."""
    try:
        fn = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):  # pragma: no cover - no C library with memmem
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return fn


_MEMMEM = _libc_memmem()
_SCAN_PIECE = 1 << 20


def _address(view: memoryview) -> int | None:
    """The address of a flat buffer's first byte, without copying it; None when unknown."""
    if not view.readonly:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        return int(numpy.frombuffer(view, numpy.uint8).ctypes.data)
    return None


def _contains(data: Any, pattern: bytes) -> bool:
    """Whether ``pattern`` occurs in ``data``: libc's memmem in place (about 12 GB/s here,
    and it releases the GIL), else ``bytes.find`` over 1 MiB pieces that overlap."""
    if isinstance(data, bytes):
        return data.find(pattern) >= 0
    view = memoryview(data).cast("B") if memoryview(data).format != "B" else memoryview(data)
    if view.nbytes < len(pattern):
        return False
    address = _address(view) if _MEMMEM is not None and view.nbytes >= _SCAN_PIECE else None
    if address is not None:
        return bool(_MEMMEM(address, view.nbytes, pattern, len(pattern)))
    overlap = len(pattern) - 1
    for start in range(0, view.nbytes, _SCAN_PIECE):
        if bytes(view[start : start + _SCAN_PIECE + overlap]).find(pattern) >= 0:
            return True
    return False


def _weakness(secret: bytes) -> str | None:
    if len(secret) < KEY_BYTES:
        return "it is shorter than 256 bits"
    if len(set(secret)) == 1:
        return "every byte of it is the same (all zeros?)"
    return None


def _check_key_file(path: str, st: os.stat_result) -> None:
    """Refuse a key file that another user could read or replace, or that points elsewhere."""
    quoted = _quote(path)
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"The signing key file {path} is a symbolic link, which anyone able to change the "
            f"link could point at their own key. Replace the link with the file: "
            f'cp --remove-destination "$(readlink -f {quoted})" {quoted} && chmod 600 {quoted}'
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"The signing key file {path} is not a regular file; delete it.")
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and st.st_uid != uid:
        raise ConfigError(
            f"The signing key file {path} belongs to another user (uid {st.st_uid}), who could "
            f"sign checkpoints as you. Make your own: rm {quoted} (a new key is made on the next "
            f"save; checkpoints signed with the old one then need --trust)."
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"The signing key file {path} can be read or changed by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}). Fix it with: chmod 600 {quoted}"
        )


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _read_key_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if os.path.islink(path):
            _check_key_file(path, os.lstat(path))
        raise ConfigError(f"Could not read the signing key file {path}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        _check_key_file(path, os.fstat(f.fileno()))
        raw = f.read(4096).strip()
    try:
        secret = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            f"The signing key file {path} is not a hex key; delete it to make a new one."
        ) from e
    weak = _weakness(secret)
    if weak:
        raise ConfigError(
            f"The signing key in {path} is too weak: {weak}. Delete it to make a new one: "
            f"rm {_quote(path)}"
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

    The default file is created with mode 0600 in a 0700 folder on first use. A key file
    that is a symbolic link, belongs to another user, or can be read or written by others
    is refused, with the command that fixes it; so is a weak key (shorter than 256 bits,
    or one byte repeated), from the file or from ``NBCHECKPOINT_KEY``.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        try:
            secret = bytes.fromhex(env.strip())
        except ValueError as e:
            raise ConfigError(f"{ENV_KEY} must be a hex string of at least 64 characters.") from e
        weak = _weakness(secret)
        if weak:
            raise ConfigError(
                f"{ENV_KEY} is too weak: {weak}. Make a strong one with: "
                f'python -c "import secrets; print(secrets.token_hex(32))"'
            )
        return SigningKey(secret, f"${ENV_KEY}", env)
    path = os.environ.get(ENV_KEY_FILE) or default_key_path()
    if os.path.lexists(path):
        return SigningKey(_read_key_file(path), path)
    if not create:
        raise ConfigError(
            f"No signing key at {path}. Copy the key from the machine that saved the checkpoints "
            f"there, or set {ENV_KEY} or {ENV_KEY_FILE}."
        )
    return SigningKey(_create_key_file(path), path)
