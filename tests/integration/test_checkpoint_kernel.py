"""``%%checkpoint`` and ``%checkpoint`` in real kernels: kills, interrupts, restarts, errors and output."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import StoreProbe
from .kernel import Kernel, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

StartKernel = Callable[..., Kernel]

# About 10 s at the default pace; NBC_TEST_DELAY=0 lets a resumed run finish at once.
# The safe point sits at the top of each iteration, before its body: there, total == sum(range(i)).
LOOP_CELL = """\
%%checkpoint --every 0.5
import os, time
total = 0
squares = []
for i in range(100):
    total += i
    squares.append(i * i)
    time.sleep(float(os.environ.get("NBC_TEST_DELAY", "0.1")))
"""

EARLIER_KERNEL = "checkpoints from an earlier kernel"


def run_raw(kernel: Kernel, code: str, timeout: float = 60) -> tuple[list[dict[str, Any]], dict]:
    """Run ``code``; return its iopub messages (type, content) and the execute_reply content.

    Unlike ``Kernel.run`` this keeps display ids and the reply's payload (where ``?`` help goes).
    """
    msg_id = kernel.kc.execute(code)
    deadline = time.monotonic() + timeout
    messages: list[dict[str, Any]] = []
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append({"type": msg["msg_type"], "content": msg["content"]})
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kernel.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return messages, reply["content"]


def stream_text(messages: list[dict[str, Any]], name: str) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["type"] == "stream" and m["content"]["name"] == name
    )


def load_in_new_kernel(start_kernel: StartKernel, **env: str) -> tuple[Kernel, str]:
    """A new kernel for the same notebook, with the extension loaded; returns what loading printed."""
    kernel = start_kernel(load_ext=False, env=env)
    announced = kernel.run("%load_ext nbcheckpoint").check().stdout
    return kernel, announced


def wait_for_new_checkpoint(store: StoreProbe, known: int, timeout: float = 30) -> None:
    wait_for(lambda: len(store.list()) > known, timeout, f"checkpoint #{known + 1}")


# --------------------------------------------------------------------------- crashes
def test_sigkill_mid_loop_then_restore_and_resume_in_new_kernel(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.submit(LOOP_CELL)
    store_probe.wait_for_count(3)
    k1.kill()

    latest = store_probe.list()[-1]
    assert latest.status == "running"
    position = latest.body["position"]
    assert position["resumable"] is True
    (counter,) = position["counters"]

    k2, announced = load_in_new_kernel(start_kernel, NBC_TEST_DELAY="0")
    assert EARLIER_KERNEL in announced
    assert f"latest #{latest.id}" in announced

    restored = k2.run("%checkpoint restore").check().stdout
    assert f"Restored checkpoint #{latest.id}" in restored
    total, i, squares = k2.value("(total, i, squares)")
    # One safe point, not a torn mix of two: every variable agrees with the same iteration.
    assert 0 < i < 99
    assert i == counter
    assert total == sum(range(i))
    assert squares == [j * j for j in range(i)]

    # Running the same cell again continues from that iteration instead of starting over.
    resumed = k2.run(LOOP_CELL).check()
    assert f"Resuming from checkpoint #{latest.id}" in resumed.stdout
    assert k2.value("(total, i, len(squares))") == (sum(range(100)), 99, 100)
    assert store_probe.list()[-1].status == "complete"


# No call in the loop body: its safe point is a marker line, armed only when a checkpoint is due.
TIGHT_CELL = """\
%%checkpoint --every 0.3
total = 0
for i in range(60_000_000):
    total += i
