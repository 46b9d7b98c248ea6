"""In-process IPython shell tests of the magics, the cell transformers and the engine."""

from __future__ import annotations

import os

import pytest
from helpers import count_hashed_bytes
from IPython.core.error import UsageError

from nbcheckpoint.ipython.transform import MARKER, input_transform
from nbcheckpoint.store import CheckpointStore, NotebookRef


class CellError(Exception):
    pass


def run(ip, code):
    """Run a cell; raise its error, so a test fails loudly when a cell fails."""
    result = ip.run_cell(code)
    error = result.error_in_exec or result.error_before_exec
    if error is not None:
        raise error
    return result.result


def store_of(tmp_path):
    return CheckpointStore(str(tmp_path / "store")), NotebookRef.from_path(
        str(tmp_path / "nb.ipynb")
    )


LOOP = """%%checkpoint --every 0.01 --mode inline
import time
total = 0
for i in range(20):
    total += i
    time.sleep(0.003)
total
"""


def test_input_transform_keeps_line_numbers_and_leaves_help_alone():
    lines = ["%%checkpoint --every 5s a b\n", "x = 1\n"]
    out = input_transform(lines)
    assert out[0].startswith(f"{MARKER}(") and "--every 5s a b" in out[0]
    assert out[1:] == lines[1:]
    assert input_transform(["%%checkpoint?\n"]) == ["%%checkpoint?\n"]
    assert input_transform(["%%time\n", "x\n"]) == ["%%time\n", "x\n"]
    assert input_transform(["%%checkpointer\n"]) == ["%%checkpointer\n"]


def test_cell_runs_checkpoints_and_shows_its_last_value(ip, tmp_path, capsys):
    assert run(ip, LOOP) == sum(range(20))
    store, nb = store_of(tmp_path)
    checkpoints = store.list(nb)
    assert checkpoints[-1].status == "complete"
    running = [c for c in checkpoints if c.status == "running"]
    assert running, "no mid-cell checkpoint was taken"
    in_loop = [c for c in running if "`for i`" in (c.body["position"]["description"] or "")]
    assert in_loop, "no checkpoint inside the loop"
    for ck in in_loop:
        values = store.load(nb, ck.id).values
        # The loop-top safe point sees the state before the iteration's body.
        assert values["total"] == sum(range(values["i"]))
        assert ck.body["position"]["counters"] == [values["i"]]
    assert "checkpoint" in capsys.readouterr().out


def test_tight_loop_checkpoints_through_marker_lines(ip, tmp_path, monkeypatch):
    import signal
    import sys

    from nbcheckpoint.capture import arm

    if arm.available() is not None:
        pytest.skip(f"marker safepoints unavailable here: {arm.available()}")
    armed = []
    original = arm.Arming._arm

    def counting(self, frame, spans):
        armed.append(frame.f_lineno)
        original(self, frame, spans)

    monkeypatch.setattr(arm.Arming, "_arm", counting)
    cell = (
        "%%checkpoint --every 0.05 --mode inline\n"
        "total = 0\n"
        "for i in range(6_000_000):\n"
        "    total += i\n"
        "total\n"
    )
    assert run(ip, cell) == sum(range(6_000_000))
    assert armed, "the loop had no marker line, or no poke armed it"
    store, nb = store_of(tmp_path)
    in_loop = [
        c for c in store.list(nb) if c.status == "running" and c.body["position"]["counters"]
    ]
    assert in_loop, "no checkpoint inside the loop"
    for ck in in_loop:
        values = store.load(nb, ck.id).values
        assert values["total"] == sum(range(values["i"]))
        assert ck.body["position"]["counters"] == [values["i"]]
        assert ck.body["position"]["resumable"]
    assert sys.gettrace() is None
    low, high = signal.SIGRTMIN, signal.SIGRTMAX
    assert all(signal.getsignal(s) == signal.SIG_DFL for s in range(low + 4, high))


def test_marker_lines_of_a_function_from_an_earlier_cell_still_checkpoint(ip, tmp_path):
    from nbcheckpoint.capture import arm

    if arm.available() is not None:
        pytest.skip(f"marker safepoints unavailable here: {arm.available()}")
    # The function's loop is tight, so it has a marker line, compiled in the first cell.
    run(
        ip,
        "%%checkpoint --every 100\ndef spin(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t\n",
    )
    assert run(ip, "%%checkpoint --every 0.05 --mode inline\nr = spin(6_000_000)\nr") == sum(
        range(6_000_000)
    )
    store, nb = store_of(tmp_path)
    positions = [c.body.get("position") or {} for c in store.list(nb)]
    inside = [p for p in positions if p.get("description") == "inside a function"]
    assert inside, "no checkpoint from the function's marker line"
    assert not any(p["resumable"] for p in inside)


