"""Auto mode saves every changed variable, whatever the cell's text says (in-process shell).

Each test changes a variable in a way the cell's text does not show, waits for the auto
save, and loads the newest checkpoint from the store: the value must be the new one.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from helpers import count_hashed_bytes

from nbcheckpoint.store import CheckpointStore, NotebookRef


def run(ip, code, fails=False):
    """Run a cell; its error is raised unless the test expects the cell to fail."""
    result = ip.run_cell(code)
    error = result.error_in_exec or result.error_before_exec
    if fails:
        assert error is not None, "the cell was expected to fail"
    elif error is not None:
        raise error
    return result


def saver(ip):
    return ip.magics_manager.registry["Checkpoint"].autosaver


def latest(tmp_path):
    store = CheckpointStore(str(tmp_path / "store"))
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    return store, nb


def auto_on(ip):
    run(ip, "%checkpoint auto on --min-duration 0")
    saver(ip).collect(wait=True)


def settle(ip):
    """Wait for the writer, then send what waited for it, as the kernel's idle callback does."""
    auto = saver(ip)
    auto.settle()
    assert not auto.pending and auto.due is None


def saved_values(ip, tmp_path, *names):
    settle(ip)
    store, nb = latest(tmp_path)
    return store.load(nb, names=list(names)).values


@pytest.mark.parametrize(
    ("setup", "cell", "name", "expected", "fails"),
    [
        # IPython calls the AST transformers again for the timed statement.
        ("z = 1", "z = 42\n%time y = 1", "z", 42, False),
        ("z = 1", "z = 43\n%timeit -n1 -r1 y = 1", "z", 43, False),
        # A cell that raised after assigning: auto mode saves after failed cells too.
        ("w = 1", "w = 7\nraise ValueError('after assigning')", "w", 7, True),
        # A method of a notebook class appending to a global the cell never names.
        (
            "log = []\nclass Recorder:\n    def note(self):\n        log.append('x')\nrec = Recorder()",
            "rec.note()",
            "log",
            ["x"],
            False,
        ),
        ("z = 1", "globals()['z'] = 5", "z", 5, False),
        ("q = 1", "exec('q = 3')", "q", 3, False),
        # A helper reached through a dict mutates an object held by another variable.
        (
            "acc = []\nops = {'add': lambda: acc.append(9)}",
            "ops['add']()",
            "acc",
            [9],
            False,
        ),
    ],
    ids=["time", "timeit", "raised", "method-global", "globals", "exec", "helper"],
)
def test_auto_saves_changes_the_cell_text_does_not_show(
    ip, tmp_path, setup, cell, name, expected, fails
):
    run(ip, setup)
    auto_on(ip)
    run(ip, cell, fails=fails)
    assert saved_values(ip, tmp_path, name)[name] == expected


def test_auto_saves_large_arrays_edited_through_views_and_shared_memory(ip, tmp_path):
    run(
        ip,
        "import numpy as np\n"
        "big = np.zeros(1_000_000)\n"  # 8 MB: fingerprinted by its memory, not in the pickle
        "box = {'inner': [np.zeros(300_000)]}\n"  # a large buffer inside small containers
        "raw = bytearray(4 << 20)\n"
        "over = np.frombuffer(raw, dtype=np.uint8)\n"  # shares memory, no base relation
        "views = [big[10:20]]",
    )
    auto_on(ip)
    run(ip, "views[0][0] = 5.0")  # writes big[10] through a small view in a list
    run(ip, "box['inner'][0][123] = 2.0")
    run(ip, "raw[7] = 1")  # changes `over`, which the cell never names
    values = saved_values(ip, tmp_path, "big", "box", "over")
    assert values["big"][10] == 5.0
    assert values["box"]["inner"][0][123] == 2.0
    assert values["over"][7] == 1


