"""Load and unload the IPython extension: magics, input and AST transformers, event hooks."""

from __future__ import annotations

import atexit
from typing import Any

from ..capture.engine import RUNTIME_NAMES, install_runtime
from ..frontend.comm import StatusChannel
from .magics import Checkpoint
from .transform import BEGIN, FAIL, CellTransformer, input_transform

_STATE: dict[int, dict[str, Any]] = {}
# The magics whose cells run now. The runtime names put in the user namespace are these
# module-level functions, not bound methods of the magics object: whole-session tools
# such as ``dill.dump_module()`` pickle them by reference (a bound method drags in the
# shell, its history database connection included, which does not pickle).
_MAGICS: list[Checkpoint] = []


def begin_cell(token: int) -> None:
    """``__nbc_begin__``: the first statement of an instrumented cell."""
    _current_magics().begin(token, depth=2)  # the cell's frame: the caller of this one


def fail_cell(message: str) -> None:
    """``__nbc_fail__``: a cell the transformer could not prepare raises ``message``."""
    _current_magics().fail(message)


def _current_magics() -> Checkpoint:
    if not _MAGICS:
        from IPython.core.error import UsageError

        raise UsageError("nbcheckpoint is not loaded: run %load_ext nbcheckpoint, then this cell.")
    return _MAGICS[-1]


def load_ipython_extension(ip: Any) -> None:
    """Register everything on the shell ``ip``; loading twice is harmless."""
    if id(ip) in _STATE:
        return
    magics = Checkpoint(ip, parent=ip)
    ip.register_magics(magics)
    if magics not in ip.configurables:
        ip.configurables.append(magics)
    transformer = CellTransformer(magics.prepare_cell)
    magics.transformer = transformer
    ip.input_transformers_cleanup.append(input_transform)
    ip.ast_transformers.append(transformer)
    ip.events.register("pre_run_cell", magics.pre_run_cell)
    ip.events.register("post_run_cell", magics.post_run_cell)
    # A restart (even a mis-click) lets the last auto save finish and go out.
    atexit.register(magics.at_exit)
    install_runtime(ip.user_ns)
    _MAGICS.append(magics)
    ip.user_ns[BEGIN] = begin_cell
    ip.user_ns[FAIL] = fail_cell
    for name in (*RUNTIME_NAMES, BEGIN, FAIL):
        ip.user_ns_hidden[name] = ip.user_ns[name]
    channel = StatusChannel()  # feeds the JupyterLab status bar
    channel.start()
    _STATE[id(ip)] = {"magics": magics, "transformer": transformer, "channel": channel}
    line = magics.announce_earlier()
    if line:
        print(line, flush=True)


def unload_ipython_extension(ip: Any) -> None:
    """Undo each registration. ``_nbc_due_`` stays, set to False, because functions
    defined in earlier ``%%checkpoint`` cells still test it."""
    state = _STATE.pop(id(ip), None)
    if state is None:
        return
    magics: Checkpoint = state["magics"]
    state["channel"].stop()
    if magics.current is not None:
        magics.current.stop()
        magics.current = None
    # The last cell's scan may still wait for the event loop: run it, let the writes
    # land, and turn auto mode's callbacks off.
    magics.autosaver.settle()
    magics.autosaver.enabled = False
    if magics in _MAGICS:
        _MAGICS.remove(magics)
    atexit.unregister(magics.at_exit)
    ip.events.unregister("pre_run_cell", magics.pre_run_cell)
    ip.events.unregister("post_run_cell", magics.post_run_cell)
    if input_transform in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(input_transform)
    if state["transformer"] in ip.ast_transformers:
        ip.ast_transformers.remove(state["transformer"])
    for kind in ("line", "cell"):
        ip.magics_manager.magics[kind].pop("checkpoint", None)
    ip.magics_manager.registry.pop("Checkpoint", None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)
    install_runtime(ip.user_ns)
    for name in (BEGIN, FAIL):
        ip.user_ns.pop(name, None)
        ip.user_ns_hidden.pop(name, None)