def test_a_marker_checkpoint_that_fails_warns_once_and_the_cell_goes_on(ip, capsys):
    from nbcheckpoint.capture import arm

    if arm.available() is not None:
        pytest.skip(f"marker safepoints unavailable here: {arm.available()}")
    # The loop's position probe is gone (a cell that cleans up names it should not touch):
    # the checkpoint cannot say where it is, but the user's loop must finish all the same.
    cell = (
        "%%checkpoint --every 0.02 --mode inline\n"
        "t = 0\n"
        "for i in range(4_000_000):\n"
        "    t += i\n"
        "    if i == 0:\n"
        "        del _nbc_p1_\n"
    )
    run(ip, cell)
    assert ip.user_ns["t"] == sum(range(4_000_000))
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("a checkpoint inside a loop failed") == 1
    assert "the cell goes on" in text


def test_markers_can_be_turned_off_and_config_says_which(ip, tmp_path, capsys, monkeypatch):
    from nbcheckpoint.capture import arm

    if arm.available() is not None:
        pytest.skip(f"marker safepoints unavailable here: {arm.available()}")
    run(ip, "%checkpoint config")
    assert "marker lines in loops without calls" in capsys.readouterr().out
    armed = []
    monkeypatch.setattr(arm.Arming, "_arm", lambda self, frame, heads: armed.append(1))
    run(ip, "%config Checkpoint.markers = False")
    try:
        run(ip, "%checkpoint config")
        assert "flag test in every loop (Checkpoint.markers = False)" in capsys.readouterr().out
        cell = "%%checkpoint --every 0.05 --mode inline\nt = 0\nfor i in range(3_000_000):\n    t += i\n"
        run(ip, cell)
    finally:
        run(ip, "%config Checkpoint.markers = True")
    assert not armed  # flag tests only
    store, nb = store_of(tmp_path)
    assert any((c.body.get("position") or {}).get("counters") for c in store.list(nb))


def test_traceback_points_at_the_users_line(ip):
    result = ip.run_cell("%%checkpoint --every 100\nx = 1\nraise ValueError('boom')\n")
    assert isinstance(result.error_in_exec, ValueError)
    tb = result.error_in_exec.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    assert tb.tb_lineno == 3


def test_top_level_await_still_works(ip):
    assert (
        run(
            ip,
            "%%checkpoint --every 100\nimport asyncio\nawait asyncio.sleep(0)\nanswer = 42\nanswer",
        )
        == 42
    )


def test_interrupt_marks_the_last_checkpoint_and_rerun_resumes(ip, tmp_path, capsys):
    os.environ["NBC_TEST_STOP"] = "1"
    cell = """%%checkpoint --every 0.01 --mode inline
import time, os
seen = []
for i in range(30):
    seen.append(i)
    time.sleep(0.003)
    if i == 20 and os.environ.pop("NBC_TEST_STOP", None):
        raise KeyboardInterrupt
"""
    with pytest.raises(KeyboardInterrupt):
        run(ip, cell)
    store, nb = store_of(tmp_path)
    last = store.list(nb)[-1]
    assert last.status == "interrupted"
    capsys.readouterr()
    run(ip, cell)
    out = capsys.readouterr().out
    assert f"Resuming from checkpoint #{last.id}" in out and "`for i`" in out
    assert ip.user_ns["seen"] == list(range(30))


def test_no_resume_and_an_edited_cell_start_over(ip, tmp_path, capsys):
    os.environ["NBC_TEST_STOP"] = "1"
    cell = """%%checkpoint --every 0.01 --mode inline
import time, os
count = 0
for i in range(25):
    count += 1
    time.sleep(0.003)
    if i == 15 and os.environ.pop("NBC_TEST_STOP", None):
        raise KeyboardInterrupt
"""
    with pytest.raises(KeyboardInterrupt):
        run(ip, cell)
    capsys.readouterr()
    run(ip, cell.replace("--mode inline", "--mode inline --no-resume"))
    assert "Resuming" not in capsys.readouterr().out
    assert ip.user_ns["count"] == 25