def test_auto_saves_nothing_when_nothing_changed(ip, tmp_path):
    run(ip, "import numpy as np\nbig = np.ones(500_000)\nsmall = [1]\ngen = (i for i in range(3))")
    auto_on(ip)
    store, nb = latest(tmp_path)
    before = len(store.list(nb))
    run(ip, "print(float(big.sum()), small)")  # reads only
    run(ip, "m = float(big.mean())")
    settle(ip)
    after = store.list(nb)
    # One save, for `m`; the generator (skipped by the store) is not saved again each cell.
    assert len(after) == before + 1
    assert after[-1].new_bytes < 50_000
    assert "gen" in after[-1].body["skipped"]


def test_auto_saves_a_variable_deleted_or_rebound_to_an_equal_value(ip, tmp_path):
    run(ip, "a = [1, 2]\nb = a\ngone = 1")
    auto_on(ip)
    run(ip, "del gone")
    settle(ip)
    store, nb = latest(tmp_path)
    assert "gone" not in store.list(nb)[-1].variables
    run(ip, "a.append(3)")
    values = saved_values(ip, tmp_path, "a", "b")
    assert values["a"] == values["b"] == [1, 2, 3]


def test_small_cell_with_many_variables_is_scanned_not_pickled_whole(ip, tmp_path):
    setup = "\n".join(f"v{i} = [{i}, 'x{i}']" for i in range(200))
    run(ip, setup)
    auto_on(ip)
    run(ip, "v7.append(1)")
    values = saved_values(ip, tmp_path, "v7", "v8")
    assert values == {"v7": [7, "x7", 1], "v8": [8, "x8"]}
    store, nb = latest(tmp_path)
    last = store.list(nb)[-1]
    assert last.new_bytes < 2_000  # only the group holding v7 was pickled again


def test_what_the_extension_puts_in_the_namespace_pickles_by_reference(ip):
    dill = pytest.importorskip("dill")
    run(ip, "x = [1, 2, 3]")
    auto_on(ip)
    # What the extension put in the namespace pickles by reference, to importable functions.
    # (``dill.dump_module()`` of the whole namespace is run in a real kernel in
    # tests/integration/test_auto_kernel.py: this test shell's namespace holds pytest's
    # captured stdout, which no kernel has.)
    ns = ip.user_ns
    for name in ("__nbc_begin__", "__nbc_fail__", "__nbc_sp__", "__nbc_loop__"):
        restored = pickle.loads(dill.dumps(ns[name]))
        assert restored is ns[name], name
    # And the user's own variables with them, as dump_module would pickle them.
    names = [n for n in ns if n.startswith("__nbc_") or n == "x"]
    restored = pickle.loads(dill.dumps({n: ns[n] for n in names}))
    assert restored["x"] == [1, 2, 3]


def test_scanner_sees_what_hashing_by_value_would_miss():
    from nbcheckpoint.capture.changes import Scanner

    ns = {
        "f": 0.0,
        "i": 5,
        "arr": np.arange(2_000_000, dtype=np.float64),
        "fn": None,
    }

    def make():
        total = [0]

        def add(k=[]):  # noqa: B006 - a mutable default, changed below
            total[0] += 1
            return k

        return add, total

    ns["fn"], _total = make()
    scanner = Scanner()
    names = list(ns)
    first = scanner.scan(ns, names)
    ns["f"] = -0.0  # equal to 0.0, and hash(-0.0) == hash(0.0)
    ns["i"] = 5 + (2**61 - 1)  # the same hash() as 5
    ns["arr"][::-1][0] = 7  # through a reversed view (negative strides)
    ns["fn"]()  # changes the closure's list
    second = scanner.scan(ns, names)
    assert second.changed_since(first) == {"f", "i", "arr", "fn"}
    ns["fn"].__defaults__[0].append(1)
    third = scanner.scan(ns, names)
    assert third.changed_since(second) == {"fn"}


