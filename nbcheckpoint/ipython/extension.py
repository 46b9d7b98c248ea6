"""Load and unload the IPython extension: magics, input and AST transformers, event hooks."""

from __future__ import annotations

import atexit
from typing import Any

from ..capture.engine import RUNTIME_NAMES, install_runtime
from ..frontend.comm import StatusChannel
from .magics import Checkpoint
from .transform import BEGIN, FAIL, CellTransformer, input_transform

_STATE: dict[int, dict[str, Any]] = {}


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
    ip.user_ns[BEGIN] = magics.begin
    ip.user_ns[FAIL] = magics.fail
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
    magics._auto_collect(wait=True)
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
