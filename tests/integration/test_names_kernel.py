"""Real kernels: `_`-prefixed variables, open files, unknown NAMEs, what a restore left out, the
help and refused settings (issue 17: a restore is never silently wrong)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nbcheckpoint.ipython.commands import PARSER, subparsers

from .conftest import StoreProbe
from .kernel import Kernel, wait_for
from .test_checkpoint_kernel import run_raw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

StartKernel = Callable[..., Kernel]

# NBC_TEST_DELAY=0 lets the resumed run finish at once.
SCALE_CELL = """\
%%checkpoint --every 0.3
import os, time
total = 0
for i in range(60):
    total += _scale * i
    _scale += 1
    time.sleep(float(os.environ.get("NBC_TEST_DELAY", "0.05")))
"""

FILE_CELL = """\
%%checkpoint --every 0.3
import os, time
with open("results.csv", "w") as f:
    f.write("a,b\\n1,2\\n")
rows = []
for i in range(200):
    rows.append(i)
    time.sleep(float(os.environ.get("NBC_TEST_DELAY", "0.05")))
"""

XY_CELL = """\
%%checkpoint x y --every 0.3
import os, time
for i in range(200):
    x += 1
    y += 2
    time.sleep(float(os.environ.get("NBC_TEST_DELAY", "0.05")))
"""


def kill_inside_the_loop(kernel: Kernel, store: StoreProbe, cell: str, at_least: int = 2) -> int:
    """Run ``cell``, SIGKILL the kernel once a checkpoint inside its loop has iteration
    ``at_least`` or later; returns that checkpoint's id."""
    kernel.submit(cell)

    def inside() -> bool:
        return any(
            c.status == "running"
            and (c.body.get("position") or {}).get("counters", [0])[0] >= at_least
            for c in store.list()
        )

    wait_for(inside, 60, "a checkpoint inside the loop")
    kernel.kill()
    latest = store.list()[-1]
    assert latest.status == "running"
    return latest.id


def test_underscore_variable_survives_a_kill_and_the_resume_uses_it(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    k1.run("_scale = 3").check()
    ident = kill_inside_the_loop(k1, store_probe, SCALE_CELL)
    ck = store_probe.list()[-1]
    assert "_scale" in ck.variables
    assert not {"_", "__", "_i", "_ii", "In", "Out", "_oh", "_dh"} & set(ck.variables)

    k2 = start_kernel(env={"NBC_TEST_DELAY": "0"})
    out = k2.run(SCALE_CELL).check().stdout
    assert f"Resuming from checkpoint #{ident}" in out
    assert k2.value("total") == sum((3 + i) * i for i in range(60))
    assert k2.value("_scale") == 63


def test_an_open_file_is_skipped_and_a_restore_leaves_it_byte_for_byte(
    start_kernel: StartKernel, store_probe: StoreProbe, notebook: Path
) -> None:
    k1 = start_kernel()
    kill_inside_the_loop(k1, store_probe, FILE_CELL)
    ck = store_probe.list()[-1]
    assert "f" in ck.body["skipped"] and "rows" in ck.variables
    reason = ck.body["skipped"]["f"]["reason"]
    assert reason.startswith("closed file 'results.csv': file handles are not saved"), reason
    results = notebook.parent / "results.csv"
    before = results.read_bytes()
    assert before == b"a,b\n1,2\n"

    k2 = start_kernel()
    out = k2.run("%checkpoint restore").check().stdout
    assert "not saved: f (_io.TextIOWrapper): closed file 'results.csv'" in out
    assert k2.value("'f' in globals()") is False
    assert k2.value("len(rows) > 0") is True
    assert results.read_bytes() == before


def test_unknown_names_are_warned_and_a_restore_lists_what_is_missing(
    start_kernel: StartKernel, store_probe: StoreProbe
) -> None:
    k1 = start_kernel()
    out = k1.run("%%checkpoint undefined_name --every 100\nz = 1").check().stdout
    assert "no variable named undefined_name" in out and "not saved" in out
    assert k1.value("z") == 1
    k1.run("model = {'w': [1, 2]}\nhistory = []\nx = 0\ny = 0").check()
    ident = kill_inside_the_loop(k1, store_probe, XY_CELL)
    assert set(store_probe.list()[-1].variables) == {"x", "y"}

    k2 = start_kernel()
    out = k2.run("%checkpoint restore").check().stdout
    assert f"Restored checkpoint #{ident}" in out and "2 variables (x, y)" in out
    # The first cell saved only its (unknown) NAME, so no checkpoint holds z; nor the loop's i.
    missing = "history, i, model, z"
    assert f"Not in checkpoint #{ident}: {missing} (that cell saved only x, y)." in out
    assert f"{missing}: in no checkpoint; run the cells that define them again." in out


def test_help_shows_every_form_and_a_bad_setting_is_refused(start_kernel: StartKernel) -> None:
    kernel = start_kernel()
    _, reply = run_raw(kernel, "%%checkpoint?")
    pages = [p["data"]["text/plain"] for p in reply["payload"] if p.get("source") == "page"]
    assert pages, reply
    shown = kernel.run("%checkpoint help").check().stdout
    for text in (pages[0], shown):
        for name, parser in subparsers(PARSER).items():
            assert (name if name.startswith("%%") else f"%checkpoint {name}") in text, name
            for action in parser._actions:
                for option in action.option_strings:
                    assert option in text, (name, option)

    kernel.run("%config Checkpoint.mode = 'inline'").check()
    out = kernel.run("%config Checkpoint.mode = 'bogus'").text
    assert "'bogus'" in out and "stays 'inline'" in out
    assert kernel.run("%config Checkpoint.mode").check().text.count("inline") >= 1
    reply = kernel.run("%%checkpoint --every 100\nanswer = 6 * 7\nanswer").check()
    assert reply.result == "42"