"""


def test_tight_loop_checkpoints_through_marker_lines_and_resumes_after_sigkill(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.submit(TIGHT_CELL)
    wait_for(
        lambda: (
            sum(1 for ck in store_probe.list() if (ck.body["position"] or {}).get("counters")) >= 2
        ),
        60,
        "two checkpoints inside the tight loop",
    )
    k1.kill()
    latest = store_probe.list()[-1]
    assert latest.status == "running" and latest.body["position"]["resumable"]
    (counter,) = latest.body["position"]["counters"]
    assert latest.body["position"]["lengths"] == [60_000_000]

    k2, _ = load_in_new_kernel(start_kernel)
    k2.run("%checkpoint restore").check()
    total, i = k2.value("(total, i)")
    assert 0 < i == counter < 60_000_000 - 1
    assert total == i * (i - 1) // 2  # the top of iteration i: its body has not run
    resumed = k2.run(TIGHT_CELL).check()
    assert f"Resuming from checkpoint #{latest.id}" in resumed.stdout
    assert k2.value("total") == sum(range(60_000_000))
    assert k2.value("__import__('sys').gettrace() is None")  # no trace left behind


def test_function_restored_in_a_new_kernel_keeps_its_marker_lines(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.run(
        "%%checkpoint --every 100\ndef spin(n):\n    t = 0\n    for j in range(n):\n"
        "        t += j\n    return t\n"
    ).check()
    k1.shutdown()
    k2, _ = load_in_new_kernel(start_kernel)
    k2.run("%checkpoint restore").check()
    known = len(store_probe.list())
    k2.run("%%checkpoint --every 0.1 --mode inline\nr = spin(30_000_000)\n").check()
    assert k2.value("r") == sum(range(30_000_000))
    new = store_probe.list()[known:]
    inside = [
        ck for ck in new if (ck.body["position"] or {}).get("description") == "inside a function"
    ]
    assert inside, "the restored function's loop took no checkpoint"


def test_interrupt_leaves_interrupted_checkpoint_that_restores(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    msg_id = k1.submit(LOOP_CELL)
    store_probe.wait_for_count(1)
    # Interrupt just after a checkpoint landed, so that the signal does not fall inside a save.
    wait_for_new_checkpoint(store_probe, len(store_probe.list()))
    time.sleep(0.1)
    k1.interrupt()
    reply = k1.collect(msg_id, timeout=30)
    assert reply.status == "error"
    assert reply.error is not None and reply.error["ename"] == "KeyboardInterrupt"
    assert "re-run the cell to resume" in reply.stdout

    latest = store_probe.list()[-1]
    assert latest.status == "interrupted"
    (counter,) = latest.body["position"]["counters"]
    assert k1.value("i") >= counter  # the loop went on past the checkpoint before the interrupt

    # Same kernel: clobber, then restore.
    k1.run("total = -1\nsquares = None\ndel i").check()
    k1.run("%checkpoint restore").check()
    assert k1.value("(total, i, squares)") == (
        sum(range(counter)),
        counter,
        [j * j for j in range(counter)],
    )

    # New kernel: the same checkpoint.
    k1.shutdown()
    k2, announced = load_in_new_kernel(start_kernel)
    assert EARLIER_KERNEL in announced
    assert f"Restored checkpoint #{latest.id}" in k2.run("%checkpoint restore").check().stdout
    assert k2.value("(total, i, len(squares))") == (sum(range(counter)), counter, counter)


# --------------------------------------------------------------------------- data
DATA_SETUP = """\
import hashlib, time
import numpy as np
import pandas as pd

rng = np.random.default_rng(42)
arr = rng.normal(size=(300, 40))
df = pd.DataFrame(
    {
        "a": rng.integers(0, 100, 500),
        "b": rng.normal(size=500),
        "c": pd.Categorical(rng.choice(list("xyz"), 500)),
        "d": [f"row{n}" for n in range(500)],
    },
    index=pd.date_range("2024-01-01", periods=500, freq="h"),
)

def featurize(x, power=2):
    return (x ** power).sum(axis=0)

class Scaler:
    def __init__(self, center):
        self.center = center

    def transform(self, x):
        return x - self.center

scaler = Scaler(arr.mean(axis=0))
"""

FINGERPRINT = """\
import hashlib
import pandas as pd