def test_resume_notes_an_iterable_read_through(ip, capsys):
    os.environ["NBC_TEST_STOP"] = "1"
    ip.run_cell("def numbers(n):\n    yield from range(n)\n")
    cell = """%%checkpoint --every 0.01 --mode inline
import time, os
got = []
for x in numbers(30):
    got.append(x)
    time.sleep(0.003)
    if x == 20 and os.environ.pop("NBC_TEST_STOP", None):
        raise KeyboardInterrupt
"""
    with pytest.raises(KeyboardInterrupt):
        run(ip, cell)
    capsys.readouterr()
    run(ip, cell)
    out = capsys.readouterr().out
    assert "read through" in out and "`for x`" in out
    assert ip.user_ns["got"] == list(range(30))


def test_save_list_show_restore_rm(ip, tmp_path, capsys):
    run(
        ip,
        "import numpy as np\narr = np.arange(10)\nalias = arr\ngen = (x for x in [])\npassword = 'hunter2'",
    )
    run(ip, "%checkpoint save")
    out = capsys.readouterr().out
    assert "Saved checkpoint #1" in out
    assert "skipped: gen (generator)" in out and "withheld: password" in out
    run(ip, "%checkpoint list")
    assert "#1" in capsys.readouterr().out
    run(ip, "%checkpoint show 1")
    shown = capsys.readouterr().out
    assert "arr" in shown and "numpy.ndarray" in shown and "np (numpy)" in shown
    run(ip, "del arr, alias, np")
    run(ip, "%checkpoint restore")
    out = capsys.readouterr().out
    assert "Restored checkpoint #1" in out and "not saved: gen" in out
    assert ip.user_ns["arr"] is ip.user_ns["alias"]
    assert ip.user_ns["np"].__name__ == "numpy"
    run(ip, "%checkpoint restore 1 arr")
    run(ip, "%checkpoint rm 1")
    store, nb = store_of(tmp_path)
    assert store.list(nb) == []


def test_diff_two_checkpoints_and_now(ip, capsys):
    run(ip, "import numpy as np\nw = np.zeros((3, 4))\nsteps = 1\nold = 'x'")
    run(ip, "%checkpoint save")
    run(ip, "w = np.zeros((5, 4), dtype='float32')\nsteps = 2\ndel old\nloss = [0.5]")
    run(ip, "%checkpoint save")
    capsys.readouterr()
    run(ip, "%checkpoint diff 1 #2")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "#1 -> #2: 2 changed, 1 added, 1 removed, 1 same"
    (w_line,) = [line for line in lines if line.startswith("w ")]
    assert "changed" in w_line and "shape (3, 4) -> (5, 4)" in w_line
    assert "dtype float64 -> float32" in w_line and "96 B" not in w_line
    assert any(line.startswith("loss ") and " added " in line for line in lines)
    assert any(line.startswith("old ") and " removed " in line for line in lines)
    assert not any(line.startswith("np ") for line in lines)  # same: listed with --all only
    run(ip, "%checkpoint diff 1 2 --all")
    assert any(line.startswith("np ") for line in capsys.readouterr().out.splitlines())

    run(ip, "w[0, 0] = 1.0")
    run(ip, "%checkpoint diff 2")
    out = capsys.readouterr().out
    assert out.startswith("#2 -> now: 1 changed, 0 added, 0 removed, 3 same")
    (w_line,) = [line for line in out.splitlines() if line.startswith("w ")]
    assert "shape" not in w_line  # same shape and dtype, other content
    run(ip, "%checkpoint list")  # "now" wrote no checkpoint
    assert "#3" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("%checkpoint diff", "required: ID"),
        ("%checkpoint diff 1 abc", "'abc' is not a checkpoint id"),
        ("%checkpoint diff 999", "No checkpoint #999"),
        ("%checkpoint bogus", "unknown command 'bogus'"),
        ("%checkpoint show 999", "No checkpoint #999"),
        ("%checkpoint show abc", "'abc' is not a checkpoint id"),
        ("%checkpoint save nosuchvar", "no variable named nosuchvar"),
        ("%checkpoint auto sideways", "invalid choice"),
        ("%%checkpoint --every abc\nx = 1", "--every abc"),
        ("%%checkpoint --every 0\nx = 1", "more than 0 seconds"),
        ("%%checkpoint --bogus\nx = 1", "--bogus"),
        ("%%checkpoint --mode sideways\nx = 1", "sideways"),
        ("%%checkpoint\n", "needs code"),
    ],
)
def test_usage_errors_name_the_bad_input(ip, line, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace("?", r"\?")):
        run(ip, line)


