"""The subcommands of the ``%checkpoint`` line magic: list, show, restore, save, rm, gc, auto, config, panel.

A mixin of the ``Checkpoint`` magics class, which provides the settings and the store.
"""

from __future__ import annotations

import importlib
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

from ..capture.arm import available
from ..capture.engine import install_runtime, kernel_identity
from ..capture.names import user_names
from ..capture.writer import choose, estimate_bytes
from ..errors import CheckpointError, ConfigError
from ..format import human_bytes, parse_duration, parse_size, relative_time, table
from ..store import Restored, load_key
from ..store.serializer import restore_rng


def _short_id(text: str) -> int:
    stripped = text.strip().lstrip("#")
    if not stripped.isdigit():
        raise UsageError(
            f"{text!r} is not a checkpoint id; ids look like 12 or #12 (see %checkpoint list)."
        )
    return int(stripped)


class LineCommands:
    """``%checkpoint SUBCOMMAND ...``: one ``_cmd_<name>`` method per subcommand."""

    def _line(self, line: str) -> Any:
        words = shlex.split(line)
        if not words or words[0] in ("help", "-h", "--help"):
            print(LINE_HELP)
            return None
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(
                f"%checkpoint: unknown command {command!r}. "
                "Use list, show, restore, save, rm, gc, auto, config or panel."
            )
        try:
            return handler(rest)
        except CheckpointError as e:
            raise UsageError(str(e)) from e

    @staticmethod
    def _parser(prog: str) -> MagicArgumentParser:
        return MagicArgumentParser(prog=f"%checkpoint {prog}", add_help=False)

    def _cmd_list(self, argv: list[str]) -> None:
        p = self._parser("list")
        p.add_argument("--store")
        args = p.parse_args(argv)
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        rows = []
        for ck in store.list(nb):
            cell = ck.body.get("cell") or {}
            count = cell.get("execution_count")
            position = (ck.body.get("position") or {}).get("description") or ""
            rows.append(
                [
                    f"#{ck.id}" + (" (pinned)" if ck.pinned else ""),
                    relative_time(ck.created) if ck.created else "?",
                    (f"[{count}] " if count is not None else "")
                    + str(cell.get("first_line", ""))[:30],
                    position,
                    ck.status if ck.verified else f"UNVERIFIED: {ck.problem}",
                    str(len(ck.variables)),
                    human_bytes(ck.total_bytes),
                ]
            )
        if not rows:
            print(f"No checkpoints yet for {nb.path} in {store.url}.")
            return
        print(table(rows, ["id", "time", "cell", "position", "status", "vars", "size"]))

    def _cmd_show(self, argv: list[str]) -> None:
        p = self._parser("show")
        p.add_argument("id")
        p.add_argument("--store")
        args = p.parse_args(argv)
        ck = self.open_store(args.store).read_checkpoint(self.notebook_ref(), _short_id(args.id))
        rows = [
            [n, v["type"], human_bytes(v["size"]), ", ".join(v.get("shared_with", []))]
            for n, v in sorted(ck.variables.items())
        ]
        print(f"Checkpoint #{ck.id} · {ck.status} · {relative_time(ck.created)}")
        if rows:
            print(table(rows, ["variable", "type", "size", "shared with"]))
        if ck.body["modules"]:
            print(
                "modules: " + ", ".join(f"{k} ({v})" for k, v in sorted(ck.body["modules"].items()))
            )
        for kind in ("skipped", "withheld"):
            for name, info in sorted(ck.body[kind].items()):
                print(f"{kind}: {name} ({info['type']}): {info['reason']}")

    def _cmd_restore(self, argv: list[str]) -> None:
        p = self._parser("restore")
        p.add_argument("args", nargs="*")
        p.add_argument("--trust", action="store_true")
        p.add_argument("--store")
        args = p.parse_args(argv)
        ident = None
        names = list(args.args)
        if names and names[0].lstrip("#").isdigit():
            ident = _short_id(names.pop(0))
        restored = self.open_store(args.store).load(
            self.notebook_ref(), ident, names or None, trust=args.trust
        )
        self.apply(restored)
        print(self.describe_restore(restored))

    def apply(self, restored: Restored) -> list[str]:
        """Put restored variables, imports and random states into the user namespace."""
        ns = self.user_ns
        ns.update(restored.values)
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
        return problems

    @staticmethod
    def describe_restore(restored: Restored) -> str:
        ck = restored.checkpoint
        cell = ck.body.get("cell") or {}
        where = []
        if cell.get("execution_count") is not None:
            where.append(f"cell [{cell['execution_count']}]")
        where.append(relative_time(ck.created))
        position = (ck.body.get("position") or {}).get("description")
        if position:
            where.append(position)
        names = sorted(restored.values)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        lines = [
            f"Restored checkpoint #{ck.id} ({', '.join(where)}): {len(names)} variables"
            + (f" ({shown})" if names else "")
            + (f", {len(restored.modules)} imports" if restored.modules else "")
            + "."
        ]
        left_out = {**ck.body.get("skipped", {}), **ck.body.get("withheld", {})}
        for name, info in sorted(left_out.items()):
            lines.append(f"  not saved: {name} ({info['type']}): {info['reason']}")
        for name, why in sorted(restored.failed.items()):
            lines.append(f"  not restored: {name}: {why}")
        for ident, why in sorted(restored.passed_over.items(), reverse=True):
            lines.append(f"  passed over #{ident}: {why}")
        if not ck.verified:
            lines.append(f"  warning: restored without a valid signature ({ck.problem}).")
        return "\n".join(lines)

    def _cmd_save(self, argv: list[str]) -> None:
        p = self._parser("save")
        p.add_argument("names", nargs="*")
        p.add_argument("--store")
        args = p.parse_args(argv)
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
            keep=self.keep,
            max_size=self._max_size_bytes(),
        )
        print(
            f"Saved checkpoint #{ck.id}: {len(ck.variables)} variables, {human_bytes(ck.total_bytes)} "
            f"({human_bytes(ck.new_bytes)} new)."
        )
        for kind in ("skipped", "withheld"):
            for name, info in sorted(ck.body[kind].items()):
                print(f"  {kind}: {name} ({info['type']}): {info['reason']}")

    def _cmd_rm(self, argv: list[str]) -> None:
        p = self._parser("rm")
        p.add_argument("ids", nargs="+")
        p.add_argument("--store")
        args = p.parse_args(argv)
        store = self.open_store(args.store)
        for text in args.ids:
            store.delete(self.notebook_ref(), _short_id(text))
            print(f"Removed checkpoint #{_short_id(text)}.")

    def _cmd_gc(self, argv: list[str]) -> None:
        p = self._parser("gc")
        p.add_argument("--keep", type=int)
        p.add_argument("--max-size")
        p.add_argument("--store")
        args = p.parse_args(argv)
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

    def _cmd_auto(self, argv: list[str]) -> None:
        p = self._parser("auto")
        p.add_argument("state", choices=["on", "off"])
        p.add_argument("--min-duration", default=None)
        args = p.parse_args(argv)
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

    def _cmd_config(self, argv: list[str]) -> None:
        self._parser("config").parse_args(argv)
        nb = self.notebook_ref()
        try:
            key_source = load_key(create=False).source
        except ConfigError:
            key_source = "not created yet (made on the first save)"
        rows = [
            ["store", self.store_url()],
            ["notebook", nb.path],
            ["every", f"{self.every:g} s"],
            ["keep", str(self.keep) if self.keep is not None else "all"],
            ["max size", self.max_size or "no limit"],
            ["auto", f"on (cells over {self.auto_min_duration:g} s)" if self.auto else "off"],
            ["resume", "on" if self.resume else "off"],
            ["mode", self._mode_reason()],
            ["safe points", self._markers_reason()],
            ["credentials", "saved" if self.include_credentials else "withheld"],
            ["signing key", key_source],
        ]
        print(table(rows, ["setting", "value"]))

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

    def _cmd_panel(self, argv: list[str]) -> None:
        p = self._parser("panel")
        p.add_argument("--store")
        args = p.parse_args(argv)
        # Imported here: ipywidgets is only needed once someone asks for the panel.
        from IPython.display import display

        from ..widgets import CheckpointPanel

        display(CheckpointPanel.from_magics(self, args.store))


LINE_HELP = """\
%%checkpoint [NAME ...] [--every 30s] [--keep N] [--store URL] [--no-resume]
    Run the cell, saving its variables at safe points while it runs.
%checkpoint list                      this notebook's checkpoints
%checkpoint show ID                   variables of a checkpoint, and what was left out
%checkpoint restore [ID] [NAME ...]   put variables back (default: the latest checkpoint)
%checkpoint save [NAME ...]           save now (default: every variable)
%checkpoint rm ID                     remove a checkpoint
%checkpoint gc [--keep N] [--max-size 10GB]   remove old checkpoints and unused data
%checkpoint auto on|off [--min-duration 5s]   save after each long cell
%checkpoint config                    where checkpoints go and the settings
Settings: %config Checkpoint.every = 30 (see %config Checkpoint)"""