def _fingerprint():
    sha = lambda a: hashlib.sha256(a.tobytes()).hexdigest()
    return {
        "arr": sha(arr),
        "arr_meta": (arr.shape, str(arr.dtype), arr.flags.c_contiguous),
        "df": int(pd.util.hash_pandas_object(df).sum()),
        "df_meta": (list(df.columns), [str(t) for t in df.dtypes], str(df.index.freq)),
        "featurize": sha(featurize(arr)),
        "featurize_kw": sha(featurize(arr, power=3)),
        "scaler": sha(scaler.transform(arr)),
        "Scaler": sha(Scaler(arr[0]).transform(arr)),
        "isinstance": isinstance(scaler, Scaler),
    }
"""

DATA_LOOP = """\
%%checkpoint --every 0.5
for step in range(100):
    assert isinstance(scaler, Scaler)
    features = featurize(scaler.transform(arr))
    summary = df.describe()
    time.sleep(0.1)
"""


def test_numpy_pandas_functions_and_classes_restore_equal(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.run(DATA_SETUP).check()
    k1.run(FINGERPRINT).check()
    before = k1.value("_fingerprint()")
    assert before["isinstance"] is True
    k1.submit(DATA_LOOP)
    store_probe.wait_for_count(2)
    k1.kill()
    assert store_probe.list()[-1].status == "running"  # taken mid-cell

    k2, _ = load_in_new_kernel(start_kernel)
    k2.run("%checkpoint restore").check()
    k2.run(FINGERPRINT).check()
    assert k2.value("_fingerprint()") == before
    # Only what the cell uses is saved by default: numpy itself was not (the cell never names it).
    k2.run("import numpy as np").check()
    assert k2.value("np.allclose(features, featurize(scaler.transform(arr)))") is True
    assert k2.value("summary.equals(df.describe())") is True


def wait_for_auto_save(kernel: Kernel, store: StoreProbe, first_line: str) -> None:
    """Auto checkpoints are written on a thread after the cell: wait until this cell's landed.

    A cell that ends while the previous write is still going is folded into the next save,
    so each cell here waits for its own before the next one runs.
    """
    wait_for(
        lambda: any((ck.body["cell"] or {}).get("first_line") == first_line for ck in store.list()),
        30,
        f"an auto checkpoint after {first_line!r}",
    )
    # A private name: auto mode leaves it out, so this helper changes nothing it saves.
    kernel.run("import threading as _threading").check()
    idle = "not any(t.name == 'nbcheckpoint-writer' for t in _threading.enumerate())"
    wait_for(lambda: kernel.value(idle), 10, "the auto checkpoint writer to finish")


def test_auto_mode_across_cells_then_restart_restores_namespace(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.run("%checkpoint auto on --min-duration 0").check()
    cells = [
        "import hashlib\nimport numpy as np\nbig = np.random.default_rng(1).random(2_000_000)",
        "small = [1, 2, 3]\ntext = 'hello'",
        "small.append(4)\ndef double(x):\n    return 2 * x",
        "counter = {'n': double(21)}",
    ]
    for code in cells:
        k1.run(code).check()
        wait_for_auto_save(k1, store_probe, code.splitlines()[0])
    big_hash = k1.value("hashlib.sha256(big.tobytes()).hexdigest()")

    cks = store_probe.list()
    assert all(ck.status == "auto" for ck in cks)
    by_cell = {ck.body["cell"]["first_line"]: ck for ck in cks}
    with_big = by_cell["import hashlib"]
    assert with_big.new_bytes >= 16_000_000
    # The cells after it never touch `big`: its 16 MB are not written again.
    for first_line in ("small = [1, 2, 3]", "small.append(4)", "counter = {'n': double(21)}"):
        ck = by_cell[first_line]
        assert "big" in ck.variables
        assert ck.total_bytes >= 16_000_000
        assert ck.new_bytes < 100_000, (first_line, ck.new_bytes)
    assert {"big", "small", "text", "double", "counter"} <= set(cks[-1].variables)

    k1.shutdown()  # a restart: the next kernel starts with an empty namespace
    k2, announced = load_in_new_kernel(start_kernel)
    assert EARLIER_KERNEL in announced
    k2.run("%checkpoint restore").check()
    assert k2.value("hashlib.sha256(big.tobytes()).hexdigest()") == big_hash
    assert k2.value("(big.shape, str(big.dtype))") == ((2_000_000,), "float64")
    assert k2.value("small") == [1, 2, 3, 4]
    assert k2.value("text") == "hello"
    assert k2.value("double(5)") == 10
    assert k2.value("counter") == {"n": 42}
    assert k2.value("np.__name__") == "numpy"


def two_cells_behind_a_slow_writer(kernel: Kernel, seconds: float | None, first_only: bool) -> None:
    """Auto mode on, then cells ``first = 1`` and ``second = 2`` while the kernel's writer
    thread takes ``seconds`` before each write (or only the first one): the second cell's
    changes wait for the writer. ``seconds=None`` holds the write until ``RELEASE_WRITER``
    runs, so that the cells surely end while it waits, however busy the machine."""
    wait = "_w.release.wait(60)" if seconds is None else f"_time.sleep({seconds})"
    kernel.run(
        "import threading as _threading, time as _time\n"
        "from nbcheckpoint.capture import writer as _w\n"
        "_real, _calls = _w.ThreadWriter._commit, []\n"
        "_w.release = _threading.Event()\n"
        "def _commit(self, job, pending):\n"
        "    _calls.append(1)\n"
        f"    if len(_calls) == 1 or not {first_only}:\n"
        f"        {wait}\n"
        "    _real(self, job, pending)\n"
        "_w.ThreadWriter._commit = _commit\n"
    ).check()
    kernel.run("%checkpoint auto on --min-duration 0").check()
    kernel.run("first = 1").check()
    kernel.run("second = 2").check()


# Sent silently (no cell events, so auto mode does not see it): lets the held write go.
RELEASE_WRITER = "__import__('nbcheckpoint.capture.writer').capture.writer.release.set()"


def test_auto_save_that_waited_for_the_writer_lands_without_another_cell(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    # The first save is held up on the writer thread; the next cells end meanwhile, so their
    # changes wait. They must be written once the writer is free, with no further cell:
    # the user may have walked away, and the kernel may die next.
    k = start_kernel()
    two_cells_behind_a_slow_writer(k, seconds=None, first_only=True)
    assert store_probe.list() == []  # the first write is still held
    k.run(RELEASE_WRITER, silent=True).check()
    wait_for(
        lambda: any(
            (ck.body["cell"] or {}).get("first_line") == "second = 2" for ck in store_probe.list()
        ),
        60,
        "the waiting auto save to land on its own",
    )
    last = store_probe.list()[-1]
    assert {"first", "second"} <= set(last.variables)


def test_restart_right_after_a_cell_still_saves_its_auto_checkpoint(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    # Every write takes a second; the user restarts the kernel (a mis-click) right after a
    # cell: the shutdown waits for the write under way and saves what is still waiting.
    k = start_kernel()
    two_cells_behind_a_slow_writer(k, seconds=1.0, first_only=False)
    assert k.km is not None
    k.km.shutdown_kernel(now=False, restart=False)  # a polite shutdown request, as a restart
    k.km = None
    k.shutdown()
    last = store_probe.list()[-1]
    assert {"first", "second"} <= set(last.variables)
    assert (last.body["cell"] or {}).get("first_line") == "second = 2"


SHARED_SETUP = """\
import time
import numpy as np

