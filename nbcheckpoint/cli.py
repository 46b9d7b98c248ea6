"""The ``nbcheckpoint`` terminal command: list, show, diff, verify, remove, pin and collect checkpoints in a store.

Exit codes: 0 success, 1 failure (a missing checkpoint, a store that does not verify),
2 usage error (bad arguments, an id that several notebooks share).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import AmbiguousCheckpoint, CheckpointError, CheckpointNotFound, VerificationError
from .format import human_bytes, parse_duration, parse_size, printable, relative_time, table
from .store import Checkpoint, CheckpointStore, NotebookRef, default_store_url
from .store.diff import diff_checkpoints, render
from .store.manifest import Manifest
from .store.records import Problem
from .store.store import DEFAULT_GRACE

PROG = "nbcheckpoint"
TEXT_WIDTH = 40


class UsageError(Exception):
    """The command line asks for something that cannot mean anything: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Turns argparse's usage-and-exit into one error line printed by ``main``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------- arguments
def _checkpoint_id(text: str) -> int:
    digits = text.strip().removeprefix("#")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a checkpoint id: write a number such as 12 or #12"
        )
    return int(digits)


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Keep our parsers' own messages: argparse only shows the text of ArgumentTypeError."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(
            f"{text!r} is not a number of checkpoints: write a whole number of at least 1"
        )
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nbcheckpoint`` command.

    Examples
    --------
    >>> build_parser().parse_args(["show", "#12"]).ident
    12
    """
    # --store is accepted before or after the command; SUPPRESS keeps a command's
    # absent option from overwriting one given before it.
    store_opt = _Parser(add_help=False)
    store_opt.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="store folder or fsspec URL (default: $NBCHECKPOINT_STORE, else ./.nbcheckpoint)",
    )
    json_opt = _Parser(add_help=False)
    json_opt.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of a table"
    )
    nb_opt = _Parser(add_help=False)
    nb_opt.add_argument(
        "--notebook",
        "-n",
        metavar="NB",
        help="notebook key, a unique prefix of one, or the path of the .ipynb file",
    )
    id_opt = _Parser(add_help=False)
    id_opt.add_argument(
        "ident", metavar="ID", type=_checkpoint_id, help="checkpoint id, such as 12 or #12"
    )

    parser = _Parser(
        prog=PROG, description="Inspect and maintain the checkpoints of Jupyter notebooks."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="store folder or fsspec URL (default: $NBCHECKPOINT_STORE, else ./.nbcheckpoint)",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    def command(
        name: str, run: Callable[..., int], help: str, parents: list[_Parser]
    ) -> argparse.ArgumentParser:
        shared: list[_Parser] = [store_opt, *parents]
        sub = commands.add_parser(name, help=help, description=help, parents=shared)
        sub.set_defaults(run=run)
        return sub

    command("list", cmd_list, "list checkpoints, oldest first", [nb_opt, json_opt])
    command(
        "show",
        cmd_show,
        "show one checkpoint: variables, skipped and withheld ones, modules",
        [id_opt, nb_opt, json_opt],
    )
    diff = command(
        "diff",
        cmd_diff,
        "compare two checkpoints of a notebook: variables added, removed, changed, with sizes, "
        "shapes and dtypes (from the signed manifests; nothing is loaded)",
        [nb_opt, json_opt],
    )
    diff.add_argument(
        "before", metavar="ID", type=_checkpoint_id, help="the earlier checkpoint, such as 12"
    )
    diff.add_argument(
        "after", metavar="ID2", type=_checkpoint_id, help="the later checkpoint, such as 15"
    )
    diff.add_argument(
        "--all", action="store_true", help="also list the variables that are the same"
    )
    command(
        "verify",
        cmd_verify,
        "check every signature and blob; exit 1 if anything is wrong",
        [nb_opt, json_opt],
    )
    command("rm", cmd_rm, "delete a checkpoint (its data goes at the next gc)", [id_opt, nb_opt])
    command("pin", cmd_pin, "keep a checkpoint through retention", [id_opt, nb_opt])
    command("unpin", cmd_unpin, "let retention remove a checkpoint again", [id_opt, nb_opt])
    gc = command(
        "gc", cmd_gc, "apply retention to every notebook, then delete unreferenced data", [json_opt]
    )
    gc.add_argument(
        "--keep",
        metavar="N",
        type=_typed(_positive_int),
        help="keep the N newest checkpoints of each notebook (pinned ones are always kept)",
    )
    gc.add_argument(
        "--max-size",
        metavar="SIZE",
        type=_typed(parse_size),
        help="remove the oldest unpinned checkpoints while the store holds more than SIZE, e.g. 10GB",
    )
    gc.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_typed(parse_duration),
        default=DEFAULT_GRACE,
        help="spare unreferenced data younger than this, which a running save may still need "
        f"(default {DEFAULT_GRACE:g}; 30s, 5m, 1h also work)",
    )
    return parser


# ---------------------------------------------------------------- lookups
def _resolve_notebook(store: CheckpointStore, text: str) -> str:
    """A notebook key from a key, a unique prefix of one, or a notebook's path."""
    keys = store.notebooks()
    if text in keys:
        return text
    if text.endswith(".ipynb") or os.path.isfile(text):
        return NotebookRef.from_path(text).key
    matches = [k for k in keys if k.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"notebook {text!r} matches several notebooks ({', '.join(matches)}); give more of its key"
        )
    known = f"; the notebooks there are {', '.join(keys)}" if keys else "; it holds no checkpoints"
    raise CheckpointError(f"No notebook {text!r} in the store at {store.url}{known}.")