def test_help_and_config(ip, capsys):
    run(ip, "%checkpoint help")
    assert "%checkpoint restore" in capsys.readouterr().out
    doc = ip.find_cell_magic("checkpoint").__doc__
    assert "--every" in doc and "--no-resume" in doc
    run(ip, "%config Checkpoint.every = 30")
    run(ip, "%checkpoint config")
    out = capsys.readouterr().out
    assert "30 s" in out and "signing key" in out and "mode" in out


def test_auto_mode_saves_only_changes(ip, tmp_path):
    run(ip, "import numpy as np\nbig = np.ones(500_000)\nsmall = [1]")
    run(ip, "%checkpoint auto on --min-duration 0")
    magics = ip.magics_manager.registry["Checkpoint"]
    magics._auto_collect(wait=True)
    run(ip, "small.append(2)")
    magics._auto_collect(wait=True)
    run(ip, "print('nothing changes')")
    magics._auto_collect(wait=True)
    store, nb = store_of(tmp_path)
    checkpoints = store.list(nb)
    assert [c.status for c in checkpoints] == ["auto", "auto"]
    assert checkpoints[-1].new_bytes < 50_000  # the big array was not written again
    assert store.load(nb).values["small"] == [1, 2]
    run(ip, "%checkpoint auto off")


def test_unload_removes_every_registration(ip):
    before = len(ip.ast_transformers)
    ip.run_line_magic("unload_ext", "nbcheckpoint")
    assert "checkpoint" not in ip.magics_manager.magics["line"]
    assert len(ip.ast_transformers) == before - 1
    assert "__nbc_begin__" not in ip.user_ns
    assert ip.user_ns["_nbc_due_"] is False  # functions from earlier cells still test it
    ip.run_line_magic("load_ext", "nbcheckpoint")
    assert "checkpoint" in ip.magics_manager.magics["cell"]


def test_safepoint_in_a_users_function(ip, tmp_path):
    run(
        ip,
        "import nbcheckpoint, time\ndef work(out):\n    for k in range(30):\n        nbcheckpoint.safepoint()\n        out.append(k)\n        time.sleep(0.003)\n",
    )
    run(ip, "%%checkpoint --every 0.01 --mode inline\nacc = []\nwork(acc)\n")
    store, nb = store_of(tmp_path)
    inside = [
        c
        for c in store.list(nb)
        if (c.body.get("position") or {}).get("description") == "inside a function"
    ]
    assert inside and not inside[0].body["position"]["resumable"]


def test_auto_mode_never_makes_a_cell_wait_for_the_disk(ip, tmp_path, monkeypatch):
    import threading
    import time as _time

    run(ip, "counter = 0")
    run(ip, "%checkpoint auto on --min-duration 0")
    magics = ip.magics_manager.registry["Checkpoint"]
    magics._auto_collect(wait=True)
    store = magics.open_store()
    release = threading.Event()
    real_commit = store.commit

    def slow_commit(*args, **kwargs):
        release.wait(10)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(store, "commit", slow_commit)
    started = _time.perf_counter()
    run(ip, "counter = 1")  # its save starts and blocks in the writer thread
    run(ip, "counter = 2")  # the writer is busy: this change waits, the cell does not
    took = _time.perf_counter() - started
    assert took < 5, f"cells waited {took:.1f} s for the writer"
    release.set()
    magics._auto_collect(wait=True)
    run(ip, "pass")  # the next cell's start sends what waited
    magics._auto_collect(wait=True)
    store_, nb = store_of(tmp_path)
    assert store_.load(nb).values["counter"] == 2
    run(ip, "%checkpoint auto off")


