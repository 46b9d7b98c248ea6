"""Auto mode in real kernels: a changed variable is saved whatever the cell's text says.

Each shape: set up, turn auto mode on, run a cell that changes a variable in a way its
text does not show, wait for the auto save, SIGKILL the kernel, restore in a new one and
compare the variable with its value before the kill.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import StoreProbe
from .kernel import Kernel, wait_for

StartKernel = Callable[..., Kernel]

SETTLED = (
    "(lambda s: s.writer is not None and not s.writer.busy() and not s.pending)"
    "(get_ipython().magics_manager.registry['Checkpoint'].autosaver)"
)

SHAPES = {
    # IPython runs the AST transformers again for the timed statement.
    "time": ("z = 1", "z = 42\n%time y = 1", "z"),
    "timeit": ("z = 1", "z = 43\n%timeit -n1 -r1 y = 2", "z"),
    # A cell that raised after assigning.
    "raised": ("w = 1", "w = 7\nraise ValueError('after assigning')", "w"),
    # A method of a notebook class appending to a global the cell never names.
    "method-global": (
        "log = []\nclass Recorder:\n    def note(self):\n        log.append('x')\nrec = Recorder()",
        "rec.note()",
        "log",
    ),
    "globals": ("z = 1", "globals()['z'] = 5", "z"),
    "exec": ("q = 1", "exec('q = 3')", "q"),
    # A helper reached through a dict mutates an object another variable holds.
    "helper": ("acc = []\nops = {'add': lambda: acc.append(9)}", "ops['add']()", "acc"),
    # A class attribute changed through an instance's method.
    "class-attr": (
        "class Counter:\n    n = 0\n    def bump(self):\n        type(self).n += 1\nc = Counter()",
        "c.bump()",
        "Counter.n",
    ),
    # One element of a large array, written through a small view kept in a list.
    "array-view": (
        "import numpy as np\nbig = np.zeros(2_000_000)\nviews = [big[10:20]]",
        "views[0][3] = 5.0",
        "(float(big[13]), float(big.sum()))",
    ),
    # A bytearray written in place changes the array that shares its memory.
    "shared-memory": (
        "import numpy as np\nraw = bytearray(4 << 20)\nover = np.frombuffer(raw, dtype=np.uint8)",
        "raw[7] = 1",
        "(int(over[7]), int(over.sum()))",
    ),
}


def settle(kernel: Kernel) -> None:
    """Until the auto save of the last cell has landed and nothing waits."""
    wait_for(lambda: kernel.value(SETTLED), 30, "the auto save to land")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_auto_mode_change_survives_sigkill(
    start_kernel: StartKernel, store_probe: StoreProbe, shape: str
) -> None:
    setup, cell, expr = SHAPES[shape]
    k1 = start_kernel()
    k1.run(setup).check()
    k1.run("%checkpoint auto on --min-duration 0").check()
    before_cell = k1.value(expr)
    reply = k1.run(cell)
    if shape == "raised":
        assert reply.status == "error"
    else:
        reply.check()
    before = k1.value(expr)
    assert before != before_cell, "the cell did not change the variable"
    settle(k1)
    count = len(store_probe.list())
    k1.kill()

    assert len(store_probe.list()) == count
    k2 = start_kernel()
    out = k2.run("%checkpoint restore").check()
    assert "Restored checkpoint" in out.text
    assert k2.value(expr) == before


def test_a_variable_that_comes_to_share_with_an_unchanged_one_keeps_the_link(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    """Auto mode saves only what changed and keeps the other groups as they were. A cell
    that makes a changed variable hold an object of an unchanged one (``x.append(r[0])``,
    ``alias = r[1]``) must save them together: before, `records` was kept as it was and
    `x` pickled alone, and the restore gave a copy of ``records[0]`` in `x`. The same for
    an equal copy replaced by the object itself (``copies[0] = records[2]``), which leaves
    the pickle of `copies` as it was."""
    k1 = start_kernel()
    k1.run("records = [{'id': i} for i in range(5)]\nx = [0]\nother = {'n': 1}").check()
    k1.run("%checkpoint auto on --min-duration 0").check()
    k1.run("pass").check()
    settle(k1)
    k1.run("x.append(records[0])").check()
    settle(k1)
    k1.run("alias = records[1]").check()
    settle(k1)
    # An equal copy replaced by the object itself: the pickle of `copies` is the same.
    k1.run("copies = [dict(records[2])]").check()
    settle(k1)
    k1.run("copies[0] = records[2]").check()
    settle(k1)
    k1.kill()
    k2 = start_kernel()
    k2.run("%checkpoint restore").check()
    linked = (
        "(x[1] is records[0], alias is records[1], copies[0] is records[2], "
        "x[1] == {'id': 0}, other == {'n': 1})"
    )
    assert k2.value(linked) == (True, True, True, True, True)
    latest = store_probe.list()[-1]
    groups = sorted(sorted(g["names"]) for g in latest.body["groups"])
    assert ["alias", "copies", "records", "x"] in groups and ["other"] in groups, groups


NOTEBOOK_STATE = """
import collections, enum, functools
import numpy as np, pandas as pd, matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
class Color(enum.Enum):
    RED = 1
    BLUE = 2