def _has(store: CheckpointStore, key: str, ident: int) -> bool:
    try:
        store.read_checkpoint(key, ident, trust=True)
    except CheckpointNotFound:
        return False
    except VerificationError:
        return True  # damaged, but there: it can still be shown as damaged or removed
    return True


def _locate(store: CheckpointStore, ident: int, notebook: str | None) -> str:
    """The key of the notebook that holds checkpoint ``ident``."""
    if notebook:
        return _resolve_notebook(store, notebook)
    keys = store.notebooks()
    if len(keys) == 1:
        return keys[0]  # the store's own error then lists the ids it does have
    holders = [k for k in keys if _has(store, k, ident)]
    if not holders:
        error = CheckpointNotFound(ident, None, [] if not keys else None)
        if keys:
            error.args = (
                f"No checkpoint #{ident} in any notebook of the store at {store.url} ({', '.join(keys)}).",
            )
        raise error
    if len(holders) > 1:
        raise AmbiguousCheckpoint(ident, holders)
    return holders[0]


# ---------------------------------------------------------------- summaries
def _local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def _short(text: str, width: int = TEXT_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell_info(m: Manifest | None) -> dict[str, Any] | None:
    if m is None or m.cell is None:
        return None
    return {"execution_count": m.cell.execution_count, "first_line": m.cell.first_line}


def _cell_text(m: Manifest | None, width: int = TEXT_WIDTH) -> str:
    if m is None or m.cell is None:
        return ""
    count = m.cell.execution_count
    line = _short(m.cell.first_line, width)
    return f"[{count}] {line}".strip() if count is not None else line


def _position(m: Manifest | None) -> str | None:
    if m is None or m.position is None:
        return None
    return m.position.description or None


def _summary(ck: Checkpoint) -> dict[str, Any]:
    """One checkpoint as the stable dict that ``list --json`` prints.

    One that cannot be read has status ``damaged`` (or ``newer format``) and says why in ``problem``.
    """
    m = ck.manifest
    return {
        "id": ck.id,
        "notebook": ck.notebook,
        "path": None if m is None else m.notebook.path,
        "created": None if m is None else m.created,
        "time": None if m is None else _iso_time(m.created),
        "status": ck.status,
        "cell": _cell_info(m),
        "position": _position(m),
        "variables": [] if m is None else sorted(m.variables),
        "total_bytes": ck.total_bytes,
        "new_bytes": ck.new_bytes,
        "pinned": ck.pinned,
        "verified": ck.verified,
        "problem": ck.problem,
    }


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------- commands
def cmd_list(store: CheckpointStore, args: argparse.Namespace) -> int:
    key = _resolve_notebook(store, args.notebook) if args.notebook else None
    found = sorted(store.list(key), key=lambda c: (c.notebook, c.id))
    if args.json:
        _print_json([_summary(c) for c in found])
        return 0
    if not found:
        where = f" for {key}" if key else ""
        print(f"No checkpoints{where} in {store.url}.")
        return 0
    now = time.time()
    rows = []
    for ck in found:
        s = _summary(ck)
        when = (
            "?"
            if ck.manifest is None
            else f"{_local_time(ck.created)} ({relative_time(ck.created, now)})"
        )
        rows.append(
            [
                f"#{ck.id}",
                ck.notebook,
                when,
                s["status"],
                _cell_text(ck.manifest),
                _short(s["position"] or ""),
                len(s["variables"]),
                f"{human_bytes(ck.new_bytes)} / {human_bytes(ck.total_bytes)}",
                "pinned" if ck.pinned else "",
                "yes" if ck.verified else "NO",
            ]
        )
    headers = [
        "id",
        "notebook",
        "time",
        "status",
        "cell",
        "position",
        "vars",
        "new / total",
        "pinned",
        "verified",
    ]
    print(table(rows, headers, align="rlllllrrll"))
    problems = [c for c in found if c.problem]
    if problems:
        print()
        for ck in problems:
            print(printable(f"#{ck.id} of {ck.notebook}: {ck.problem}"))
    return 0


def _details(ck: Checkpoint) -> dict[str, Any]:
    m = ck.manifest
    if m is None:  # read_checkpoint raises for these; kept total for safety
        raise CheckpointError(f"Checkpoint #{ck.id} cannot be read: {ck.problem}.")
    out = _summary(ck)
    out["variables"] = [
        {
            "name": name,
            "type": info.type,
            "size": info.size,
            "shared_with": sorted(info.shared_with),
        }
        for name, info in sorted(m.variables.items())
    ]
    out["skipped"] = [
        {"name": name, "type": e.type, "reason": e.reason} for name, e in sorted(m.skipped.items())
    ]
    out["withheld"] = [
        {"name": name, "type": e.type, "reason": e.reason} for name, e in sorted(m.withheld.items())
    ]
    out["modules"] = [{"name": n, "module": mod} for n, mod in sorted(m.modules.items())]
    out["versions"] = dict(m.versions)
    out["parent"] = m.parent
    return out


def cmd_show(store: CheckpointStore, args: argparse.Namespace) -> int:
    key = _locate(store, args.ident, args.notebook)
    ck = store.read_checkpoint(key, args.ident, trust=True)
    d = _details(ck)
    if args.json:
        _print_json(d)
        return 0
    print(printable(f"Checkpoint #{ck.id} of {ck.notebook} ({d['path']})"))
    facts = [
        ("created", f"{_local_time(ck.created)} ({relative_time(ck.created)})"),
        ("status", d["status"]),
        ("verified", "yes" if ck.verified else f"NO: {ck.problem}"),
        ("pinned", "yes" if ck.pinned else "no"),
        ("cell", _cell_text(ck.manifest, width=72) or "-"),
        ("position", d["position"] or "-"),
        ("size", f"{human_bytes(ck.new_bytes)} new, {human_bytes(ck.total_bytes)} total"),
        ("parent", f"#{d['parent']}" if d["parent"] is not None else "-"),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(d["versions"].items())) or "-"),
    ]
    for label, value in facts:
        print(printable(f"  {label:<9} {value}"))

    def section(title: str, rows: list[list[Any]], headers: list[str], align: str = "") -> None:
        print()
        if not rows:
            print(f"{title}: none")
            return
        print(printable(f"{title} ({len(rows)}):"))
        print(table(rows, headers, align))

    section(
        "Variables",
        [
            [v["name"], v["type"], human_bytes(v["size"] or 0), ", ".join(v["shared_with"])]
            for v in d["variables"]
        ],
        ["name", "type", "size", "shared with"],
        "llrl",
    )
    section(
        "Skipped, could not be saved",
        [[s["name"], s["type"], s["reason"]] for s in d["skipped"]],
        ["name", "type", "reason"],
    )
    section(
        "Withheld on purpose",
        [[w["name"], w["type"], w["reason"]] for w in d["withheld"]],
        ["name", "type", "reason"],
    )
    section(
        "Modules, re-imported on restore",
        [[m["name"], m["module"]] for m in d["modules"]],
        ["name", "module"],
    )
    return 0