def test_auto_mode_saves_what_a_restore_brought_back(ip, tmp_path):
    run(ip, "value = 1")
    run(ip, "%checkpoint save")
    run(ip, "value = 2")
    run(ip, "%checkpoint auto on --min-duration 0")
    magics = ip.magics_manager.registry["Checkpoint"]
    magics._auto_collect(wait=True)
    run(ip, "%checkpoint restore 1")  # value is 1 again, though the cell never names it
    magics._auto_collect(wait=True)
    run(ip, "pass")
    magics._auto_collect(wait=True)
    store, nb = store_of(tmp_path)
    assert store.load(nb).values["value"] == 1
    run(ip, "%checkpoint auto off")


# --------------------------------------------------------- names (issue 17)
def test_only_ipythons_own_names_are_left_out():
    from nbcheckpoint.capture.names import user_names

    ns = {n: 1 for n in ["_scale", "__private", "x", "_", "__", "___", "_i", "_ii", "_iii"]}
    ns.update({n: 1 for n in ["_i7", "_7", "_oh", "_ih", "_dh", "In", "Out", "exit", "quit"]})
    ns.update({n: 1 for n in ["get_ipython", "__builtins__", "__name__", "__session__"]})
    ns.update({n: 1 for n in ["_nbc_due_", "_nbc_it1_", "__nbc_sp__", "_exit_code", "hidden"]})
    assert user_names(ns, ns, hidden={"hidden"}) == ["__private", "_scale", "x"]


def test_underscore_variables_are_saved_and_a_resume_uses_them(ip, tmp_path, capsys):
    os.environ["NBC_TEST_STOP"] = "1"
    run(ip, "_scale = 3")
    cell = """%%checkpoint --every 0.01 --mode inline
import time, os
total = 0
for i in range(30):
    total += _scale * i
    _scale += 1
    time.sleep(0.003)
    if i == 20 and os.environ.pop("NBC_TEST_STOP", None):
        raise KeyboardInterrupt
"""
    try:
        with pytest.raises(KeyboardInterrupt):
            run(ip, cell)
        store, nb = store_of(tmp_path)
        last = store.list(nb)[-1]
        assert "_scale" in last.variables
        assert not {"_", "_i", "In", "Out", "_nbc_due_"} & set(last.variables)
        run(ip, "del _scale, total")  # as in a new kernel: only the checkpoint has them
        capsys.readouterr()
        run(ip, cell)
        assert f"Resuming from checkpoint #{last.id}" in capsys.readouterr().out
        assert ip.user_ns["total"] == sum((3 + i) * i for i in range(30))
        assert ip.user_ns["_scale"] == 33
    finally:
        ip.user_ns.pop("_scale", None)


def test_named_underscore_variable_is_kept(ip, tmp_path, capsys):
    try:
        run(ip, "_scale = 2.5")
        run(ip, "%%checkpoint _scale total --every 100\ntotal = _scale * 4")
        assert "not saved" not in capsys.readouterr().out
        store, nb = store_of(tmp_path)
        assert store.load(nb).values == {"_scale": 2.5, "total": 10.0}
    finally:
        ip.user_ns.pop("_scale", None)


def test_unknown_names_are_warned_about_and_the_cell_still_runs(ip, tmp_path, capsys):
    run(ip, "%%checkpoint undefined_name total _ --every 100\ntotal = 7")
    out = capsys.readouterr().out
    assert "no variable named undefined_name" in out and "Check the spelling" in out
    assert "_ belongs to IPython" in out
    assert "total" not in out.split("no variable named")[1].split(",")[0]
    assert ip.user_ns["total"] == 7
    store, nb = store_of(tmp_path)
    assert set(store.load(nb).values) == {"total"}


def test_a_restore_says_what_it_did_not_bring_back(ip, tmp_path, capsys):
    run(ip, "history = [1, 2]")
    run(ip, "%checkpoint save history")  # #1 holds history
    run(ip, "model = {'w': 1}\nx = 1\ny = 2")
    run(ip, "%%checkpoint x y --every 100\nx += 1\ny += 1")  # #2 holds x, y only
    for name in ("history", "model", "x", "y"):  # a new kernel: nothing defined
        del ip.user_ns[name]
    run(ip, "extra = 5")
    capsys.readouterr()
    run(ip, "%checkpoint restore")
    out = capsys.readouterr().out
    assert "Restored checkpoint #2" in out and "2 variables (x, y)" in out
    assert "Not in checkpoint #2: extra, history, model (that cell saved only x, y)." in out
    assert "extra: kept as it is now." in out
    assert "history: checkpoint #1 has it: %checkpoint restore 1 history" in out
    assert "model: in no checkpoint; run the cells that define it again." in out
    run(ip, "%checkpoint restore 1 history")
    assert "Not in checkpoint" not in capsys.readouterr().out  # a partial restore on purpose