class Model:
    def __init__(self):
        self.w = np.zeros(10)
        self.history = []
        self.color = Color.RED
        self.scale = functools.partial(np.multiply, 2)
model = Model()
df = pd.DataFrame({"a": np.arange(1000), "b": [f"x{i % 7}" for i in range(1000)]})
s = df["a"]
records = [{"id": i, "name": f"r{i}"} for i in range(1000)]
cfg = {"color": Color.RED, "sizes": (1, 2), "opts": {"a": 1}}
counter = collections.Counter("hello")
fig, ax = plt.subplots()
ax.plot([1, 2, 3])
"""
READ_ONLY = [
    "print(len(records))",
    "df.head()",
    "df.describe()",
    "s.mean()",
    "df['b'].str.upper().head()",
    "df.groupby('b').size()",
    "cfg['color'], model.color, model.scale(3)",
    "counter.most_common(2)",
    "len(ax.lines)",
]


def test_cells_that_change_nothing_make_no_checkpoint(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    """A notebook with a figure, a notebook enum and class, a partial: reading them makes
    no checkpoint. Before, every cell saved again: matplotlib steps a counter each time a
    figure is pickled, a notebook enum could not be fingerprinted (its members name their
    class, which was pickled by value again), and the first save of an instance added
    ``__slotnames__`` to its class. Each cell then pushed one more checkpoint into the
    history and an older one out of it. The restore brings the enum back too: dill had
    pickled it by name, and a new kernel lost it with every variable saved beside it."""
    k = start_kernel()
    k.run(NOTEBOOK_STATE).check()
    k.run("%checkpoint auto on --min-duration 0").check()
    k.run("pass").check()
    settle(k)
    k.run("pass").check()
    settle(k)
    before = [ck.id for ck in store_probe.list()]
    for cell in READ_ONLY:
        k.run(cell).check()
        settle(k)
    assert [ck.id for ck in store_probe.list()] == before
    k.run("cfg['color'] = Color.BLUE").check()  # a real change is still seen
    settle(k)
    assert len(store_probe.list()) == len(before) + 1
    k.kill()
    k2 = start_kernel()
    restored = k2.run("%checkpoint restore").check()
    assert "not restored" not in restored.stdout, restored.stdout
    assert k2.value(
        "(cfg['color'] is Color.BLUE, model.color is Color.RED, int(model.scale(3)))"
    ) == (
        True,
        True,
        6,
    )


def test_dill_dump_module_with_the_extension_loaded(
    start_kernel: StartKernel, tmp_path: pytest.TempPathFactory
) -> None:
    k = start_kernel()
    k.run("%checkpoint auto on --min-duration 0").check()
    k.run("x = [1, 2, 3]").check()
    settle(k)
    path = f"{tmp_path}/session.pkl"
    k.run(f"import dill\ndill.dump_module({path!r})").check()
    k2 = start_kernel(load_ext=False)
    k2.run(f"import dill\ndill.load_module({path!r})").check()
    assert k2.value("x") == [1, 2, 3]


def test_dill_dump_module_inside_a_running_checkpoint_cell(
    start_kernel: StartKernel, tmp_path: pytest.TempPathFactory
) -> None:
    """``dill.dump_module()`` from inside the loops of a running ``%%checkpoint`` cell.

    The namespace then holds the engine's helpers for each loop (its iterator and probe, a
    generator's iterator here, which does not pickle): they pickle as None, and the cell
    leaves none of them behind.
    """
    k = start_kernel()
    for_path, while_path = f"{tmp_path}/in-for.pkl", f"{tmp_path}/in-while.pkl"
    out = k.run(
        "%%checkpoint --every 3600\n"
        "import dill\n"
        "total = 0\n"
        "for i in (n * 10 for n in range(5)):\n"
        "    total += i\n"
        "    if i == 20:\n"
        f"        dill.dump_module({for_path!r})\n"
        "j = 0\n"
        "while j < 4:\n"
        "    j += 1\n"
        "    if j == 3:\n"
        f"        dill.dump_module({while_path!r})\n"
    ).check()
    assert "Traceback" not in out.text
    left = k.value("sorted(n for n in globals() if n.startswith('_nbc_'))")
    assert left == ["_nbc_due_"]
    for path, expected in ((for_path, (20, 30, None)), (while_path, (40, 100, 3))):
        k2 = start_kernel(load_ext=False)
        k2.run(f"import dill\ndill.load_module({path!r})").check()
        assert k2.value("(i, total, globals().get('j'))") == expected
        helpers = k2.value(
            "{n: v for n, v in globals().items() if n.startswith('_nbc_') and n != '_nbc_due_'}"
        )
        assert helpers and set(helpers.values()) == {None}
        k2.shutdown()