def cmd_diff(store: CheckpointStore, args: argparse.Namespace) -> int:
    key = _locate(store, args.before, args.notebook)
    compared = diff_checkpoints(store, key, args.before, args.after)
    if args.json:
        _print_json(compared.to_dict())
        return 0
    print(render(compared, show_same=args.all))
    return 0


def cmd_verify(store: CheckpointStore, args: argparse.Namespace) -> int:
    key = _resolve_notebook(store, args.notebook) if args.notebook else None
    count = len(store.list(key))
    # Annotated because mypy reads store's ``-> list[...]`` as its own ``list`` method.
    problems: list[Problem] = sorted(
        store.verify(key), key=lambda p: (p.notebook, p.ident or 0, p.what)
    )
    if args.json:
        _print_json([{"notebook": p.notebook, "id": p.ident, "what": p.what} for p in problems])
        return 1 if problems else 0
    if not problems:
        print(f"{_plural(count, 'checkpoint')} verified.")
        return 0
    rows = [[p.notebook, "" if p.ident is None else f"#{p.ident}", p.what] for p in problems]
    print(table(rows, ["notebook", "id", "problem"], align="lrl"))
    bad = len({(p.notebook, p.ident) for p in problems})
    print(f"\n{_plural(len(problems), 'problem')} in {bad} of {_plural(count, 'checkpoint')}.")
    return 1


