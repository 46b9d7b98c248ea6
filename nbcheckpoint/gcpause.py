"""The garbage collector paused for a block: for the extension's import and for restores.

Both make objects by the tens of thousands, none of them garbage, in a kernel that already
holds hundreds of thousands (pandas, matplotlib). Every 700 new containers set off a
collection, and now and then one that looks at every object in the process: about 80 ms
of a restore cell here, and 245 ms of ``dill.load_module``'s on the same state. Cycles
made meanwhile are collected once the collector runs again.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, unless someone else turned it off already.

    Examples
    --------
    >>> import gc
    >>> with paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