def test_scanner_sees_class_attributes_and_instances_of_notebook_classes():
    from nbcheckpoint.capture.changes import Scanner

    # As if defined in a notebook: the store pickles such classes by value.
    Counter = type("Counter", (), {"n": 0, "__module__": "__main__"})
    ns = {"Counter": Counter, "c": Counter(), "other": [1]}
    scanner = Scanner()
    first = scanner.scan(ns, list(ns))
    assert not first.volatile
    Counter.n += 1  # the class changed; so did what `c` pickles with
    second = scanner.scan(ns, list(ns))
    assert second.changed_since(first) == {"Counter", "c"}
    ns["c"].x = 1
    assert scanner.scan(ns, list(ns)).changed_since(second) == {"c"}


def test_scanner_sees_a_part_replaced_by_an_equal_object_another_variable_holds():
    """A pickle shows content, not identity: ``x[0] = records[0]`` where ``x[0]`` was an
    equal copy left the fingerprint of ``x`` as it was, so auto mode kept ``x`` as saved,
    and the restore gave two objects where the notebook had one."""
    import re

    from nbcheckpoint.capture.changes import Scanner

    class Model:
        def __init__(self) -> None:
            self.best = {"id": 1}  # equal to records[1]
            self.epoch = 1000

    records = [{"id": i} for i in range(3)]
    ns = {
        "records": records,
        "x": [dict(records[0]), 7],
        "cfg": {"row": dict(records[1]), "n": 10**6, "shape": (3, 4), "flag": re.IGNORECASE},
        "pair": (dict(records[2]), 1),
        "model": Model(),
    }
    scanner = Scanner()
    names = list(ns)
    before = scanner.scan(ns, names)
    assert not before.volatile
    ns["x"][0] = records[0]
    ns["cfg"]["row"] = records[1]
    ns["pair"] = (records[2], 1)
    ns["model"].best = ns["cfg"]["row"]
    after = scanner.scan(ns, names)
    assert after.changed_since(before) == {"x", "cfg", "pair", "model"}
    ns["x"][0] = dict(records[0])  # and back to an equal copy
    back = scanner.scan(ns, names)
    assert back.changed_since(after) == {"x"}
    # Equal values computed again are new objects whose identity does not matter: no change.
    ns["x"][1] = int("7")
    ns["cfg"]["n"] = int("1" + "0" * 6)
    ns["cfg"]["shape"] = tuple([3, 4])
    ns["cfg"]["flag"] = re.RegexFlag(re.IGNORECASE.value)
    ns["model"].epoch = int("1000")
    assert scanner.scan(ns, names).changed_since(back) == set()


