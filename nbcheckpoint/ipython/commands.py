"""The ``%checkpoint`` subcommands (list, show, diff, restore, save, pin, unpin, rm, gc, auto, config,
panel) and the one argument parser that both ``%%checkpoint`` and ``%checkpoint`` parse with.

A mixin of the ``Checkpoint`` magics class, which provides the settings and the store.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import textwrap
import threading
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

from ..capture.arm import available
from ..capture.engine import install_runtime, kernel_identity
from ..capture.events import RESTORED, emit
from ..capture.names import user_names
from ..capture.recipes import (
    Outcome,
    changed_step,
    describe,
    notebook_cells,
    plan_recompute,
    run_recipes,
)
from ..capture.resume import left_out
from ..capture.writer import MODES, choose, estimate_bytes
from ..errors import CheckpointError, ConfigError
from ..format import (
    cell_label,
    human_bytes,
    parse_duration,
    parse_size,
    plural,
    printable,
    relative_time,
    table,
)
from ..gcpause import paused
from ..store import Checkpoint, Restored, load_key
from ..store.manifest import LeftOut
from ..store.pager import unavailable as lazy_unavailable
from ..store.serializer import restore_rng
from ..store.store import DEFAULT_KEEP, DEFAULT_MAX_SIZE, UNLIMITED

#: The subcommand name under which the parser keeps the cell magic's options.
CELL = "%%checkpoint"


def _reason(info: LeftOut) -> str:
    """Why a variable was left out, and where inside it a withheld value sat."""
    if info.where and info.where != info.reason:
        return f"{info.reason} (at {info.where})"
    return info.reason


def _short_id(text: str) -> int:
    stripped = text.strip().lstrip("#")
    if not stripped.isdigit():
        raise UsageError(
            f"{text!r} is not a checkpoint id; ids look like 12 or #12 (see %checkpoint list)."
        )
    return int(stripped)


class _Parser(MagicArgumentParser):
    """Errors name the form they come from: ``%checkpoint show: ... required: ID``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> MagicArgumentParser:
    """The parser of ``%%checkpoint ARGS`` (the ``CELL`` entry) and of each ``%checkpoint``
    subcommand. ``help_text`` writes the help from it, so help and parsing never disagree.

    Examples
    --------
    >>> build_parser().parse_args(["restore", "4", "model"]).args
    ['4', 'model']
    """
    # Help strings avoid the percent sign: argparse formats them with %.
    parser = _Parser(prog="%checkpoint", add_help=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, what: str, prog: str | None = None, **kw: Any) -> MagicArgumentParser:
        p: _Parser = sub.add_parser(
            name,
            prog=prog or f"%checkpoint {name}",
            description=what,
            add_help=False,
            formatter_class=argparse.HelpFormatter,  # IPython's adds reST markup
            **kw,
        )
        return p

    def store_option(p: MagicArgumentParser) -> None:
        p.add_argument(
            "--store", metavar="URL", help="A folder or fsspec URL instead of the notebook's store"
        )

    cell = command(
        CELL,
        "Run the cell, saving its variables at safe points while it runs; "
        "re-run it after a crash to resume where it stopped.",
        prog=CELL,
    )
    cell.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="Variables to save (default: those the cell uses, what its functions reach, imports)",
    )
    cell.add_argument(
        "--every",
        metavar="INTERVAL",
        help="Time between checkpoints: 0.5, 30s, 5m, 1h (default 60s)",
    )
    cell.add_argument(
        "--keep", type=int, metavar="N", help="Keep only the newest N checkpoints of this notebook"
    )
    store_option(cell)
    cell.add_argument(
        "--mode",
        choices=MODES,
        help="How snapshots are written: fork (a child process saves while the cell runs on), "
        "inline (pickled at the safe point, written by a thread), auto (fork for large state)",
    )
    cell.add_argument(
        "--no-resume",
        action="store_true",
        help="Run the cell from the start even if it was interrupted",
    )

    p = command("list", "This notebook's checkpoints.")
    store_option(p)
    p = command("show", "One checkpoint's variables, and what was left out and why.")
    p.add_argument(
        "id",
        metavar="ID",
        nargs="?",
        help="A checkpoint id, such as 12 or #12 (default: the latest)",
    )
    store_option(p)
    p = command(
        "diff",
        "Compare two checkpoints, or one with the variables now: added, removed, changed, "
        "with sizes, shapes and dtypes (read from the checkpoints' records, nothing loaded).",
    )
    p.add_argument("before", metavar="ID", help="A checkpoint id, such as 12 or #12")
    p.add_argument(
        "after",
        nargs="?",
        metavar="ID2",
        help="A later checkpoint id (default: now, the notebook's variables as a save would record them)",
    )
    p.add_argument("--all", action="store_true", help="Also list the variables that are the same")
    store_option(p)
    p = command(
        "restore",
        "Put variables back (default: the newest checkpoint that verifies, every variable).",
        usage="%(prog)s [ID] [NAME ...] [--recompute] [--trust] [--store URL]",
    )
    p.add_argument(
        "args", nargs="*", metavar="[ID] [NAME ...]", help="A checkpoint id, then variables"
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="Then re-run the recorded statements that made the variables it could not save "
        "(shown first; they may have side effects)",
    )
    p.add_argument(
        "--trust",
        action="store_true",
        help="Restore even without a valid signature (runs its code)",
    )
    store_option(p)
    p = command("save", "Save now (default: every variable).")
    p.add_argument("names", nargs="*", metavar="NAME", help="Variables to save")
    store_option(p)
    for name, what in (
        ("pin", "Keep a checkpoint whatever --keep and --max-size say."),
        ("unpin", "Let --keep and --max-size remove a checkpoint again."),
    ):
        p = command(name, what)
        p.add_argument("id", metavar="ID", help="A checkpoint id")
        store_option(p)
    p = command("rm", "Remove checkpoints.")
    p.add_argument("ids", nargs="+", metavar="ID", help="Checkpoint ids")
    store_option(p)
    p = command("gc", "Remove old checkpoints, then data no checkpoint uses.")
    p.add_argument("--keep", type=int, metavar="N", help="Keep the newest N checkpoints")
    p.add_argument(
        "--max-size", metavar="SIZE", help="Remove the oldest while above SIZE, e.g. 10GB"
    )
    store_option(p)
    p = command("auto", "Save what changed after each cell that ran long enough.")
    p.add_argument(
        "state", choices=["on", "off"], metavar="on|off", help="Turn auto saving on or off"
    )
    p.add_argument(
        "--min-duration",
        metavar="INTERVAL",
        help="Only after cells that ran this long (default 5s)",
    )
    command(
        "config", "Where checkpoints go, the settings, the signing key, the snapshot mode and why."
    )
    p = command("panel", "The checkpoint history as a panel.")
    store_option(p)
    command("help", "This help.")
    return parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _usage(p: argparse.ArgumentParser) -> str:
    """``prog POSITIONAL ... [--option VALUE] ...``: what to type first comes first."""
    if p.usage:
        return p.usage % {"prog": p.prog}
    words = [p.prog]
    for action in p._actions:
        if action.option_strings:
            continue
        word = str(action.metavar or action.dest)
        if action.nargs == "*":
            word = f"[{word} ...]"
        elif action.nargs == "?":
            word = f"[{word}]"
        elif action.nargs == "+":
            word = f"{word} [{word} ...]"
        words.append(word)
    for action in p._actions:
        if not action.option_strings:
            continue
        value = str(action.metavar or "")
        if not value and action.choices:
            value = "{" + ",".join(map(str, action.choices)) + "}"
        words.append(f"[{action.option_strings[0]}{' ' + value if value else ''}]")
    return " ".join(words)


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, 96, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def help_text(parser: argparse.ArgumentParser | None = None) -> str:
    """Every form of the magic with its options, written from the parser."""
    lines = []
    for name, p in subparsers(parser or PARSER).items():
        lines.extend(_wrap(_usage(p), "", "        "))
        lines.extend(_wrap(str(p.description), "    ", "    "))
        for action in p._actions:
            if action.help is None or action.help == argparse.SUPPRESS:
                continue
            label = ", ".join(action.option_strings) or str(action.metavar or action.dest)
            if action.option_strings and action.metavar:
                label += f" {action.metavar}"
            elif action.option_strings and action.choices:
                label += " {" + ",".join(action.choices) + "}"
            lines.extend(_wrap(f"{label:<24}  {action.help}", "      ", " " * 32))
        if name == CELL:
            lines.append("")
    lines.append("")
    lines.append("Settings: %config Checkpoint.every = 30 (all of them: %config Checkpoint)")
    return "\n".join(lines)