# ----------------------------------------------------- file handles (issue 17)
def test_a_file_handle_is_skipped_and_a_restore_leaves_the_file_alone(ip, tmp_path, capsys):
    run(ip, "with open('results.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\nkept = 1")
    before = (tmp_path / "results.csv").read_bytes()
    run(ip, "%checkpoint save")
    out = capsys.readouterr().out
    assert (
        "skipped: f (_io.TextIOWrapper): closed file 'results.csv': file handles are not saved"
        in out
    )
    run(ip, "del f, kept")
    run(ip, "%checkpoint restore")
    out = capsys.readouterr().out
    assert "not saved: f (_io.TextIOWrapper)" in out and "kept" in out
    assert "f" not in ip.user_ns
    assert (tmp_path / "results.csv").read_bytes() == before


# --------------------------------------------------- help and settings (issue 17)
def test_help_lists_every_subcommand_and_option(ip, capsys):
    from nbcheckpoint.ipython.commands import PARSER, subparsers

    run(ip, "%checkpoint help")
    shown = capsys.readouterr().out
    doc = ip.find_cell_magic("checkpoint").__doc__
    ip.run_cell("%%checkpoint?")
    inspected = capsys.readouterr().out
    subcommands = subparsers(PARSER)
    assert {"list", "show", "restore", "save", "pin", "unpin", "rm", "gc", "auto"} < set(
        subcommands
    )
    assert {"config", "panel", "help"} < set(subcommands)
    for text in (shown, doc, inspected):
        for name, parser in subcommands.items():
            assert (name if name.startswith("%%") else f"%checkpoint {name}") in text, name
            for action in parser._actions:
                for option in action.option_strings:
                    assert option in text, (name, option)
        assert "--mode {auto,inline,fork}" in text and "%checkpoint pin" in text


def test_a_bad_setting_is_refused_and_the_old_value_stays(ip, capsys):
    magics = ip.magics_manager.registry["Checkpoint"]
    try:
        run(ip, "%config Checkpoint.mode = 'inline'")
        run(ip, "%config Checkpoint.mode = 'bogus'")
        out = capsys.readouterr().out
        assert "'bogus'" in out and "Checkpoint.mode stays 'inline'" in out
        assert magics.mode == "inline"
        for setting, needle in [
            ("every = 0", "more than 0 seconds"),
            ("max_size = 'lots'", "Checkpoint.max_size = 'lots'"),
            ("keep = -2", "keep N >= 1 checkpoints, 0 for all"),
            ("auto_min_duration = -1", "cannot be negative"),
        ]:
            name = setting.split()[0]
            old = getattr(magics, name)
            run(ip, f"%config Checkpoint.{setting}")
            assert needle in capsys.readouterr().out
            assert getattr(magics, name) == old
        # Later cells still work, and so does loading the extension again with the bad
        # values still in the shell's config.
        assert run(ip, "%%checkpoint --every 100\nx = 1\nx") == 1
        ip.run_line_magic("reload_ext", "nbcheckpoint")
        assert "stays" in capsys.readouterr().out
        assert run(ip, "%%checkpoint --every 100\nx = 2\nx") == 2
    finally:
        for name in ("mode", "every", "max_size", "keep", "auto_min_duration"):
            ip.config.Checkpoint.pop(name, None)


def test_a_resume_says_what_the_checkpoint_lacks(ip, tmp_path, capsys):
    os.environ["NBC_TEST_STOP"] = "1"
    run(ip, "model = {'w': 1}\nx = 0")
    cell = """%%checkpoint x --every 0.01 --mode inline
import time, os
for i in range(30):
    x += model['w']
    time.sleep(0.003)
    if i == 20 and os.environ.pop("NBC_TEST_STOP", None):
        raise KeyboardInterrupt
"""
    with pytest.raises(KeyboardInterrupt):
        run(ip, cell)
    store, nb = store_of(tmp_path)
    last = store.list(nb)[-1]
    run(ip, "del model, x, i")  # as in a new kernel
    capsys.readouterr()
    with pytest.raises(NameError):
        run(ip, cell)
    out = capsys.readouterr().out
    assert f"Resuming from checkpoint #{last.id}" in out
    assert f"Not in checkpoint #{last.id}: i, model (that cell saved only x)." in out
    assert "i, model: in no checkpoint; run the cells that define them again." in out