def test_a_matplotlib_figure_is_unchanged_until_it_changes(tmp_path):
    """matplotlib's CallbackRegistry takes the next callback id each time it is pickled,
    so a figure never pickled the same twice: auto mode saved every figure after every
    cell. Pickling (the scan's, and a save's) now leaves the counter as it was."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    from nbcheckpoint.capture.changes import Scanner

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    ns = {"fig": fig, "ax": ax, "other": [1]}
    scanner = Scanner(track_writes=False)
    first = scanner.scan(ns, list(ns))
    assert not first.volatile
    store = CheckpointStore(str(tmp_path / "s"))
    nb = NotebookRef.from_path(str(tmp_path / "figures.ipynb"))
    store.save(ns, nb)
    store.save(ns, nb)
    second = scanner.scan(ns, list(ns))
    assert second.changed_since(first) == set()
    first_id = ax.callbacks.connect("xlim_changed", print)
    third = scanner.scan(ns, list(ns))
    assert third.changed_since(second) == {"fig", "ax"}  # a callback connected: a change
    store.save(ns, nb)
    assert ax.callbacks.connect("ylim_changed", print) == first_id + 1  # no id was used up
    back = CheckpointStore(str(tmp_path / "s")).load(nb).values
    assert back["ax"].figure is back["fig"]
    assert back["ax"].callbacks.connect("xlim_changed", print) == first_id + 1
    plt.close("all")


def test_the_scanner_keeps_nothing_it_scanned_alive():
    """The fingerprint pickler's memo held the last variable it pickled until the next
    scan: a deleted variable stayed in memory, and the store's grouping, which reads
    reference counts, took the variable as held by something else."""
    import weakref

    from nbcheckpoint.capture.changes import Scanner

    class Box:
        pass

    big = np.ones((1 << 20) // 8 * 2)  # large enough to be hashed apart from the pickle
    ns = {"a": [1], "big": big, "box": [Box()]}
    del big
    gone = weakref.ref(ns["box"][0])
    held = sys.getrefcount(ns["box"]), sys.getrefcount(ns["big"])
    scanner = Scanner()
    for names in (["a", "box", "big"], ["a", "big", "box"]):  # each one scanned last
        scanner.scan(ns, names)
        after = sys.getrefcount(ns["box"]), sys.getrefcount(ns["big"])  # (not in the assert,
        assert after == held  # which would hold them too)
    del ns["box"]
    assert gone() is None


@pytest.mark.parametrize("track_writes", [True, False], ids=["write-tracking", "hashing"])
def test_scanner_sees_writes_to_large_arrays_with_and_without_write_tracking(track_writes):
    from nbcheckpoint.capture.changes import Scanner
    from nbcheckpoint.capture.pages import TRACK_MIN, tracker

    if track_writes and not tracker().active:
        pytest.skip(f"write tracking is not available here: {tracker().reason}")
    # Freeing a large block raises glibc's threshold for mapping blocks of their own: the
    # arrays below then come from the heap, beside objects written all the time (before
    # the fix, `other` was flagged in 15 of 20 tries so).
    np.zeros(TRACK_MIN // 8 * 4)
    big = np.zeros(TRACK_MIN // 8 * 3)  # 24 MiB
    ns = {"big": big, "half": big[::2], "other": np.ones(TRACK_MIN // 8 * 2)}
    scanner = Scanner(track_writes=track_writes)
    names = list(ns)
    first = scanner.scan(ns, names)
    second = scanner.scan(ns, names)
    assert second.changed_since(first) == set()
    big[-1] = 1.0  # the last element: `half` does not include it, but its span does
    third = scanner.scan(ns, names)
    assert third.changed_since(second) == {"big"}
    ns["half"][1] = 2.0  # through the strided view: big[2]
    fourth = scanner.scan(ns, names)
    assert fourth.changed_since(third) == {"big", "half"}
    assert scanner.scan(ns, names).changed_since(fourth) == set()


def test_scanner_hashes_memory_the_kernel_cannot_watch(tmp_path):
    """A file mapping changes when the file is written: it is hashed, not watched."""
    from nbcheckpoint.capture.changes import Scanner
    from nbcheckpoint.capture.pages import TRACK_MIN

    path = tmp_path / "data.bin"
    path.write_bytes(bytes(TRACK_MIN * 2))
    ns = {"mapped": np.memmap(path, dtype=np.uint8, mode="r+")}
    ns["view"] = np.asarray(ns["mapped"])  # a plain ndarray over the file's pages
    scanner = Scanner()
    first = scanner.scan(ns, ["view"])
    with open(path, "r+b") as f:  # written through the file, not through this mapping
        f.seek(12345)
        f.write(b"\x01")
    assert scanner.scan(ns, ["view"]).changed_since(first) == {"view"}


class FakeLoop:
    """Stands in for the kernel's event loop: callbacks wait until ``run`` is called."""

    def __init__(self):
        self.callbacks = []

    def add_callback(self, fn):
        self.callbacks.append(fn)

    def run(self):
        while self.callbacks:
            self.callbacks.pop(0)()


def make_saver(tmp_path, ns, loop):
    from nbcheckpoint.capture.autosave import AutoSaver, AutoSettings

    store = CheckpointStore(str(tmp_path / "store"))
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    saver = AutoSaver(ns, lambda: store, lambda: nb, set, AutoSettings, event_loop=lambda: loop)
    saver.enabled = True
    return saver, store, nb