def commands() -> list[str]:
    """The line subcommands, in the order the help lists them."""
    return [name for name in subparsers(PARSER) if name != CELL]


def parse(words: list[str]) -> argparse.Namespace:
    """Parse ``[COMMAND, *ARGS]`` (COMMAND ``CELL`` for the cell magic); a mistake raises
    ``UsageError`` naming the form it is in."""
    args, extra = PARSER.parse_known_args(words)
    if extra:
        prog = CELL if words[0] == CELL else f"%checkpoint {words[0]}"
        raise UsageError(f"{prog}: unrecognized arguments: {' '.join(extra)}")
    return args


def parse_cell_args(args_text: str) -> argparse.Namespace:
    """Parse the arguments of a ``%%checkpoint`` line; a mistake raises ``UsageError``."""
    return parse([CELL, *shlex.split(args_text)])


class LineCommands:
    """``%checkpoint SUBCOMMAND ...``: one ``_cmd_<name>`` method per subcommand of ``PARSER``."""

    def _line(self, line: str) -> Any:
        words = shlex.split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(help_text())
            return None
        if words[0] not in commands():
            raise UsageError(
                f"%checkpoint: unknown command {words[0]!r}. Use {', '.join(commands())} "
                "(%checkpoint help explains each)."
            )
        args = parse(words)
        try:
            return getattr(self, f"_cmd_{args.command}")(args)
        except CheckpointError as e:
            raise UsageError(str(e)) from e

    def _cmd_list(self, args: argparse.Namespace) -> None:
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        rows = []
        for ck in store.list(nb):
            m = ck.manifest
            cell = m.cell if m is not None else None
            label = (
                cell_label(cell.execution_count, cell.first_line, cell.cell_id, width=30)
                if cell is not None
                else ""
            )
            position = m.position if m is not None else None
            rows.append(
                [
                    f"#{ck.id}" + (" (pinned)" if ck.pinned else ""),
                    relative_time(ck.created) if ck.created else "?",
                    label,
                    (position.description if position is not None else None) or "",
                    ck.status if ck.verified else f"UNVERIFIED: {ck.problem}",
                    str(len(ck.variables)),
                    human_bytes(ck.total_bytes),
                ]
            )
        if not rows:
            print(f"No checkpoints yet for {nb.path} in {store.url}.")
            return
        print(table(rows, ["id", "time", "cell", "position", "status", "vars", "size"]))

    def _cmd_show(self, args: argparse.Namespace) -> None:
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        ident = _short_id(args.id) if args.id is not None else store.latest_id(nb)
        if ident is None:
            print(f"No checkpoints yet for {nb.path} in {store.url}.")
            return
        ck = store.read_checkpoint(nb, ident)
        m = ck.manifest
        variables = m.variables if m is not None else {}
        rows = [
            [n, v.type, human_bytes(v.size), ", ".join(v.shared_with)]
            for n, v in sorted(variables.items())
        ]
        print(f"Checkpoint #{ck.id} · {ck.status} · {relative_time(ck.created)}")
        if rows:
            print(table(rows, ["variable", "type", "size", "shared with"]))
        if m is not None and m.modules:
            print("modules: " + ", ".join(f"{k} ({v})" for k, v in sorted(m.modules.items())))
        for kind, name, info in m.left_out() if m is not None else ():
            print(printable(f"{kind}: {name} ({info.type}): {_reason(info)}"))
            if m is not None and kind == "skipped":
                for line in describe(name, m.recipes.get(name)):
                    print(printable("    " + line))

    def _cmd_diff(self, args: argparse.Namespace) -> None:
        # Imported here: %load_ext, on the way to a restore after a crash, does not need it.
        from ..store.diff import diff_sides, live_side, read_side, render

        first = _short_id(args.before)
        second = None if args.after is None else _short_id(args.after)
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        before = read_side(store, nb, first)
        if second is not None:
            after = read_side(store, nb, second)
            method = "content addresses from the two checkpoints' signed records"
        else:
            ns = self.user_ns
            names = user_names(ns, ns.keys(), self.hidden_names())
            after = live_side(store, ns, nb, names, include_credentials=self.include_credentials)
            method = "now: the variables pickled and hashed as a save would, nothing written"
        print(render(diff_sides(before, after, method), show_same=args.all))

    def _cmd_restore(self, args: argparse.Namespace) -> None:
        # The collector stays off until the cell's output is written, not only while the
        # store loads: turned on between the two, it would run at once the collections the
        # load put off (and those of the extension's import, when it was just loaded).
        with paused():
            self._restore(args)

    def _restore(self, args: argparse.Namespace) -> None:
        ident = None
        names = list(args.args)
        if names and names[0].lstrip("#").isdigit():
            ident = _short_id(names.pop(0))
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        if ident is None:
            self.wait_for_savers(store, nb)
        recompute: list[str] | None = None
        if names and args.recompute:
            # NAMEs the checkpoint skipped are recomputed, the others restored.
            ident = ident if ident is not None else store.latest_id(nb)
            if ident is None:
                raise UsageError(f"No checkpoints yet for {nb.path}.")
            m = store.read_checkpoint(nb, ident, trust=args.trust).manifest
            skipped = set(m.skipped) if m is not None else set()
            recompute = [n for n in names if n in skipped]
            names = [n for n in names if n not in skipped]
            if not names:
                ck = store.read_checkpoint(nb, ident, trust=args.trust)
                self._recompute(ck, recompute)
                return
        restored = store.load(nb, ident, names or None, trust=args.trust, lazy=self.lazy_restore)
        self.apply(restored)
        print(self.describe_restore(restored))
        if not names:
            # A full restore also says what the notebook has, or had, that it did not bring back.
            ns = self.user_ns
            now = user_names(ns, ns.keys(), self.hidden_names())
            for line in left_out(restored, now, store.list(nb)).lines(restored.checkpoint):
                print(line)
        m = restored.checkpoint.manifest
        if args.recompute:
            self._recompute(restored.checkpoint, recompute)
        elif m is not None and any(r.steps for r in m.recipes.values()):
            print(
                "Run %checkpoint restore --recompute to re-run the statements shown for the "
                "variables not saved (they may have side effects: read them first)."
            )

    def recompute_text(self, ck: Checkpoint, report: Any) -> None:
        """Recompute what ``ck`` could not save (the panel's Recompute button), then
        ``report(what it said)``.

        A widget's click arrives on another thread than the cells'; the statements must run
        where the cells run (a sqlite3 connection made elsewhere refuses the main thread),
        so off the main thread they wait for the kernel's event loop.
        """

        def run() -> None:
            said: list[str] = []
            try:
                self._recompute(ck, None, said.append)
            except Exception as e:  # shown in the panel, as its other actions do
                said.append(f"Could not recompute: {type(e).__name__}: {e}")
            report("\n".join(said))

        loop = None
        if threading.current_thread() is not threading.main_thread():
            loop = self._event_loop()
        if loop is None:
            run()
        else:
            loop.add_callback(run)

    def _recompute(
        self, ck: Checkpoint, names: list[str] | None = None, say: Any = None
    ) -> list[Outcome]:
        """Re-run the recipes of the variables ``ck`` skipped (or of ``names``), in order,
        after refusing those whose cells changed or whose inputs are missing."""
        say = say or (lambda text: print(text, flush=True))
        m = ck.manifest
        if m is None:
            return []
        wanted = sorted(m.skipped) if names is None else names
        if not wanted:
            say(f"Checkpoint #{ck.id} has no variable it could not save: nothing to recompute.")
            return []
        cells = notebook_cells(self.notebook_ref().path)
        ns = self.user_ns
        plan = plan_recompute(
            wanted,
            dict(m.recipes),
            lambda name: name in ns,
            refuse=lambda name, recipe: changed_step(recipe, cells),
        )
        if cells is None and plan.order:
            say("(No notebook file here to check the cells against: recipes run as recorded.)")

        def before(name: str, recipe: Any) -> None:
            say("Recomputing " + "\n".join(printable(line) for line in describe(name, recipe)))

        outcomes = run_recipes(plan.order, dict(m.recipes), ns, before)
        lines = []
        for outcome in outcomes:
            if outcome.ok:
                self.recipes.learn(outcome.name, m.recipes[outcome.name])
                lines.append(f"  recomputed: {outcome.name} ({outcome.detail})")
            else:
                lines.append(f"  failed: {outcome.name}: {outcome.detail}")
        for name, why in plan.refused.items():
            lines.append(f"  not recomputed: {name}: {why}")
        if lines:
            say("\n".join(printable(line) for line in lines))
        return outcomes

    def apply(self, restored: Restored) -> list[str]:
        """Put restored variables, imports and random states into the user namespace."""
        ns = self.user_ns
        ns.update(restored.values)
        if restored.mapped:
            # Which objects came back, so damage found later takes away only those.
            self._restored_ids.update((n, id(v)) for n, v in restored.values.items())
        # Restored values were not made by this kernel's cells; skipped ones keep their recipe.
        self.recipes.forget([*restored.values, *restored.modules])
        m = restored.checkpoint.manifest
        for name, recipe in m.recipes.items() if m is not None else ():
            if name not in self.recipes:
                self.recipes.learn(name, recipe)
        # The AST of the restoring cell does not name these: tell auto mode they changed.
        self._auto_pending |= set(restored.values) | set(restored.modules)
        problems = []
        for name, module in restored.modules.items():
            try:
                ns[name] = importlib.import_module(module)
            except ImportError as e:
                restored.failed[name] = f"import {module} failed ({e})"
                problems.append(name)
        if restored.rng is not None:
            restore_rng(restored.rng)
        install_runtime(ns)  # restored cell functions may carry safe points
        # Whoever restored (panel, magic, JupyterLab), the restart offers are answered:
        # the panels' banners and JupyterLab's notification (through the status channel).
        emit(restored.checkpoint, RESTORED)
        return problems

    @staticmethod
    def describe_restore(restored: Restored) -> str:
        ck = restored.checkpoint
        m = ck.manifest
        cell = m.cell if m is not None else None
        where = []
        label = cell_label(cell.execution_count, cell.first_line, cell.cell_id) if cell else ""
        if label:
            where.append(label)
        where.append(relative_time(ck.created))
        position = m.position.description if m is not None and m.position is not None else None
        if position:
            where.append(position)
        names = sorted(restored.values)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        imports = len(restored.modules)
        lines = [
            f"Restored checkpoint #{ck.id} ({', '.join(where)}): {len(names)} "
            + ("variable" if len(names) == 1 else "variables")
            + (f" ({shown})" if names else "")
            + (f", {imports} import{'s' * (imports != 1)}" if imports else "")
            + "."
        ]
        for _kind, name, info in m.left_out() if m is not None else ():
            lines.append(f"  not saved: {name} ({info.type}): {_reason(info)}")
            if m is not None and name in m.skipped:
                lines.extend("    " + line for line in describe(name, m.recipes.get(name)))
        for name, why in sorted(restored.failed.items()):
            lines.append(f"  not restored: {name}: {why}")
        for ident, why in sorted(restored.passed_over.items(), reverse=True):
            lines.append(f"  passed over #{ident}: {why}")
        if restored.mapped:
            lines.append(
                f"  {human_bytes(restored.mapped)} of arrays are mapped, not read: each part is "
                "read, and checked, when first used."
            )
        if not ck.verified:
            lines.append(f"  warning: restored without a valid signature ({ck.problem}).")
        return "\n".join(printable(line) for line in lines)

    def _cmd_save(self, args: argparse.Namespace) -> None:
        ns = self.user_ns
        missing = [n for n in args.names if n not in ns]
        if missing:
            raise UsageError(f"%checkpoint save: no variable named {', '.join(missing)}.")
        names = list(args.names) or user_names(ns, ns.keys(), self.hidden_names())
        ck = self.open_store(args.store).save(
            ns,
            self.notebook_ref(),
            names,
            status="manual",
            kernel=kernel_identity(),
            include_credentials=self.include_credentials,
            keep=self._keep_count(),
            max_size=self._max_size_bytes(),
            recipes=self.recipes,
        )
        # The same event a %%checkpoint cell's checkpoints raise: live panels and the
        # JupyterLab status bar follow manual saves too.
        emit(ck)
        print(
            f"Saved checkpoint #{ck.id}: {plural(len(ck.variables), 'variable')}, "
            f"{human_bytes(ck.total_bytes)} ({human_bytes(ck.new_bytes)} new)."
        )
        for kind, name, info in ck.manifest.left_out() if ck.manifest is not None else ():
            print(printable(f"  {kind}: {name} ({info.type}): {_reason(info)}"))

    def _cmd_pin(self, args: argparse.Namespace, pinned: bool = True) -> None:
        ident = _short_id(args.id)
        self.open_store(args.store).pin(self.notebook_ref(), ident, pinned)
        if pinned:
            print(
                f"Pinned checkpoint #{ident}: --keep and --max-size leave it (unpin {ident} undoes)."
            )
        else:
            print(f"Unpinned checkpoint #{ident}: --keep and --max-size may remove it again.")

    def _cmd_unpin(self, args: argparse.Namespace) -> None:
        self._cmd_pin(args, pinned=False)

    def _cmd_rm(self, args: argparse.Namespace) -> None:
        store = self.open_store(args.store)
        for text in args.ids:
            store.delete(self.notebook_ref(), _short_id(text))
            print(f"Removed checkpoint #{_short_id(text)}.")

    def _cmd_gc(self, args: argparse.Namespace) -> None:
        store = self.open_store(args.store)
        removed: list[int] = []
        if args.keep is not None or args.max_size:
            try:
                limit = parse_size(args.max_size) if args.max_size else None
            except ValueError as e:
                raise UsageError(f"--max-size: {e}") from e
            removed = store.retain(self.notebook_ref(), keep=args.keep, max_size=limit)
        report = store.gc()
        print(
            f"Removed {len(removed)} checkpoints and {report.removed_blobs} unused blobs "
            f"({human_bytes(report.freed_bytes)} freed)."
        )

    def _cmd_auto(self, args: argparse.Namespace) -> None:
        if args.min_duration is not None:
            try:
                self.auto_min_duration = parse_duration(args.min_duration)
            except ValueError as e:
                raise UsageError(f"--min-duration {args.min_duration}: {e}") from e
        self.auto = args.state == "on"
        if self.auto:
            print(
                f"Auto checkpoints on: after each cell that runs at least {self.auto_min_duration:g} s."
            )
        else:
            print("Auto checkpoints off.")

    def _cmd_config(self, args: argparse.Namespace) -> None:
        nb = self.notebook_ref()
        try:
            key_source = load_key(create=False).source
        except ConfigError:
            key_source = "not created yet (made on the first save)"
        rows = [
            ["store", self.store_url()],
            ["notebook", nb.path],
            ["every", f"{self.every:g} s"],
            ["keep", self._retention_text()[0]],
            ["max size", self._retention_text()[1]],
            ["auto", f"on (cells over {self.auto_min_duration:g} s)" if self.auto else "off"],
            ["resume", "on" if self.resume else "off"],
            ["mode", self._mode_reason()],
            ["restore", self._restore_reason()],
            ["safe points", self._markers_reason()],
            ["credentials", "saved" if self.include_credentials else "withheld"],
            ["signing key", key_source],
        ]
        print(table(rows, ["setting", "value"]))

    def _retention_text(self) -> tuple[str, str]:
        """What retention does after each save, defaults included (and how to change it)."""
        if self.keep is None:
            keep = (
                f"newest {DEFAULT_KEEP} per notebook + pinned (default; Checkpoint.keep = 0: all)"
            )
        elif self.keep == 0:
            keep = "all"
        else:
            keep = f"newest {self.keep} per notebook + pinned"
        size = self._max_size_bytes()
        if size is None:
            cap = f"{human_bytes(DEFAULT_MAX_SIZE)} for the whole store (default; '0': no limit)"
        elif size == UNLIMITED:
            cap = "no limit"
        else:
            cap = f"{human_bytes(size)} for the whole store"
        return keep, cap

    def _restore_reason(self) -> str:
        """How a restore will bring large arrays back, and why."""
        if not self.lazy_restore:
            return "reads everything (Checkpoint.lazy_restore = False)"
        try:
            why = lazy_unavailable(self.open_store().backend)
        except CheckpointError as e:
            why = str(e)
        if why is not None:
            return f"reads everything ({why})"
        return (
            "maps arrays over 1 MB when they add up to 64 MB or more (a smaller state is "
            "read whole): each chunk read and checked when first used"
        )

    def _markers_reason(self) -> str:
        if not self.markers:
            return "flag test in every loop (Checkpoint.markers = False)"
        why = available()
        if why is not None:
            return f"flag test in every loop ({why})"
        return "marker lines in loops without calls, flag test elsewhere"

    def _mode_reason(self) -> str:
        if self.current is not None:
            return f"{self.mode} -> {self.current.mode_reason} (running cell)"
        ns = self.user_ns
        names = user_names(ns, ns.keys(), self.hidden_names())
        try:
            _, reason = choose(self.mode, self.open_store(), estimate_bytes(ns, names))
        except (ValueError, CheckpointError) as e:
            return f"{self.mode} ({e})"
        return f"{self.mode} -> {reason}"

    def _cmd_panel(self, args: argparse.Namespace) -> None:
        # Imported here: ipywidgets is only needed once someone asks for the panel.
        from IPython.display import display

        from ..widgets import CheckpointPanel

        display(CheckpointPanel.from_magics(self, args.store))


PARSER = build_parser()