def test_retention_defaults_are_applied_and_shown_and_can_be_turned_off(ip, tmp_path, capsys):
    from nbcheckpoint.store.store import DEFAULT_KEEP

    run(ip, "%checkpoint config")
    out = capsys.readouterr().out
    assert f"newest {DEFAULT_KEEP} per notebook" in out and "(default" in out
    run(ip, "x = 0")
    for i in range(DEFAULT_KEEP + 2):
        run(ip, f"x = {i}\n%checkpoint save x")
    store, nb = store_of(tmp_path)
    assert len(store.list(nb)) == DEFAULT_KEEP  # the default applies with nothing set
    run(ip, "%config Checkpoint.keep = 0")
    run(ip, "%config Checkpoint.max_size = '0'")
    run(ip, "%checkpoint config")
    out = capsys.readouterr().out
    assert "keep         all" in out and "no limit" in out
    for i in range(3):
        run(ip, f"x = {i}\n%checkpoint save x")
    assert len(store.list(nb)) == DEFAULT_KEEP + 3  # 0 keeps them all
    run(ip, "%config Checkpoint.keep = None")
    run(ip, "%config Checkpoint.max_size = None")


def test_show_without_an_id_shows_the_latest(ip, capsys):
    run(ip, "%checkpoint show")
    assert "No checkpoints yet" in capsys.readouterr().out
    run(ip, "a = 1")
    run(ip, "%checkpoint save a")
    run(ip, "b = 2")
    run(ip, "%checkpoint save a b")
    capsys.readouterr()
    run(ip, "%checkpoint show")
    shown = capsys.readouterr().out
    assert shown.startswith("Checkpoint #2") and "b" in shown


def test_one_variable_is_said_in_the_singular(ip, capsys):
    run(ip, "a = 1")
    run(ip, "%checkpoint save a")
    out = capsys.readouterr().out
    assert "1 variable," in out and "1 variables" not in out
    run(ip, "%checkpoint restore")
    assert "1 variable (a)" in capsys.readouterr().out


def test_a_manual_save_raises_the_checkpoint_event(ip):
    """The JupyterLab status bar and live panels follow ``%checkpoint save`` as they follow
    a ``%%checkpoint`` cell: both hear the same event, with the saved checkpoint."""
    from nbcheckpoint.capture import events
    from nbcheckpoint.frontend import comm as status_comm

    heard, published = [], []
    events.subscribe(heard.append)
    original = status_comm.publish
    status_comm.publish = lambda content: published.append(content) or True
    try:
        run(ip, "a = 1")
        run(ip, "%checkpoint save a")
    finally:
        status_comm.publish = original
        events.unsubscribe(heard.append)
    assert [ck.id for ck in heard] == [1] and heard[0].status == "manual"
    assert [(m["event"], m["id"], m["status"]) for m in published] == [("checkpoint", 1, "manual")]


def test_cells_are_named_by_their_first_line_not_only_the_run_count(ip, capsys):
    run(ip, "%%checkpoint --every 0.01 --mode inline\nfor step in range(3):\n    pass\n")
    capsys.readouterr()
    run(ip, "%checkpoint list")
    listed = capsys.readouterr().out
    assert '"for step in range(3):"' in listed
    run(ip, "%checkpoint restore")
    assert 'Restored checkpoint #1 ("for step in range(3):", ' in capsys.readouterr().out


# ------------------------------------------------ the final checkpoint, after the cell
BIG_LIST = "%%checkpoint --every 3600{mode}\nrows = list(range(250_000))\nsmall = 1\n"


@pytest.mark.parametrize(
    ("mode", "env", "after"),
    [
        ("", {}, True),
        (" --mode fork", {}, True),
        (" --mode inline", {}, False),  # asked for: before the cell returns
        ("", {"NBCHECKPOINT_NO_FORK": "1"}, False),  # fork unsafe: likewise
    ],
    ids=["auto", "fork", "inline", "no-fork"],
)
def test_a_large_final_checkpoint_is_written_after_the_cell_unless_it_cannot_be(
    ip, tmp_path, capsys, monkeypatch, mode, env, after
):
    from nbcheckpoint.capture import writer

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run(ip, BIG_LIST.format(mode=mode))
    out = capsys.readouterr().out
    assert ("being written after the cell" in out) is after, out
    if after:
        assert "250,000 items in lists and dicts" in out
        assert writer.settle(timeout=60)
    store, nb = store_of(tmp_path)
    [final] = store.list(nb)
    assert final.status == "complete" and store.load(nb).values["rows"][-1] == 249_999


