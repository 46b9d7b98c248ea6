"""The ``%checkpoint`` line magic and the ``%%checkpoint`` cell magic, with their settings."""

from __future__ import annotations

import ast
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import blake3
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Enum, Float, Integer, TraitError, Unicode, validate
from traitlets.config import Config

from ..capture.arm import available
from ..capture.autosave import AutoSaver, AutoSettings
from ..capture.engine import (
    CellInfo,
    CellRun,
    Options,
    from_earlier_kernel,
)
from ..capture.names import (
    assigned_names,
    cell_names,
    is_user_name,
    user_names,
)
from ..capture.recipes import RecipeBook
from ..capture.resume import Refusal, ResumePlan, left_out, plan_resume
from ..capture.rewrite import instrument
from ..capture.writer import FORK_TIMEOUT, MODES, settle
from ..errors import CheckpointError
from ..format import cell_label, human_bytes, parse_duration, parse_size, printable, relative_time
from ..store import CheckpointStore, NotebookRef, default_store_url
from ..store.identity import ENV_NOTEBOOK_ID
from ..store.pager import take_damage
from ..store.store import DEFAULT_KEEP, DEFAULT_MAX_SIZE, UNLIMITED
from .commands import LineCommands, help_text, parse_cell_args
from .damage import describe as describe_damage
from .damage import withdraw
from .identity import notebook_ref
from .reporter import DisplayReporter, after_cell_reports
from .transform import BEGIN, CellTransformer, call_statement


@dataclass
class Prepared:
    """A cell instrumented at parse time, waiting for its first statement to start it."""

    run: CellRun
    resume: ResumePlan | None = None
    notes: list[str] = field(default_factory=list)


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("%%checkpoint"):
            return line.strip()[:80]
    return ""


