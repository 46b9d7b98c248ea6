"""Turn a ``%%checkpoint`` cell into instrumented Python before IPython runs it.

IPython would hand a cell magic its body as a string to run by hand, which loses
top-level ``await``, the display of the last expression and the cell's own line
numbers in tracebacks. Instead an input transformer swaps the magic line for a
marker call on the same line, and an AST transformer instruments the parsed cell,
so IPython itself runs it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

MARKER = "__nbc_cell__"
BEGIN = "__nbc_begin__"
FAIL = "__nbc_fail__"

_MAGIC_LINE = re.compile(r"^%%checkpoint(?:[ \t]+(?P<args>.*?))?[ \t]*$")


def input_transform(lines: list[str]) -> list[str]:
    """Replace a leading ``%%checkpoint ARGS`` line with ``__nbc_cell__("ARGS")``, keeping line numbers."""
    if not lines:
        return lines
    first = lines[0].rstrip("\r\n")
    match = _MAGIC_LINE.match(first)
    if match is None:
        return lines
    args = match.group("args") or ""
    if args.endswith("?"):  # %%checkpoint? asks for help: leave it to IPython
        return lines
    return [f"{MARKER}({args!r})\n", *lines[1:]]


def marker_args(module: ast.Module) -> str | None:
    """The argument text if ``module`` starts with our marker call, else None."""
    if not module.body:
        return None
    first = module.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Call)
        and isinstance(first.value.func, ast.Name)
        and first.value.func.id == MARKER
        and len(first.value.args) == 1
        and isinstance(first.value.args[0], ast.Constant)
        and isinstance(first.value.args[0].value, str)
    ):
        return first.value.args[0].value
    return None


def call_statement(name: str, arg: Any, like: ast.AST) -> ast.stmt:
    """``name(arg)`` as a statement placed at ``like``'s line."""
    stmt = ast.Expr(ast.Call(ast.Name(name, ast.Load()), [ast.Constant(arg)], []))
    ast.copy_location(stmt, like)
    return ast.fix_missing_locations(stmt)


class CellTransformer(ast.NodeTransformer):
    """IPython AST transformer: hands marked cells to ``prepare``; other cells pass untouched.

    IPython unregisters a transformer that raises, so every failure becomes a
    statement that raises a clear error when the cell runs.
    """

    def __init__(self, prepare: Callable[[str, ast.Module], ast.Module]) -> None:
        super().__init__()
        self.prepare = prepare

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.Module):
            return node
        args = marker_args(node)
        if args is None:
            return node
        try:
            return self.prepare(args, node)
        except Exception as error:
            message = f"{type(error).__name__}: {error}" if not _is_usage(error) else str(error)
            return ast.Module(body=[call_statement(FAIL, message, node.body[0])], type_ignores=[])


def _is_usage(error: BaseException) -> bool:
    return type(error).__name__ == "UsageError"
