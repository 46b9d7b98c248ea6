"""Recognise variables that hold credentials, anywhere inside them, so they are withheld from checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# A name is split into lowercase words (snake_case and camelCase alike); it names a
# credential when one of its words, or two words side by side, say so. Whole words only:
# "secretary_df", "tokenizer", "tokens" and "author" do not match.
_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "secrets",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
        "creds",
        "authorization",
        "auth",
        "bearer",
        "cookie",
    }
)
# Words that name a credential only as the last word: "db_pass", "user_pw", "token",
# "auth_token" (but not "pass_rate" or "token_count").
_LAST_WORDS = frozenset({"pass", "pw", "token"})
# Environment variables that only look like credentials: the working directory.
_NOT_NAMES = frozenset({"PWD", "OLDPWD"})
# A name ending in one of these says where a secret is, not what it is:
# "NBCHECKPOINT_KEY_FILE", "password_path", "SSH_AUTH_SOCK".
_WHERE_WORDS = frozenset({"file", "path", "dir", "sock", "socket"})
_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("secret", "key"),
        ("private", "key"),
        ("signing", "key"),
        ("client", "secret"),
        ("session", "token"),
        ("nbcheckpoint", "key"),
    }
)

_VALUE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "a GitHub token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    ),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an OpenAI-style secret key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}")),
    ("a Stripe secret key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{16,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    (
        "a JSON web token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    (
        "a URL with a password",
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:[^\s/@]{3,}@[^\s/]+"),
    ),
]
# Each pattern above contains one of these literally.
_MARKERS = (
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "sk-",
    "k_live_",
    "AIza",
    "hf_",
    "PRIVATE KEY",
    "eyJ",
    "Bearer",
    "://",
)
# No pattern above matches fewer characters (a URL with a password: "a://b:ccc@d").
_SHORTEST_TOKEN = 10
# One pass finds whether any pattern matches; which one is asked only then.
_ANY_VALUE = re.compile("|".join(f"(?:{p.pattern})" for _, p in _VALUE_PATTERNS))

_MAX_SCAN = 100_000
# The walk inside a variable: how deep, and how many objects in all. A save looks at
# each variable it pickles, on the kernel's main thread (about 5 us an object here).
MAX_DEPTH = 8
MAX_NODES = 2_000
# And how many in all for one save, shared by its variables (each still gets
# MIN_NODES: its own value and what it directly holds).
SAVE_NODES = 5_000
MIN_NODES = 50
# Past this many findings in one variable, the rest are counted, not listed.
MAX_LISTED = 5
# Types never entered: large data that holds no attribute names (arrays, frames,
# tensors), or code.
_OPAQUE_MODULES = ("numpy", "pandas", "torch", "scipy", "polars", "pyarrow", "jax", "tensorflow")
_ATTRIBUTES_OF_CLIENTS = ("auth", "headers", "proxies", "cookies", "_credentials", "_session")


def _words(name: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", snake.lower()) if w]


@functools.lru_cache(maxsize=4096)
def name_reason(name: str) -> str | None:
    """Why a name (a variable, a key of a dict, an attribute) names a credential, or None.

    Examples
    --------
    >>> name_reason("db_pass") is not None, name_reason("tokenizer"), name_reason("secretary_df")
    (True, None, None)
    """
    words = _words(name)
    if not words or name in _NOT_NAMES or words[-1] in _WHERE_WORDS:
        return None
    if any(w in _WORDS for w in words) or words[-1] in _LAST_WORDS:
        return f"its name looks like a credential ({name})"
    if any(pair in _PAIRS for pair in itertools.pairwise(words)):
        return f"its name looks like a credential ({name})"
    return None


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value[:_MAX_SCAN]).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def value_reason(text: str) -> str | None:
    """Why a piece of text looks like a credential by its shape alone (a GitHub token...), or None."""
    if len(text) < _SHORTEST_TOKEN:
        return None
    sample = text[:_MAX_SCAN]
    # Plain substring tests first (about 1 us for a short string): the regular
    # expressions, ten times slower, run only on text that has one of these in it.
    if not any(marker in sample for marker in _MARKERS) or not _ANY_VALUE.search(sample):
        return None
    for label, pattern in _VALUE_PATTERNS:
        if pattern.search(sample):
            return f"its value looks like {label}"
    return None


def _secret_shaped(value: object, name: str) -> bool:
    """Whether ``value``, found under a credential's name, is something to withhold.

    Text is; so is a small tuple or list of text (``auth = ("user", "pw")``), and a
    client's auth object. A number or an array under such a name is not: ``next_token = 5``.
    """
    text = _text(value)
    if text is not None:
        if not text:
            return False
        words = _words(name)
        if words and words[-1] == "token" and len(words) > 1:
            # "next_token", "page_token": only a long word without spaces is a secret.
            return len(text) >= 8 and not any(c.isspace() for c in text)
        return True
    if isinstance(value, (tuple, list)) and 0 < len(value) <= 4:
        return all(_text(v) is not None or v is None for v in value) and any(
            _text(v) for v in value
        )
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    # requests' HTTPBasicAuth and friends: objects whose job is to carry a secret.
    return module.startswith(("requests", "httpx", "aiohttp")) and "auth" in kind.__name__.lower()


@dataclasses.dataclass
class Finding:
    """One credential inside a variable: where (``config['db']['password']``) and why."""

    where: str
    reason: str
    value: str | None = None  # the secret text, kept in memory only, to redact cell text


def _known_client(obj: object, module: str, path: Any) -> Iterator[Finding]:
    """Credentials of common clients that a generic walk might miss or reach too late."""
    if module.startswith(("boto3", "botocore", "aiobotocore")):
        where = _format(path)
        for path in ("", "._session", "._request_signer"):
            holder = getattr(obj, path[1:], None) if path else obj
            creds = getattr(holder, "_credentials", None) if holder is not None else None
            if creds is not None:
                secret = getattr(creds, "secret_key", None)
                yield Finding(
                    f"{where}{path}._credentials",
                    "it holds AWS credentials (a boto3/botocore session or client)",
                    secret if isinstance(secret, str) else None,
                )
                return


# A step from a container to a child: ("[]", key), (".", attribute) or ("{}", None).
Step = tuple[str, Any]
# Where a child is: its parent's path and the step to it, formatted only when reported.
Path = tuple[Any, ...]
_SKIP = (int, float, complex, bool, type(None))


def _children(obj: Any, budget: int) -> Iterator[tuple[str | None, Step, Any]]:
    """(name the child is known by, step to it, the child) for what a walk may enter.

    Numbers and None are left out: under any name, they are not secrets.
    """
    if isinstance(obj, Mapping):
        for k, v in list(itertools.islice(obj.items(), budget)):
            if not isinstance(v, _SKIP):
                yield _text(k), ("[]", k), v
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(list(itertools.islice(obj, budget))):
            if not isinstance(v, _SKIP):
                yield None, ("[]", i), v
        return
    if isinstance(obj, (set, frozenset)):
        for v in list(itertools.islice(obj, budget)):
            if not isinstance(v, _SKIP):
                yield None, ("{}", None), v
        return
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        for k, v in list(itertools.islice(d.items(), budget)):
            if isinstance(k, str) and not isinstance(v, _SKIP):
                yield k, (".", k), v
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                try:
                    value = object.__getattribute__(obj, slot)
                except AttributeError:
                    continue
                yield slot, (".", slot), value


def _format(path: Path) -> str:
    steps: list[Step] = []
    while len(path) == 2:
        path, step = path
        steps.append(step)
    out = str(path[0])
    for kind, key in reversed(steps):
        out += f"[{key!r}]" if kind == "[]" else f".{key}" if kind == "." else "{...}"
    return out


_NOT_ENTERED = (type, type(_format), type(re))


def find_credentials(
    name: str, value: object, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES
) -> list[Finding]:
    """Every credential found in ``value`` (a variable called ``name``), breadth first and bounded.

    The walk enters dicts and other mappings, lists, tuples, sets, dataclasses and plain
    objects (their ``__dict__`` and slots), up to ``max_depth`` levels and ``max_nodes``
    objects; NumPy, pandas and similar data are not entered. A value counts when the name
    it is found under (variable, key, attribute) names a credential and it is text, or
    when its text has the shape of a known token.

    Examples
    --------
    >>> [f.where for f in find_credentials("config", {"db": {"password": "x"}, "n": 1})]
    ["config['db']['password']"]
    >>> find_credentials("tokens", ["a", "b"])
    []
    """
    found: list[Finding] = []
    seen: set[int] = set()
    # (name it is known by, path, object, depth, why an enclosing name makes it secret)
    queue: deque[tuple[str, Path, Any, int, str | None]] = deque([(name, (name,), value, 0, None)])
    nodes = 0
    while queue and nodes < max_nodes:
        label, path, obj, depth, inherited = queue.popleft()
        nodes += 1
        named = name_reason(label)
        if named and _secret_shaped(obj, label):
            found.append(Finding(_format(path), named, _text(obj)))
            continue
        text = _text(obj)
        if text is not None:
            # Text inside ``credentials = {"github": "..."}`` is secret by where it is.
            why = inherited if inherited and text else value_reason(text)
            if why:
                found.append(Finding(_format(path), why, text))
            continue
        if id(obj) in seen or depth >= max_depth or isinstance(obj, _NOT_ENTERED):
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind is not dict and kind is not list and kind is not tuple:
            module = getattr(kind, "__module__", "") or ""
            if module.startswith(_OPAQUE_MODULES):
                continue
            client = list(_known_client(obj, module, path))
            if client:
                found.extend(client)
                continue
        try:
            children = list(_children(obj, max_nodes - nodes))
        except Exception:  # a mapping whose items() fails: nothing to see in it
            continue
        # A container under a credential's name passes that on to all the text it holds.
        inherit = named or inherited
        for key, step, child in children:
            label_of = key if key is not None else label
            queue.append((label_of, (path, step), child, depth + 1, inherit))
    return found


def credential_reason(name: str, value: object) -> str | None:
    """Why ``name = value`` looks like a credential, or None (the first finding's reason and place).

    Examples
    --------
    >>> credential_reason("api_key", "abc")
    'its name looks like a credential (api_key)'
    >>> credential_reason("tokenizer", "abc") is None
    True
    """
    found = find_credentials(name, value)
    if not found:
        return None
    return describe(name, found)


def describe(name: str, found: list[Finding]) -> str:
    """One line for a withheld variable: the first finding's reason, and where each one is."""
    first = found[0]
    if len(found) == 1 and first.where == name:
        return first.reason
    places = ", ".join(f.where for f in found[:MAX_LISTED])
    more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    return f"{first.reason}, at {places}{more}"


REDACTED = "[withheld]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in ``secrets``, and anything shaped like a token, replaced.

    Used on the cell text a manifest records (its first line), which may spell out the very
    value a variable was withheld for.

    Examples
    --------
    >>> redact('pw = "hunter2"; n = 1', ["hunter2"])
    'pw = "[withheld]"; n = 1'
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for _label, pattern in _VALUE_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