def test_scan_waits_for_the_reply_and_runs_before_the_next_cell(tmp_path):
    loop = FakeLoop()
    ns = {"x": [1]}
    saver, store, nb = make_saver(tmp_path, ns, loop)
    saver.cell_finished({"first_line": "x = [1]"}, save=True)
    assert saver.due is not None and saver.last_scan is None  # nothing done before the reply
    loop.run()  # the kernel replied: scan, pickle, then the write starts
    saver.collect(wait=True)
    assert store.load(nb).values["x"] == [1]
    saver.cell_finished({"first_line": "x.append(2)"}, save=True)
    ns["x"].append(2)  # as if the next cell ran before the loop got to the scan...
    saver.cell_started()  # ...but the next cell's start scans first
    assert saver.due is None
    saver.collect(wait=True)
    assert store.load(nb).values["x"] == [1, 2]


def test_exit_scans_and_saves_what_the_last_cell_changed(tmp_path, monkeypatch):
    from nbcheckpoint.store.hashing import THREADS

    monkeypatch.setitem(THREADS, "enabled", True)  # at_exit turns threads off for good
    loop = FakeLoop()
    ns = {"x": 1}
    saver, store, nb = make_saver(tmp_path, ns, loop)
    saver.cell_finished({"first_line": "x = 1"}, save=True)
    saver.at_exit()  # the loop never ran: the kernel is going away
    assert store.load(nb).values["x"] == 1


def test_a_save_starts_from_the_checkpoint_that_just_landed(tmp_path):
    """The previous write ends between two looks at the writer: the next save must build on
    its checkpoint, or the groups it reuses come from an older one (stale values)."""
    from nbcheckpoint.capture.writer import Outcome

    ns = {"x": 1, "y": 1}
    saver, store, nb = make_saver(tmp_path, ns, None)
    saver.cell_finished({"first_line": "x = 1"}, save=True)
    saver.collect(wait=True)
    first = saver.base
    landed = store.save(ns, nb, ["x", "y"], status="auto")  # what the write under way made

    class EndsWhenAsked:
        """Busy until asked; its outcome is there once it said it was not busy."""

        def __init__(self):
            self.store = store
            self.asked = False
            self.jobs = []

        def busy(self):
            self.asked = True
            return False

        def poll(self):
            return [Outcome(self.jobs[0] if self.jobs else None, landed)] if self.asked else []

        def drain(self, timeout=None):
            return self.poll()

        def submit(self, job):
            self.jobs.append(job)

    writer = EndsWhenAsked()
    saver.writer = writer
    ns["y"] = 2
    saver.cell_finished({"first_line": "y = 2"}, save=True)
    assert writer.jobs, "no save was started"
    assert writer.jobs[-1].base is not first
    assert writer.jobs[-1].base.id == landed.id


def test_a_variable_only_dill_can_pickle_is_saved_after_every_change(ip, tmp_path):
    # A lock inside: the scan's C pickler cannot fingerprint it, the store's dill can save it.
    run(ip, "import queue\njobs = queue.Queue()\njobs.put(1)")
    auto_on(ip)
    scan = saver(ip).last_scan
    assert "jobs" in scan.volatile
    run(ip, "jobs.put(2)")
    assert list(saved_values(ip, tmp_path, "jobs")["jobs"].queue) == [1, 2]


def test_a_scan_that_fails_saves_everything(tmp_path, capsys):
    loop = None
    ns = {"x": 1, "y": [2]}
    saver, store, nb = make_saver(tmp_path, ns, loop)
    saver.cell_finished({"first_line": "x = 1"}, save=True)
    saver.collect(wait=True)

    def broken(ns_, names):
        raise RuntimeError("a bug in the scan")

    assert saver.scanner is not None
    saver.scanner.scan = broken
    ns["y"].append(3)
    saver.cell_finished({"first_line": "y.append(3)"}, save=True)
    saver.collect(wait=True)
    assert store.load(nb).values["y"] == [2, 3]
    assert "saves all of them" in capsys.readouterr().out