def test_a_small_final_checkpoint_is_written_before_the_cell_returns(ip, tmp_path, capsys):
    from nbcheckpoint.capture import writer

    run(ip, "%%checkpoint --every 3600\nrows = list(range(1000))\n")
    assert not writer.writing_after_cell()
    assert "being written after the cell" not in capsys.readouterr().out
    store, nb = store_of(tmp_path)
    assert [ck.status for ck in store.list(nb)] == ["complete"]


WATCHED_LOOP = """%%checkpoint --every 0.01 --mode inline
import time
for step in range(30):
    if step % 3 == 0:
        big[(step % 16) * (1 << 19) + 7] = step  # one element, in chunk step % 16
    done = step
    time.sleep(0.03)
"""


def test_a_loops_snapshots_hash_only_the_chunks_written_since_the_last_one(
    ip, tmp_path, monkeypatch
):
    """Inline snapshots of a loop ask the write tracker which chunks changed: each one after
    the first two hashes at most the chunks the loop wrote, and every one holds the array
    exactly as it was at its safe point."""
    import numpy as np

    from nbcheckpoint.capture.pages import tracker

    base = np.random.default_rng(3).random(8 << 20)  # 64 MiB: 16 chunks of 4 MiB
    ip.user_ns["big"] = base.copy()
    hashed = count_hashed_bytes(monkeypatch)
    per_save: list[int] = []
    real_prepare = CheckpointStore.prepare

    def prepare(self, *a, **kw):
        before = hashed["bytes"]
        try:
            return real_prepare(self, *a, **kw)
        finally:
            per_save.append(hashed["bytes"] - before)

    monkeypatch.setattr(CheckpointStore, "prepare", prepare)
    run(ip, WATCHED_LOOP)

    store, nb = store_of(tmp_path)
    checkpoints = store.list(nb)
    running = [c for c in checkpoints if c.status == "running"]
    assert len(running) >= 4, [c.status for c in checkpoints]
    for ck in checkpoints:
        values = store.load(nb, ck.id).values
        expected = base.copy()
        for step in range(0, values["done"] + 1, 3):
            expected[(step % 16) * (1 << 19) + 7] = step
        assert np.array_equal(values["big"], expected), (ck.id, values["done"])
    if not tracker().active:
        pytest.skip(f"values checked; write tracking is not available here: {tracker().reason}")
    # The first save hashes all 64 MiB (and BLAKE3 of every new chunk), the second too
    # (the tracker starts watching then). From the third on, at most the two chunks one
    # edit can touch, fast-hashed and BLAKE3-hashed, plus the small pickles.
    assert len(per_save) >= len(running) + 1  # older ones may have been let go (--keep)
    assert all(n >= 64 << 20 for n in per_save[:2]), per_save
    assert all(n <= 4 * (4 << 20) + (1 << 20) for n in per_save[2:]), per_save
    # The cell is over: its pages are no longer watched (no fault per page written, no
    # huge page split to watch it).
    big = ip.user_ns["big"]
    lo = big.ctypes.data // 4096 * 4096
    assert tracker()._written(lo + 4096, lo + (1 << 20)) is None


def test_a_buffer_the_loop_rewrites_whole_is_not_watched_until_it_rests():
    """Watching costs a page fault per page written after each snapshot: a buffer whose
    chunks were mostly new again at the last save is hashed instead, until it rests."""
    from nbcheckpoint.capture.changes import ChunkWatch

    watch = ChunkWatch()
    size = 64 << 20
    watch.saw([(1 << 30, size, 16)])  # first seen: all of it new to the store
    assert len(watch.spans) == 16
    watch.saw([(1 << 30, size, 12)])  # rewritten since
    assert watch.spans == []
    watch.saw([(1 << 30, size, 1)])  # resting now
    assert len(watch.spans) == 16
    watch.saw([(1 << 30, 4 << 20, 1)])  # too small to watch
    assert watch.spans == []
