"""Recognise variables that hold credentials, so they are withheld from checkpoints by default."""

from __future__ import annotations

import re

# Whole words of a snake_case or camelCase name; "secretary_df" and "tokenizer" do not match.
_NAME_WORDS = re.compile(
    r"""^(?:.*_)?(?:
        password|passwd|passphrase|pwd|secret|secrets|api_?key|apikey|access_?key|
        secret_?key|private_?key|auth_?token|access_?token|refresh_?token|bearer_?token|
        client_?secret|credentials?|aws_secret_access_key|aws_session_token
    )(?:_.*)?$""",
    re.IGNORECASE | re.VERBOSE,
)
_TOKEN_SUFFIX = re.compile(r"^[a-z0-9_]*_token$", re.IGNORECASE)

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
]

_MAX_SCAN = 100_000


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)


def credential_reason(name: str, value: object) -> str | None:
    """Why ``name = value`` looks like a credential, or None.

    Only strings and bytes are judged: a credential is text, and an integer or an
    array called ``next_token`` is not one.

    Examples
    --------
    >>> credential_reason("api_key", "abc")
    'its name looks like a credential (api_key)'
    >>> credential_reason("tokenizer", "abc") is None
    True
    """
    if isinstance(value, bytes):
        try:
            text = value[:_MAX_SCAN].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
    elif isinstance(value, str):
        text = value
    else:
        return None
    snake = _camel_to_snake(name)
    if _NAME_WORDS.match(snake):
        return f"its name looks like a credential ({name})"
    if _TOKEN_SUFFIX.match(snake) and len(text) >= 8 and not any(c.isspace() for c in text):
        return f"its name looks like a credential ({name})"
    sample = text[:_MAX_SCAN]
    for label, pattern in _VALUE_PATTERNS:
        if pattern.search(sample):
            return f"its value looks like {label}"
    return None