def test_auto_saves_an_in_place_edit_of_a_large_dataframe(ip, tmp_path):
    pytest.importorskip("pandas")
    # 12 MB of float64 in one block: watched for writes, not hashed.
    run(ip, "import numpy as np, pandas as pd\ndf = pd.DataFrame(np.zeros((125_000, 12)))")
    auto_on(ip)
    run(ip, "df.iloc[100_000, 3] = 7.0")
    assert saved_values(ip, tmp_path, "df")["df"].iloc[100_000, 3] == 7.0
    run(ip, "df.iat[5, 0] = 1.5")
    assert saved_values(ip, tmp_path, "df")["df"].iat[5, 0] == 1.5


def test_write_tracking_sees_writes_past_one_batch_of_page_regions():
    """More written regions than one PAGEMAP_SCAN call returns (256): the later ones count."""
    from nbcheckpoint.capture.pages import PAGE, tracker

    watch = tracker()
    if not watch.active:
        pytest.skip(f"write tracking is not available here: {watch.reason}")
    data = np.zeros(16 << 20, dtype=np.uint8)  # 4,096 pages
    address = data.__array_interface__["data"][0]
    half = data.nbytes // 2
    first, second = (address, half), (address + half, half)
    before = watch.tokens([first, second])
    assert watch.tokens([first, second]) == before  # nothing written
    data[:: PAGE * 2] = 1  # every other page: ~2,048 separate written regions
    after = watch.tokens([first, second])
    assert after[first] != before[first] and after[second] != before[second]
    assert watch.tokens([first, second]) == after
    data[-1] = 2  # the very last byte, in the last page
    last = watch.tokens([first, second])
    assert last[first] == after[first] and last[second] != after[second]


def test_write_tracking_tells_chunks_apart_after_scattered_writes():
    """The store's 4 MiB chunks of a buffer are spans too: each is changed exactly when one
    of its pages was written, whatever the number of written regions."""
    from nbcheckpoint.capture.pages import PAGE, tracker

    watch = tracker()
    if not watch.active:
        pytest.skip(f"write tracking is not available here: {watch.reason}")
    data = np.zeros(64 << 20, dtype=np.uint8)
    address = data.__array_interface__["data"][0]
    chunk = 4 << 20
    whole = (address, data.nbytes)
    chunks = [(address + at, chunk) for at in range(0, data.nbytes, chunk)]
    spans = [whole, *chunks]
    before = watch.tokens(spans)
    assert watch.tokens(spans) == before
    data[3 * chunk : 4 * chunk : PAGE * 2] = 1  # every other page of chunk 3: 512 regions
    data[9 * chunk + 5] = 1  # one byte near the start of chunk 9
    data[13 * chunk - 1] = 1  # the last byte of chunk 12
    after = watch.tokens(spans)
    changed = {i for i, span in enumerate(chunks) if after[span] != before[span]}
    # A page can hold the end of one chunk and the start of the next (the array need not
    # start on a page): a write next to a seam may count for both neighbours.
    assert {3, 9, 12} <= changed
    assert changed <= {2, 3, 4, 8, 9, 11, 12, 13}
    assert after[whole] != before[whole]
    assert watch.tokens(spans) == after