def cmd_rm(store: CheckpointStore, args: argparse.Namespace) -> int:
    key = _locate(store, args.ident, args.notebook)
    store.delete(key, args.ident)
    print(
        f"Removed checkpoint #{args.ident} of {key}; `{PROG} gc` frees the data no other checkpoint uses."
    )
    return 0


def _set_pin(store: CheckpointStore, args: argparse.Namespace, pinned: bool) -> int:
    key = _locate(store, args.ident, args.notebook)
    store.pin(key, args.ident, pinned)
    if pinned:
        print(f"Pinned checkpoint #{args.ident} of {key}: retention will keep it.")
    else:
        print(f"Unpinned checkpoint #{args.ident} of {key}: retention may remove it.")
    return 0


def cmd_pin(store: CheckpointStore, args: argparse.Namespace) -> int:
    return _set_pin(store, args, True)


def cmd_unpin(store: CheckpointStore, args: argparse.Namespace) -> int:
    return _set_pin(store, args, False)


def cmd_gc(store: CheckpointStore, args: argparse.Namespace) -> int:
    removed: list[tuple[str, int]] = []
    if args.keep is not None or args.max_size is not None:
        for key in sorted(store.notebooks()):
            # An infinite grace makes retain's own gc a no-op, so the single gc below
            # does all the deleting and its report counts everything freed.
            ids: Iterable[int] = store.retain(
                key, keep=args.keep, max_size=args.max_size, grace=math.inf
            )
            removed.extend((key, i) for i in ids)
    report = store.gc(grace=args.grace)
    usage = store.disk_usage()
    if args.json:
        _print_json(
            {
                "removed_checkpoints": [{"notebook": k, "id": i} for k, i in removed],
                "removed_blobs": report.removed_blobs,
                "freed_bytes": report.freed_bytes,
                "kept_recent": report.kept_recent,
                "removed_tmp": report.removed_tmp,
                "disk_usage": usage,
            }
        )
        return 0
    if removed:
        by_nb: dict[str, list[str]] = {}
        for k, i in removed:
            by_nb.setdefault(k, []).append(f"#{i}")
        listed = "; ".join(f"{k} {', '.join(ids)}" for k, ids in by_nb.items())
        print(f"Removed {_plural(len(removed), 'checkpoint')}: {listed}.")
    elif args.keep is not None or args.max_size is not None:
        print("Retention removed no checkpoints.")
    print(
        f"Removed {_plural(report.removed_blobs, 'unused blob')}, freed {human_bytes(report.freed_bytes)}."
    )
    if report.kept_recent:
        print(
            f"Kept {_plural(report.kept_recent, 'unused blob')} younger than the grace period "
            f"({args.grace:g} s); a save may still be writing them."
        )
    if report.removed_tmp:
        print(f"Removed {_plural(report.removed_tmp, 'leftover temporary file')}.")
    print(f"The store now holds {human_bytes(usage)}.")
    return 0


# ---------------------------------------------------------------- entry point
def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbcheckpoint`` command and return its exit status.

    Examples
    --------
    >>> main(["list", "--store", "/nonexistent/store"])
    No checkpoints in /nonexistent/store.
    0
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e), 2)
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    url = args.store or default_store_url(None)
    try:
        return int(args.run(CheckpointStore(url), args))
    except (UsageError, AmbiguousCheckpoint) as e:
        return _fail(str(e), 2)
    except CheckpointError as e:
        return _fail(str(e), 1)
    except OSError as e:
        if isinstance(e, BrokenPipeError):  # `nbcheckpoint list | head`
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
            return 1
        return _fail(f"{e.strerror or e} ({e.filename or url})", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