a = np.arange(1000.0)
b = a
head = a[:10]  # a view: `a += 1` shows in it
X = np.random.default_rng(0).random((200, 8))
X_train, X_test = X[:150], X[150:]

class Model:
    def __init__(self):
        self.params = {"w": np.ones((50, 50)), "b": np.zeros(50)}

class SGD:
    def __init__(self, params, lr=0.01):
        self.params = params
        self.lr = lr
        self.momentum = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self):
        for k, p in self.params.items():
            self.momentum[k] = 0.9 * self.momentum[k] + 1.0
            p -= self.lr * self.momentum[k]

model = Model()
opt = SGD(model.params)
"""

SHARED_LOOP = """\
%%checkpoint --every 0.5
for step in range(100):
    assert b is a and opt.params is model.params
    assert np.shares_memory(head, a) and np.shares_memory(X_train, X)
    assert np.shares_memory(X_test, X)
    opt.step()
    a += 1
    time.sleep(0.1)
"""


def test_shared_references_survive_restore_in_new_kernel(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.run(SHARED_SETUP).check()
    k1.submit(SHARED_LOOP)
    store_probe.wait_for_count(2)
    k1.kill()

    k2, _ = load_in_new_kernel(start_kernel)
    k2.run("%checkpoint restore").check()
    assert k2.value("b is a") is True
    assert k2.value("opt.params is model.params") is True
    assert k2.value("opt.params['w'] is model.params['w']") is True
    assert k2.value("(type(model).__name__, type(opt).__name__)") == ("Model", "SGD")
    step = k2.value("step")
    assert k2.value("float(a[0])") == step  # `a += 1` ran once per finished iteration
    # NumPy views come back views of the restored arrays, not copies.
    views = "[np.shares_memory(head, a), np.shares_memory(X_train, X), np.shares_memory(X_test, X)]"
    assert k2.value(views) == [True, True, True]
    assert k2.value("float(head[0]) == float(a[0]) and X_test.shape == (50, 8)") is True
    # Still shared, not merely equal: in-place updates through one name show through the other.
    k2.run("a[0] = -7.0\nopt.step()").check()
    assert k2.value("float(b[0])") == -7.0 and k2.value("float(head[0])") == -7.0
    assert k2.value("bool((opt.params['w'] == model.params['w']).all())") is True
    assert k2.value("float(model.params['b'][0]) == float(opt.params['b'][0]) != 0.0") is True


# --------------------------------------------------------------------------- magics
def test_magic_errors_are_short_and_name_the_bad_input(start_kernel: StartKernel) -> None:
    kernel = start_kernel()
    cases = {
        "%checkpoint bogus": "bogus",
        "%checkpoint show 999": "#999",
        "%%checkpoint --every abc\nnever_defined = 1": "abc",
        "%%checkpoint --bogus\nnever_defined = 1": "--bogus",
        "%checkpoint restore --trust 5": "#5",
        "%checkpoint show twelve": "twelve",
    }
    for code, named in cases.items():
        messages, reply = run_raw(kernel, code)
        stderr = stream_text(messages, "stderr")
        assert reply["status"] == "error", code
        assert reply["ename"] == "UsageError", (code, reply)
        assert named in reply["evalue"], (code, reply["evalue"])
        assert named in stderr, (code, stderr)
        assert "Traceback" not in stderr, code
        assert not [m for m in messages if m["type"] == "error"], code
    assert kernel.value("'never_defined' in globals()") is False


def test_help_for_cell_magic_and_line_magic(start_kernel: StartKernel) -> None:
    kernel = start_kernel()
    _, reply = run_raw(kernel, "%%checkpoint?")
    assert reply["status"] == "ok"
    pages = [p["data"]["text/plain"] for p in reply["payload"] if p.get("source") == "page"]
    assert pages, reply
    assert "Checkpoint a long-running cell while it runs" in pages[0]
    assert "--every INTERVAL" in pages[0] and "Time between checkpoints" in pages[0]

    out = kernel.run("%checkpoint help").check().stdout
    for command in (
        "list",
        "show [ID]",
        "diff ID [ID2]",
        "restore [ID]",
        "--recompute",
        "save",
        "rm ID",
        "gc",
        "auto on|off",
    ):
        assert command in out


@pytest.mark.parametrize("final", ["in the cell", "after the cell"])
def test_live_status_is_one_display_updated_in_place(
    start_kernel: StartKernel, store_probe: StoreProbe, final: str
) -> None:
    """The status line is one display, updated in place. The final checkpoint is written
    before the cell returns, or by a child after it when a checkpoint of the run took long
    (``FINAL_AFTER_SECONDS``, which a loaded machine reaches): both are pinned here, where
    a loaded run had made this test take the second way and fail."""
    kernel = start_kernel()
    after = final == "after the cell"
    kernel.run(
        "import nbcheckpoint.capture.engine as _engine\n"
        f"_engine.FINAL_AFTER_SECONDS = {0.0 if after else 1e9}\n"
        f"_engine.FINAL_AFTER_ITEMS = {0 if after else 10**12}"
    ).check()
    cell = "%%checkpoint --every 0.3\nimport time\nfor n in range(25):\n    time.sleep(0.1)\n"
    messages, reply = run_raw(kernel, cell)
    assert reply["status"] == "ok"
    shown = [m for m in messages if m["type"] == "display_data"]
    updates = [m for m in messages if m["type"] == "update_display_data"]
    assert len(shown) == 1
    display_id = shown[0]["content"]["transient"]["display_id"]
    assert len(updates) >= 3
    assert {u["content"]["transient"]["display_id"] for u in updates} == {display_id}
    last = updates[-1]["content"]["data"]["text/plain"]
    if after:  # the last update says so; the checkpoint lands after the reply
        assert re.search(r"\d+ checkpoints so far · the final checkpoint is being written", last)
        store_probe.wait_for_count(len(updates) + 1)
    else:
        assert re.search(r"\d+ checkpoints · last #\d+", last), last
    # The status line is not also logged as text, line after line.
    assert "last #" not in stream_text(messages, "stdout") + stream_text(messages, "stderr")
    assert len(store_probe.list()) == len(updates) + 1


def test_store_failing_mid_cell_warns_once_and_cell_completes(
    start_kernel: StartKernel, notebook: Path
) -> None:
    url = str(notebook.parent / "ext-store")
    moved = url + ".moved"
    probe = StoreProbe(url, notebook)
    # The loop writes how far it got to `progress` and stops when `stop` exists: the test
    # steps by the loop's own iterations, not by wall time.
    progress, stop = notebook.parent / "progress", notebook.parent / "stop"
    kernel = start_kernel()
    cell = (
        f"%%checkpoint --every 0.3 --store {url}\n"
        "import os, time\ntotal = 0\nfor i in range(100_000):\n    total += i\n"
        f"    with open({str(progress)!r}, 'w') as out:\n        out.write(str(i))\n"
        f"    if os.path.exists({str(stop)!r}):\n        break\n    time.sleep(0.1)\n"
    )

    def iterations() -> int:
        text = progress.read_text() if progress.exists() else ""
        return int(text) if text.isdigit() else -1  # -1: not written yet, or mid-write

    msg_id = kernel.submit(cell)
    probe.wait_for_count(1)
    # Break the store under the running cell: a file where its folder was. (Tests run as
    # root, so a read-only folder would not stop the writes.)
    os.rename(url, moved)
    Path(url).write_text("not a folder")
    warned = "could not save a checkpoint"
    kernel.watch(msg_id, lambda r: warned in r.stderr, 60, "the warning")
    # Ten more iterations (at least 1 s of the loop's sleeps): about three more checkpoints
    # come due and fail, and are not warned about again.
    broken_at = iterations()
    wait_for(lambda: iterations() >= broken_at + 10, 60, "ten iterations with the store broken")
    os.unlink(url)
    os.rename(moved, url)
    kernel.watch(msg_id, lambda r: "the store works again" in r.stdout, 60, "the recovery")
    stop.write_text("")
    reply = kernel.collect(msg_id, timeout=60).check()

    assert reply.stderr.count(warned) == 1, reply.stderr
    assert reply.stdout.count("the store works again") == 1, reply.stdout
    total, i = kernel.value("(total, i)")
    assert broken_at + 10 <= i < 99_999
    assert total == sum(range(i + 1))
    assert probe.list()[-1].status == "complete"


def test_store_unusable_from_the_start_warns_once(
    start_kernel: StartKernel, notebook: Path
) -> None:
    blocker = notebook.parent / "file_not_dir"
    blocker.write_text("a file where the store's parent folder should be")
    kernel = start_kernel()
    cell = (
        f"%%checkpoint --every 0.2 --store {blocker}/store\n"
        "import time\nfor i in range(12):\n    time.sleep(0.1)\n"
    )
    reply = kernel.run(cell, timeout=30).check()
    assert reply.stderr.count("could not save a checkpoint") == 1, reply.stderr
    assert str(blocker) in reply.stderr
    assert kernel.value("i") == 11


def test_unpicklable_variables_are_skipped_once_with_reason(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    cell = (
        "%%checkpoint --every 0.3\n"
        "import sqlite3, time\n"
        "conn = sqlite3.connect(':memory:')\n"
        "gen = (x * x for x in range(10))\n"
        "total = 0\n"
        "for i in range(15):\n"
        "    total += i\n"
        "    time.sleep(0.1)\n"
    )
    out = k1.run(cell, timeout=30).check().text
    assert len(store_probe.list()) >= 3
    for name, type_name in (("conn", "sqlite3.Connection"), ("gen", "generator")):
        found = re.findall(rf"skipped {name} \({re.escape(type_name)}\): (\S.*)", out)
        assert len(found) == 1, (name, out)
    latest = store_probe.list()[-1]
    assert latest.status == "complete"
    assert {"conn", "gen"} <= set(latest.body["skipped"])
    k1.shutdown()

    k2, _ = load_in_new_kernel(start_kernel)
    restored = k2.run("%checkpoint restore").check().stdout
    assert "not saved: conn (sqlite3.Connection)" in restored
    assert "not saved: gen (generator)" in restored
    assert k2.value("(total, i)") == (sum(range(15)), 14)
    assert k2.value("'conn' in globals() or 'gen' in globals()") is False
    assert k2.value("sqlite3.__name__") == "sqlite3"
    shown = k2.run(f"%checkpoint show {latest.id}").check().stdout
    assert "skipped: conn (sqlite3.Connection)" in shown


def test_unload_removes_the_magics_and_load_brings_them_back(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    kernel = start_kernel()
    # A function defined in a %%checkpoint cell carries safe points; it must outlive the unload.
    kernel.run(
        "%%checkpoint --every 60\n"
        "def tally(n):\n    s = 0\n    for j in range(n):\n        s += j\n    return s\n"
    ).check()
    kernel.run("%unload_ext nbcheckpoint").check()

    line = kernel.run("%checkpoint list")
    assert line.status == "error" and line.error is not None
    assert line.error["ename"] == "UsageError"
    assert "%checkpoint" in line.error["evalue"] and "not found" in line.error["evalue"]
    cell = kernel.run("%%checkpoint\nx = 1")
    assert cell.status == "error" and cell.error is not None
    assert "%%checkpoint" in cell.error["evalue"]
    assert kernel.value("tally(10)") == 45
    assert kernel.value("'__nbc_begin__' in globals()") is False

    kernel.run("%load_ext nbcheckpoint").check()
    assert "#1" in kernel.run("%checkpoint list").check().stdout
    kernel.run("%%checkpoint --every 60\ny = 2").check()
    assert [ck.status for ck in store_probe.list()] == ["complete", "complete"]
    assert set(store_probe.list()[-1].variables) == {"y"}