def test_write_tracking_tells_a_span_from_what_shares_its_first_and_last_page():
    """A buffer that does not start or end on a page shares those pages with its
    neighbours (on the heap: other objects, written all the time). Writes to the
    neighbours leave its number alone; writes to its own bytes there change it."""
    import mmap

    from nbcheckpoint.capture.pages import PAGE, tracker

    watch = tracker()
    if not watch.active:
        pytest.skip(f"write tracking is not available here: {watch.reason}")
    area = mmap.mmap(-1, PAGE * 300, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory = np.frombuffer(area, dtype=np.uint8)
    start, size = 100, PAGE * 200 + 50  # from byte 100 of page 0 to byte 150 of page 200
    address = memory.__array_interface__["data"][0]
    span = (address + start, size)
    inner = (address + PAGE * 10, PAGE * 20)  # a span inside it, on pages of its own
    before = watch.tokens([span, inner])
    for neighbour in [0, 99, start + size, start + size + 3000]:
        memory[neighbour] = 7
        assert watch.tokens([span, inner]) == before, f"byte {neighbour} is not the span's"
    memory[start + size - 1] ^= 1  # the span's last byte, in the shared page
    last = watch.tokens([span, inner])
    assert last[span] != before[span] and last[inner] == before[inner]
    memory[start] ^= 1  # its first byte
    first = watch.tokens([span, inner])
    assert first[span] != last[span]
    memory[PAGE * 15] ^= 1  # a page of its own, inside `inner` too
    middle = watch.tokens([span, inner])
    assert middle[span] != first[span] and middle[inner] != first[inner]
    memory[99] = 0
    assert watch.tokens([span, inner]) == middle
    del memory
    area.close()


# ------------------------------------------- only the chunks written are hashed again


EDITS = {
    "first chunk": "big[3] = -1.0",
    "a chunk in the middle": "big[len(big) // 2] += 7.0",
    "the last byte": "big[-1] = 42.0",
    "a slice across two chunks": "big[(4 << 20) // 8 - 2 : (4 << 20) // 8 + 2] = 5.0",
    "through a view": "view = big[1000:2000]\nview[10] = 3.0",
}


@pytest.mark.parametrize("edit", list(EDITS.values()), ids=list(EDITS))
def test_an_edit_rehashes_only_the_chunks_it_wrote(ip, tmp_path, monkeypatch, edit):
    from nbcheckpoint.capture.pages import tracker

    if not tracker().active:
        pytest.skip(f"write tracking is not available here: {tracker().reason}")
    run(ip, "import numpy as np\nbig = np.random.default_rng(0).random(8 << 20)")  # 64 MiB
    auto_on(ip)
    run(ip, "pass")  # a save after the first: the chunk memo knows every chunk now
    settle(ip)
    counted = count_hashed_bytes(monkeypatch)
    run(ip, edit)
    settle(ip)
    # At most the two 4 MiB chunks beside the edit (a page can hold the end of one and the
    # start of the next), each fast-hashed and BLAKE3-hashed: 16 MiB. Without the write
    # tracker's numbers, the 64 MiB array is fast-hashed whole and chunk by chunk: 128 MiB.
    assert 0 < counted["bytes"] <= 4 * (4 << 20) + (1 << 20), counted
    expected = ip.user_ns["big"].copy()
    store, nb = latest(tmp_path)
    assert np.array_equal(store.load(nb, names=["big"]).values["big"], expected)


def test_a_new_array_at_the_same_size_is_hashed_whole(ip, tmp_path, monkeypatch):
    from nbcheckpoint.capture.pages import tracker

    if not tracker().active:
        pytest.skip(f"write tracking is not available here: {tracker().reason}")
    run(ip, "import numpy as np\nbig = np.zeros(8 << 20)")
    auto_on(ip)
    run(ip, "pass")
    settle(ip)
    # Freed and allocated again (often at the same address): new memory, all of it new.
    run(ip, "del big\nbig = np.ones(8 << 20)")
    settle(ip)
    store, nb = latest(tmp_path)
    assert np.array_equal(store.load(nb, names=["big"]).values["big"], np.ones(8 << 20))


def test_without_write_tracking_every_chunk_is_hashed_and_the_save_is_right(
    ip, tmp_path, monkeypatch
):
    from nbcheckpoint.capture import autosave
    from nbcheckpoint.capture.changes import Scanner

    monkeypatch.setattr(autosave, "Scanner", lambda: Scanner(track_writes=False))
    run(ip, "import numpy as np\nbig = np.random.default_rng(1).random(8 << 20)")
    auto_on(ip)
    run(ip, "pass")
    settle(ip)
    counted = count_hashed_bytes(monkeypatch)
    run(ip, "big[12345] = -3.0")
    settle(ip)
    assert counted["bytes"] >= 64 << 20  # no numbers to trust: the whole array again
    store, nb = latest(tmp_path)
    assert store.load(nb, names=["big"]).values["big"][12345] == -3.0
