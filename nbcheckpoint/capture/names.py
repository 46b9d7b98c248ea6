"""Which variables a cell reads or writes, found from its syntax tree and the functions it calls."""

from __future__ import annotations

import ast
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any

RUNTIME_PREFIXES = ("_nbc_", "__nbc_")

#: Names IPython and ipykernel put in the namespace: never the user's variables.
IPYTHON_NAMES = frozenset(
    {
        "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "_sh", "_exit_code",
        "In", "Out", "exit", "quit", "get_ipython",
    }
)  # fmt: skip
# Output and input history: ``_5`` is Out[5], ``_i5`` is In[5].
_HISTORY = re.compile(r"_i?\d+")


def cell_names(tree: ast.AST) -> set[str]:
    """Every plain name the code mentions, read, written or deleted, at any depth.

    Examples
    --------
    >>> sorted(cell_names(ast.parse("for i in range(n):\\n    model.fit(x)")))
    ['i', 'model', 'n', 'range', 'x']
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found.add((alias.asname or alias.name).split(".")[0])
    return found


def assigned_names(tree: ast.AST) -> set[str]:
    """The plain names the code binds: assignments, loop targets, ``def``, ``class``, imports.

    Examples
    --------
    >>> sorted(assigned_names(ast.parse("for i in range(n):\\n    total += x[i]\\nimport numpy as np")))
    ['i', 'np', 'total']
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Global):
            found.update(node.names)
    return found


def _code_globals(code: types.CodeType, seen: set[int]) -> set[str]:
    if id(code) in seen:
        return set()
    seen.add(id(code))
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_globals(const, seen)
    return names


def reachable_names(
    names: Iterable[str], namespace: Mapping[str, Any], limit: int = 10_000
) -> set[str]:
    """``names`` plus the globals that the namespace's own functions among them use, transitively.

    A cell that calls ``train()`` changes what ``train`` changes, though the cell never names it.
    """
    result = {n for n in names if n in namespace}
    todo = list(result)
    seen_code: set[int] = set()
    while todo and len(result) < limit:
        value = namespace.get(todo.pop())
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType) and getattr(value, "__globals__", None) is namespace:
            for name in _code_globals(code, seen_code):
                if name in namespace and name not in result:
                    result.add(name)
                    todo.append(name)
    return result


def is_user_name(name: str) -> bool:
    """Whether ``name`` can be a user's variable: not IPython's, not a dunder, not ours.

    A leading underscore alone means nothing: ``_scale`` is the user's.

    Examples
    --------
    >>> [n for n in ["_scale", "_", "_i3", "_12", "__name__", "_nbc_due_", "In", "x"] if is_user_name(n)]
    ['_scale', 'x']
    """
    if name in IPYTHON_NAMES or name.startswith(RUNTIME_PREFIXES):
        return False
    if len(name) > 4 and name.startswith("__") and name.endswith("__"):
        return False  # __builtins__, __name__, __session__, __vsc_ipynb_file__...
    return _HISTORY.fullmatch(name) is None


def user_names(
    namespace: Mapping[str, Any], candidates: Iterable[str], hidden: Iterable[str] = ()
) -> list[str]:
    """Filter candidates to the user's own variables: present, not hidden, not IPython's, not ours."""
    hidden_set = set(hidden)
    return sorted(
        name
        for name in candidates
        if name in namespace and name not in hidden_set and is_user_name(name)
    )
