"""Variables a checkpoint cannot pickle, recomputed from their cells after SIGKILL, in real kernels.

The notebook of issue 15: a sqlite3 connection filled from a list, a generator built from
a restored list, a client object holding a socket and a lock (what a ``requests.Session``
with an open connection is like), and an open log file made by a cell that appends to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from .kernel import Kernel, Reply

SETUP = {
    "c-imports": "import socket, sqlite3, threading",
    "c-data": "data = [5, 3, 8, 1]",
    "c-conn": (
        "conn = sqlite3.connect(':memory:')\n"
        "conn.execute('create table t (x)')\n"
        "conn.executemany('insert into t values (?)', [(v,) for v in data])"
    ),
    "c-gen": "gen = (v * 2 for v in sorted(data))\nnext(gen)",
    "c-client": (
        "class Client:\n"
        "    def __init__(self, base):\n"
        "        self.base = base\n"
        "        self.lock = threading.Lock()\n"
        "        self.sock = socket.socket()\n"
        "    def get(self, path):\n"
        "        return f'{self.base}/{path}'\n"
        "\n"
        "client = Client('https://api.example.invalid')"
    ),
    "c-log": "log = open(log_path, 'a')\nlog.write('opened\\n')\nlog.flush()",
}
NEXT = {
    "n-conn": "print(conn.execute('select sum(x), count(*) from t').fetchone())",
    "n-gen": "print(list(gen))",
    "n-client": "print(client.get('items'), client.lock.locked())",
}


def _notebook(path: Path) -> None:
    cells = [
        {"cell_type": "code", "id": k, "source": v, "metadata": {}, "outputs": [],
         "execution_count": None}
        for k, v in {**SETUP, **NEXT}.items()
    ]  # fmt: skip
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )


def _cell(kernel: Kernel, cell_id: str, code: str) -> Reply:
    """Run ``code`` as JupyterLab runs a cell: with its id in the request's metadata."""
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = kernel.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
    kernel.kc.shell_channel.send(msg)
    return kernel.collect(msg["header"]["msg_id"]).check()


def _setup(kernel: Kernel, log_path: Path) -> None:
    kernel.run(f"log_path = {str(log_path)!r}").check()
    for cell_id, code in SETUP.items():
        _cell(kernel, cell_id, code)


def _next_outputs(kernel: Kernel) -> list[str]:
    return [_cell(kernel, cell_id, code).stdout for cell_id, code in NEXT.items()]


def test_recompute_after_sigkill_gives_the_outputs_of_an_uninterrupted_run(
    start_kernel: Callable[..., Kernel], notebook: Path, tmp_path: Path
) -> None:
    _notebook(notebook)
    log_path = tmp_path / "made.log"

    # Without a crash: what the next cells print.
    reference = start_kernel()
    _setup(reference, tmp_path / "reference.log")
    expected = _next_outputs(reference)
    assert expected == ["(17, 4)\n", "[6, 10, 16]\n", "https://api.example.invalid/items False\n"]
    reference.shutdown()

    first = start_kernel()
    _setup(first, log_path)
    saved = first.run("%checkpoint save").check().stdout
    for name in ("conn", "gen", "client", "log"):
        assert re.search(rf"skipped: {name} \(", saved), saved
    first.submit("import time; time.sleep(60)")  # busy, as a long cell would be
    first.kill()
    assert log_path.read_text() == "opened\n"

    second = start_kernel()
    out = second.run("%checkpoint restore").check().stdout
    # Listed with their recipes, nothing run.
    assert "not saved: conn (sqlite3.Connection)" in out
    assert "log: from cell [" in out and "log.write('opened\\n')" in out
    assert "--recompute" in out
    assert second.value("[n in globals() for n in ('conn', 'gen', 'client', 'log')]") == [False] * 4
    assert log_path.read_text() == "opened\n"

    out = second.run("%checkpoint restore --recompute").check().stdout
    for name, kind in (
        ("conn", "Connection"),
        ("gen", "generator"),
        ("client", "Client"),
        ("log", "TextIOWrapper"),
    ):
        assert f"recomputed: {name} ({kind})" in out, out
    # The side-effecting recipe was shown, code and all, before it ran.
    shown = out.index("Recomputing log: from cell [")
    assert out.index("log = open(log_path, 'a')", shown) < out.index("recomputed: log")
    assert log_path.read_text() == "opened\nopened\n"
    assert _next_outputs(second) == expected


def test_recompute_refuses_a_cell_edited_since(
    start_kernel: Callable[..., Kernel], notebook: Path, tmp_path: Path
) -> None:
    _notebook(notebook)
    first = start_kernel()
    _setup(first, tmp_path / "made.log")
    first.run("%checkpoint save").check()
    first.kill()
    edited = json.loads(notebook.read_text())
    for cell in edited["cells"]:
        if cell["id"] == "c-gen":
            cell["source"] = "gen = iter(data)"
    notebook.write_text(json.dumps(edited))

    second = start_kernel()
    out = second.run("%checkpoint restore --recompute").check().stdout
    assert re.search(r"not recomputed: gen: cell \[\d+\] changed since the checkpoint", out), out
    assert "recomputed: conn (Connection)" in out
    assert second.value("'gen' in globals()") is False