@magics_class
class Checkpoint(LineCommands, Magics):
    """Checkpoint long-running cells while they run; restore and resume after a crash."""

    every = Float(
        60.0,
        help="Seconds between checkpoints while a %%checkpoint cell runs (overridden by --every).",
    ).tag(config=True)
    keep = Integer(
        None,
        allow_none=True,
        help=f"Keep only the newest N checkpoints of each notebook (pinned ones stay). "
        f"None: the default, {DEFAULT_KEEP}; 0: keep them all.",
    ).tag(config=True)
    max_size = Unicode(
        None,
        allow_none=True,
        help=f"Remove the oldest checkpoints while the store is bigger than this, e.g. '10GB'. "
        f"None: the default, {human_bytes(DEFAULT_MAX_SIZE)}; '0': no limit.",
    ).tag(config=True)
    store = Unicode(
        None,
        allow_none=True,
        help="Where checkpoints go: a folder or an fsspec URL. Default: $NBCHECKPOINT_STORE, "
        "else .nbcheckpoint/ beside the notebook.",
    ).tag(config=True)
    notebook = Unicode(
        None,
        allow_none=True,
        help="The notebook path to file checkpoints under (default: detected).",
    ).tag(config=True)
    notebook_id = Unicode(
        None,
        allow_none=True,
        help="The name this notebook's checkpoints go under in the store, the same on every machine "
        "(default: the notebook's path inside its project; $NBCHECKPOINT_NOTEBOOK_ID also sets it).",
    ).tag(config=True)
    include_credentials = Bool(
        False,
        help="Also save variables that look like passwords, keys or tokens (withheld by default).",
    ).tag(config=True)
    resume = Bool(True, help="Re-running an interrupted %%checkpoint cell resumes it.").tag(
        config=True
    )
    markers = Bool(
        True,
        help="Give loops without calls a marker line (a no-op, armed by a line trace only when a "
        "checkpoint is due) instead of a flag test on every iteration. False: flag tests only.",
    ).tag(config=True)
    lazy_restore = Bool(
        True,
        help="Restore large arrays by mapping them: each chunk is read, and its hash checked, "
        "when first used (Linux userfaultfd; see %checkpoint config). False: read everything "
        "at restore.",
    ).tag(config=True)
    auto = Bool(
        False, help="After each cell that ran at least auto_min_duration, save what it changed."
    ).tag(config=True)
    auto_min_duration = Float(
        5.0, help="Seconds a cell must run before auto mode saves after it."
    ).tag(config=True)
    mode = Enum(
        MODES,
        default_value="auto",
        help="How %%checkpoint writes snapshots: 'fork' (a forked child saves while the cell runs on; "
        "Linux, local store, no CUDA), 'inline' (pickled at the safe point, written by a thread), "
        "or 'auto' (fork when the state is large and forking is safe).",
    ).tag(config=True)

    # Validators run before a value is stored: a bad one is refused and the old one stays.
    @validate("max_size")
    def _valid_max_size(self, proposal: dict[str, Any]) -> str | None:
        value: str | None = proposal["value"]
        if value is not None:
            try:
                parse_size(value)
            except ValueError as e:
                raise TraitError(f"Checkpoint.max_size = {value!r}: {e}") from e
        return value

    @validate("every")
    def _valid_every(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"Checkpoint.every = {value:g}: it must be more than 0 seconds.")
        return value

    @validate("keep")
    def _valid_keep(self, proposal: dict[str, Any]) -> int | None:
        value: int | None = proposal["value"]
        if value is not None and value < 0:
            raise TraitError(
                f"Checkpoint.keep = {value}: keep N >= 1 checkpoints, 0 for all, or None for "
                f"the default ({DEFAULT_KEEP})."
            )
        return value

    @validate("auto_min_duration")
    def _valid_auto_min_duration(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise TraitError(f"Checkpoint.auto_min_duration = {value:g}: it cannot be negative.")
        return value

    def _load_config(self, cfg: Any, section_names: Any = None, traits: Any = None) -> None:
        """Load settings (at start and from %config); a refused value is reported and the
        others still load, so a bad value in the shell's config never stops the extension."""
        try:
            super()._load_config(cfg, section_names, traits)
            return
        except TraitError:
            pass
        mine = self._find_my_config(cfg)
        for name in list(mine):
            if name not in (traits if traits is not None else self.trait_names(config=True)):
                continue
            one = Config({type(self).__name__: {name: mine[name]}})
            try:
                super()._load_config(one, section_names, traits)
            except TraitError as e:
                print(f"nbcheckpoint: {e} Checkpoint.{name} stays {getattr(self, name)!r}.")

    def __init__(self, shell: Any, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._stores: dict[str, CheckpointStore] = {}
        self._pending: dict[int, Prepared] = {}
        self._tokens = itertools.count(1)
        self.current: CellRun | None = None
        self._cell_started = time.monotonic()
        self._cell_info: Any = None
        self._ref_cache: tuple[tuple[Any, ...], NotebookRef] | None = None
        self.transformer: CellTransformer | None = None  # set by the extension
        # How each variable was made, from the cells as they run: a checkpoint records the
        # recipes of the variables it cannot pickle (see capture/recipes.py).
        self.recipes = RecipeBook()
        self._recipes_from_history()
        # Variables restored with mapped (lazily read) data: name -> id of the object.
        self._restored_ids: dict[str, int] = {}

    # --------------------------------------------------------------- plumbing
    @property
    def user_ns(self) -> dict[str, Any]:
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def notebook_ref(self) -> NotebookRef:
        """Which notebook this kernel runs, worked out again only when one of its inputs changes.

        (It looks for the project root on disk: too slow to repeat after every auto-saved cell.)
        """
        from .identity import FRONTEND_NAME  # here, not above: this method is ours to edit

        ns = self.user_ns
        inputs = (
            self.notebook,
            self.notebook_id,
            ns.get("__session__"),
            ns.get("__vsc_ipynb_file__"),
            os.environ.get("JPY_SESSION_NAME"),
            os.environ.get(ENV_NOTEBOOK_ID),
            os.getcwd(),
            # What the JupyterLab extension says (id, current path); replaced, never mutated.
            repr(ns.get(FRONTEND_NAME)),
        )
        if self._ref_cache is None or self._ref_cache[0] != inputs:
            self._ref_cache = (
                inputs,
                notebook_ref(ns, self.notebook, notebook_id=self.notebook_id),
            )
        return self._ref_cache[1]

    def store_url(self, override: str | None = None) -> str:
        if override:
            return override
        if self.store:
            return self.store
        return default_store_url(self.notebook_ref().path)

    def open_store(self, override: str | None = None) -> CheckpointStore:
        # A final checkpoint still being written after its cell comes first: what saves
        # or reads next must see it (and get a later id).
        settle(on_wait=self._say_settling)
        url = self.store_url(override)
        if url not in self._stores:
            self._stores[url] = CheckpointStore(url)
        return self._stores[url]

    @staticmethod
    def _say_settling() -> None:
        print(
            "nbcheckpoint: waiting for the final checkpoint of the last %%checkpoint cell, "
            "still being written…",
            flush=True,
        )

    def wait_for_savers(self, store: CheckpointStore, nb: NotebookRef) -> None:
        """Before restoring the latest checkpoint: wait for other processes of this machine
        still saving one of this notebook (a forked writer of a kernel that crashed or was
        restarted), so that the restore does not bring back an older one."""
        savers = store.savers(nb, FORK_TIMEOUT)
        if not savers:
            return
        print(
            f"nbcheckpoint: a checkpoint of this notebook is still being written (process "
            f"{', '.join(map(str, savers))}); waiting for it. Interrupt the kernel to stop waiting.",
            flush=True,
        )
        pause = 0.02
        while store.savers(nb, FORK_TIMEOUT):
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def hidden_names(self) -> set[str]:
        return set(self.shell.user_ns_hidden)

    def _max_size_bytes(self) -> int | None:
        """The store-wide cap for the store: None for its default, UNLIMITED for none."""
        if self.max_size is None:
            return None
        size = parse_size(self.max_size)
        return size if size > 0 else UNLIMITED

    def _keep_count(self, override: int | None = None) -> int | None:
        """Checkpoints kept per notebook, for the store: None for its default, UNLIMITED for all."""
        keep = self.keep if override is None else override
        return UNLIMITED if keep == 0 else keep

    # ------------------------------------------------------------ the magic
    @line_cell_magic
    def checkpoint(self, line: str, cell: str | None = None) -> Any:
        return self._line(line) if cell is None else self._run_cell_directly(line, cell)

    # The help (%%checkpoint? and %checkpoint help) comes from the parser that parses.
    checkpoint.__doc__ = (
        "Checkpoint a long-running cell while it runs, or manage checkpoints.\n\n"
        "As a cell magic, %%checkpoint runs the cell and saves its variables at safe points "
        "(each loop\niteration, each statement); re-running an interrupted cell resumes where it "
        "stopped.\nAs a line magic, %checkpoint COMMAND manages the checkpoints.\n\n" + help_text()
    )

    # ----------------------------------------------------------- cell path
    def prepare_cell(self, args_text: str, module: ast.Module) -> ast.Module:
        """Instrument a marked cell; called by the AST transformer before the cell runs.

        (When IPython runs the magic itself, through run_cell_magic, ``_run_cell_directly``
        calls this and executes the result.)
        """
        args = parse_cell_args(args_text)
        body = module.body[1:]
        if not body:
            raise UsageError("%%checkpoint needs code below it to run.")
        bad = [n for n in args.names if not n.isidentifier()]
        if bad:
            raise UsageError(f"%%checkpoint: {', '.join(bad)} is not a variable name.")
        cell_module = ast.Module(body=body, type_ignores=[])
        source_hash = blake3.blake3(ast.unparse(cell_module).encode()).hexdigest()
        every = self.every if args.every is None else self._parse_every(args.every)
        info = self._cell_info
        raw = getattr(info, "raw_cell", "") or ""
        exec_count = (
            self.shell.execution_count - 1 if getattr(info, "store_history", False) else None
        )
        cell_id = getattr(info, "cell_id", None)
        ns = self.user_ns
        hidden = self.hidden_names()
        assigned = assigned_names(cell_module)
        # What the notebook has when the cell starts, and what the cell defines: a restore
        # of this cell's checkpoints names those it does not hold.
        had = user_names(ns, ns.keys(), hidden)
        had = sorted({*had, *(n for n in assigned if is_user_name(n) and n not in hidden)})
        cell = CellInfo(
            source_hash, exec_count, _first_line(raw), cell_names(cell_module), cell_id, had
        )
        options = Options(
            every=every,
            keep=self._keep_count(args.keep),
            names=list(args.names) or None,
            include_credentials=self.include_credentials,
            max_size=self._max_size_bytes(),
            mode=args.mode or self.mode,
        )
        store = self.open_store(args.store)
        nb = self.notebook_ref()
        notes = self._unknown_names(args.names, assigned)
        # Tight loops get marker lines instead of flag tests when a trace can be armed here.
        markers = self.markers and available() is None
        plan = None
        if self.resume and not args.no_resume:
            plan = self._resume_plan(store, nb, cell, cell_id, cell_module, markers)
        if isinstance(plan, Refusal):
            notes.append(plan.message)
        resume = plan if isinstance(plan, ResumePlan) else None
        if resume is not None:
            instrumented = resume.instrumented
        else:
            instrumented = instrument(cell_module, markers=markers)
        run = CellRun(
            ns,
            store,
            nb,
            instrumented.plan,
            cell,
            options,
            DisplayReporter(),
            hidden=self.hidden_names,
        )
        run.recipes = self.recipes
        token = next(self._tokens)
        self._pending[token] = Prepared(run, resume, notes)
        begin = call_statement(BEGIN, token, module.body[0])
        return ast.Module(body=[begin, *instrumented.module.body], type_ignores=[])

    def _unknown_names(self, names: list[str], assigned: set[str]) -> list[str]:
        """Warnings about NAMEs the checkpoints cannot hold: not defined, or IPython's own."""
        ns, hidden = self.user_ns, self.hidden_names()
        notes = []
        theirs = [n for n in names if not is_user_name(n) or n in hidden]
        if theirs:
            notes.append(
                f"nbcheckpoint: {', '.join(theirs)} belong{'s' * (len(theirs) == 1)} to IPython or "
                "nbcheckpoint, not to your variables: not saved."
            )
        unknown = [n for n in names if n not in ns and n not in assigned and n not in theirs]
        if unknown:
            it = "it" if len(unknown) == 1 else "them"
            notes.append(
                f"nbcheckpoint: no variable named {', '.join(unknown)}, and this cell does not "
                f"assign {it}: not saved. Check the spelling on the %%checkpoint line."
            )
        return notes

    def _resume_plan(
        self,
        store: CheckpointStore,
        nb: NotebookRef,
        cell: CellInfo,
        cell_id: str | None,
        module: ast.Module,
        markers: bool = False,
    ) -> ResumePlan | Refusal | None:
        """Resume from the newest checkpoint when it is an unfinished run of this cell."""
        self.wait_for_savers(store, nb)
        return plan_resume(
            store, nb, cell.source_hash, cell_id, module, markers=markers, lazy=self.lazy_restore
        )

    def begin(self, token: int, depth: int = 1) -> None:
        """First statement of an instrumented cell: restore for a resume, then start the timer."""
        prepared = self._pending.pop(token, None)
        if prepared is None:
            raise UsageError("This %%checkpoint cell was prepared for another run; run it again.")
        for note in prepared.notes:
            print(note, flush=True)
        if prepared.resume is not None:
            restored = prepared.resume.restored
            self.apply(restored)
            # Then what was not saved or could not be restored (the first line repeats the
            # count), and what the notebook had that is still missing now.
            details = self.describe_restore(restored).splitlines()[1:]
            ns, run = self.user_ns, prepared.run
            try:
                missing = left_out(
                    restored,
                    user_names(ns, ns.keys(), self.hidden_names()),
                    run.store.list(run.notebook),
                )
                missing.here = []  # defined now: the resumed run uses them as they are
                details += missing.lines(restored.checkpoint)
            except (CheckpointError, OSError):
                pass  # only a listing failed: the resume itself goes on
            print("\n".join([prepared.resume.message, *details]), flush=True)
        if self.current is not None:
            self.current.stop()
        self.current = prepared.run
        # Called from the cell's own first statement: its frame tells the file it runs as.
        prepared.run.start(sys._getframe(depth).f_code.co_filename)

    def fail(self, message: str) -> None:
        raise UsageError(message)

    def _run_cell_directly(self, line: str, cell: str) -> Any:
        """Fallback for run_cell_magic: instrument and exec (no top-level await)."""
        from .transform import MARKER

        source = f"{MARKER}({line!r})\n" + self.shell.transform_cell(cell)
        module = ast.parse(source)
        module = self.prepare_cell(line, module)
        last = None
        if module.body and isinstance(module.body[-1], ast.Expr):
            last = ast.Expression(module.body.pop().value)
        error: BaseException | None = None
        # A name of its own, since marker lines are looked up by file name.
        filename = f"<checkpoint cell {next(self._tokens)}>"
        try:
            exec(compile(module, filename, "exec"), self.user_ns)
            value = eval(compile(last, filename, "eval"), self.user_ns) if last else None
        except BaseException as e:
            error = e
            raise
        finally:
            if self.current is not None:
                run, self.current = self.current, None
                run.finish(error)
        return value

    @staticmethod
    def _parse_every(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise UsageError(f"--every {text}: {e}") from e
        if seconds <= 0:
            raise UsageError(f"--every {text}: the interval must be more than 0 seconds.")
        return seconds

    # ------------------------------------------------------------- events
    def pre_run_cell(self, info: Any) -> None:
        for text in after_cell_reports():
            print(text, flush=True)
        for damage in take_damage():
            taken, kept = withdraw(self.user_ns, damage, self._restored_ids)
            print(describe_damage(damage, taken, kept), file=sys.stderr, flush=True)
        self._cell_info = info
        self._cell_started = time.monotonic()
        self._record_recipes(info)
        self.autosaver.cell_started()

    def _recipes_from_history(self, limit: int = 500) -> None:
        """Cells that ran before the extension was loaded made variables too: read them from
        IPython's input history (no cell ids there: they are checked by their text)."""
        try:
            raw = list(getattr(self.shell.history_manager, "input_hist_raw", None) or [])
            hidden = self.hidden_names()
            for count, source in list(enumerate(raw))[-limit:]:
                if count == 0 or not isinstance(source, str) or not source.strip():
                    continue
                self.recipes.record(
                    source,
                    python=self.shell.transform_cell(source),
                    execution_count=count,
                    transform=self.shell.transform_cell,
                    names=lambda n: is_user_name(n) and n not in hidden,
                )
        except Exception:  # a recipe is a convenience: never fail loading over it
            pass

    def _record_recipes(self, info: Any) -> None:
        """Note which statements of this cell make or change which variables (a syntax error
        or any surprise only means no recipe: the cell itself must run as usual)."""
        raw = getattr(info, "raw_cell", None)
        if not isinstance(raw, str) or not raw.strip():
            return
        hidden = self.hidden_names()
        try:
            python = getattr(info, "transformed_cell", None) or self.shell.transform_cell(raw)
            self.recipes.record(
                raw,
                python=python,
                cell_id=getattr(info, "cell_id", None),
                execution_count=(
                    self.shell.execution_count - 1
                    if getattr(info, "store_history", False)
                    else None
                ),
                transform=self.shell.transform_cell,
                names=lambda n: is_user_name(n) and n not in hidden,
            )
        except Exception:  # a recipe is a convenience: never fail the cell over it
            pass

    def post_run_cell(self, result: Any) -> None:
        run, self.current = self.current, None
        if run is not None:
            error = result.error_in_exec or result.error_before_exec
            run.finish(error)
            self.autosaver.in_cell = False
            return
        self._auto_save(result)

    # ---------------------------------------------------------- auto mode
    @property
    def autosaver(self) -> AutoSaver:
        """Auto mode's state machine (made on first use)."""
        saver: AutoSaver | None = self.__dict__.get("_autosaver")
        if saver is None:
            saver = AutoSaver(
                self.user_ns,
                self.open_store,
                self.notebook_ref,
                self.hidden_names,
                self._auto_settings,
                event_loop=self._event_loop,
                recipes=self.recipes,
            )
            self.__dict__["_autosaver"] = saver
        return saver

    def _auto_settings(self) -> AutoSettings:
        return AutoSettings(self.include_credentials, self._keep_count(), self._max_size_bytes())

    @property
    def _auto_pending(self) -> set[str]:
        return self.autosaver.pending

    @_auto_pending.setter
    def _auto_pending(self, names: set[str]) -> None:
        # ``apply`` (a restore) marks what it brought back; the scan would see it too.
        self.autosaver.pending = set(names)

    def _auto_save(self, result: Any) -> None:
        """After a plain cell: scan and save what changed, when auto mode is on and the cell
        ran long enough. Failed cells too: what they changed before failing is there now."""
        saver = self.autosaver
        saver.enabled = bool(self.auto)
        ran = result.error_before_exec is None
        due = self.auto and ran and time.monotonic() - self._cell_started >= self.auto_min_duration
        cell = None
        if due:
            raw = getattr(result.info, "raw_cell", "") or ""
            cell = {
                "source_hash": blake3.blake3(raw.encode()).hexdigest(),
                "execution_count": result.execution_count,
                "first_line": _first_line(raw),
            }
        saver.cell_finished(cell, save=due)

    def _auto_collect(self, wait: bool = False) -> None:
        self.autosaver.collect(wait=wait)

    def _event_loop(self) -> Any:
        """The kernel's event loop on the main thread (ipykernel), or None (terminal, tests)."""
        loop = getattr(getattr(self.shell, "kernel", None), "io_loop", None)
        return loop if callable(getattr(loop, "add_callback", None)) else None

    def at_exit(self, wait: float = 4.0) -> None:
        """Kernel shutdown or restart (atexit): let the auto save under way finish, then
        save what still waits (see ``AutoSaver.at_exit``)."""
        self.autosaver.at_exit(wait)

    # ------------------------------------------------------------ restart
    def announce_earlier(self) -> str | None:
        """One line about checkpoints left by an earlier kernel of this notebook, if any."""
        try:
            store = self.open_store()
            nb = self.notebook_ref()
            latest_id = store.latest_id(nb)
            if latest_id is None:
                return None
            latest = store.read_checkpoint(nb, latest_id, trust=True)
        except (CheckpointError, OSError):
            return None
        if not from_earlier_kernel(latest):
            return None
        if self.lazy_restore:
            store.prepare_lazy(latest)  # a restore is likely next: its pager gets ready now
        count = len(store.list(nb))
        m = latest.manifest
        bits = []
        label = (
            cell_label(m.cell.execution_count, m.cell.first_line, m.cell.cell_id)
            if m and m.cell
            else ""
        )
        if label:
            bits.append(label)
        bits.append(relative_time(latest.created))
        if m is not None and m.position is not None and m.position.description:
            bits.append(printable(m.position.description))
        return (
            f"{count} checkpoint{'s' if count != 1 else ''} from an earlier kernel; latest #{latest.id} "
            f"({', '.join(bits)}). Run %checkpoint restore to bring the state back."
        )
