"""Unpicklable variables after a SIGKILL: nbcheckpoint's ``restore --recompute`` against Kishu's
fallback recomputation, on the notebook of issue 15.

The notebook: a sqlite3 connection filled from a list, a generator built from that list
(one item already taken), a client object holding a socket and a lock, and an open log file
made by a cell that appends to it. Each tool's kernel runs the cells, the kernel is
SIGKILLed, a new kernel brings the state back (nbcheckpoint: ``%checkpoint restore
--recompute`` after the ``%checkpoint save`` taken before the kill; Kishu: ``checkout`` of
its last commit), and then the notebook's next cells run. The script reports, per tool and
round, the time of the restore, which variables came back working, whether the next cells
print what an uninterrupted run prints, and how often the log-appending cell ran again.
In each round both tools run, taking turns going first; the restore times are given as
medians with their ranges (min-max), with the range of the per-round ratios, and the load
average is printed at the start, after each round and at the end.

Usage::

    python benchmarks/recompute_vs_kishu.py --kishu-python /tmp/kishu-venv/bin/python [--rounds 5]

Kishu 0.3.4 is installed in its own virtual environment (it pins its own dependencies):
``python -m venv /tmp/kishu-venv && /tmp/kishu-venv/bin/pip install kishu==0.3.4 ipykernel``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import (  # a script beside this one
    isolated_env,
    kernel,
    kishu_available,
    load_average,
    median_range,
    ratio_range,
    source_version,
)

SETUP = [
    "import socket, sqlite3, threading",
    "data = [5, 3, 8, 1]",
    "conn = sqlite3.connect(':memory:')\n"
    "conn.execute('create table t (x)')\n"
    "conn.executemany('insert into t values (?)', [(v,) for v in data])",
    "gen = (v * 2 for v in sorted(data))\nnext(gen)",
    "class Client:\n"
    "    def __init__(self, base):\n"
    "        self.base = base\n"
    "        self.lock = threading.Lock()\n"
    "        self.sock = socket.socket()\n"
    "    def get(self, path):\n"
    "        return f'{self.base}/{path}'\n"
    "\n"
    "client = Client('https://api.example.invalid')",
    "log = open(log_path, 'a')\nlog.write('opened\\n')\nlog.flush()",
]
NEXT = [
    "print(conn.execute('select sum(x), count(*) from t').fetchone())",
    "print(list(gen))",
    "print(client.get('items'), client.lock.locked())",
]
SKIPPED = ("conn", "gen", "client", "log")
# Whether each variable works, asked without consuming the generator.
WORKS = (
    "{'conn': 'conn' in globals() and conn.execute('select count(*) from t').fetchone()[0] == 4,"
    " 'gen': 'gen' in globals() and type(gen).__name__ == 'generator',"
    " 'client': 'client' in globals() and client.get('x').endswith('/x'),"
    " 'log': 'log' in globals() and not log.closed}"
)


def notebook(folder: Path) -> Path:
    cells = [
        {"cell_type": "code", "id": f"c{i}", "source": code, "metadata": {}, "outputs": [],
         "execution_count": None}
        for i, code in enumerate([*SETUP, *NEXT])
    ]  # fmt: skip
    path = folder / "issue15.ipynb"
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def run_cell(k: Any, code: str, cell_id: str) -> Any:
    """As JupyterLab runs a cell: its id in the request's metadata."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}  # fmt: skip
    msg = k.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
    k.kc.shell_channel.send(msg)
    # KernelSession.run waits on its own message id: wait for this one the same way.
    while True:
        reply = k.kc.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    while True:
        out = k.kc.get_iopub_msg(timeout=30)
        if out["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if out["msg_type"] == "status" and out["content"]["execution_state"] == "idle":
            break
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {code[:60]!r}: {reply['content'].get('evalue')}")


def next_outputs(k: Any) -> list[str]:
    out = []
    for code in NEXT:
        reply = k.run(code)
        out.append(
            reply.stdout
            if reply.status == "ok"
            else f"error: {(reply.error or {}).get('ename')}: {(reply.error or {}).get('evalue')}"
        )
    return out


def reference(root: Path, python: str) -> list[str]:
    folder = root / "reference"
    folder.mkdir()
    with kernel(python, folder, isolated_env(root)) as k:
        k.run(f"log_path = {str(folder / 'made.log')!r}").check()
        for code in SETUP:
            k.run(code).check()
        return next_outputs(k)


def nbcheckpoint_round(root: Path, python: str, n: int) -> dict[str, Any]:
    folder = root / f"nbc-{n}"
    folder.mkdir()
    nb = notebook(folder)
    log = folder / "made.log"
    env = {**isolated_env(root), "JPY_SESSION_NAME": str(nb)}
    with kernel(python, folder, env) as k:
        k.run("%load_ext nbcheckpoint").check()
        k.run(f"log_path = {str(log)!r}").check()
        for i, code in enumerate(SETUP):
            run_cell(k, code, f"c{i}")
        k.run("%checkpoint save").check()
        k.kill()
    with kernel(python, folder, env) as k:
        k.run("%load_ext nbcheckpoint").check()
        reply = k.run("%checkpoint restore --recompute").check()
        works = k.value(WORKS)
        outputs = next_outputs(k)
    recomputed = [n for n in SKIPPED if f"recomputed: {n} (" in reply.stdout]
    return {
        "seconds": reply.seconds,
        "recomputed": recomputed,
        "works": works,
        "outputs": outputs,
        "log_runs": log.read_text().count("opened"),
        "shown_first": reply.stdout.find("Recomputing log") < reply.stdout.find("recomputed: log")
        and "log = open(log_path, 'a')" in reply.stdout,
    }


def kishu_round(root: Path, python: str, n: int) -> dict[str, Any]:
    folder = root / f"kishu-{n}"
    folder.mkdir()
    nb = notebook(folder)
    log = folder / "made.log"
    env = {
        **isolated_env(root),
        "TEST_NOTEBOOK_PATH": str(nb),  # Kishu's way to know its notebook without a server
        "ENV_KISHU_TEST_MODE": "1",
        "KISHU_PATH_ROOT": str(folder / "kishu-home"),
    }
    init = f"from kishu import init_kishu\ninit_kishu({str(nb)!r})"
    with kernel(python, folder, env) as k:
        k.run(init).check("init_kishu")
        k.run(f"log_path = {str(log)!r}").check()
        for code in SETUP:
            k.run(code).check()
        head = k.value("str(_kishu._kishu_graph.head())")
        k.kill()
    before = log.read_text().count("opened")
    with kernel(python, folder, env) as k:
        k.run(init).check("init_kishu")
        reply = k.run(f"_kishu.checkout({head!r})")
        error = None if reply.status == "ok" else (reply.error or {}).get("evalue")
        works = k.value(WORKS)
        outputs = next_outputs(k)
    return {
        "seconds": reply.seconds,
        "error": error,
        "works": works,
        "outputs": outputs,
        "log_runs": log.read_text().count("opened"),
        "log_runs_before": before,
    }


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kishu-python", help="an interpreter where kishu 0.3.4 is installed")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds (the tools take turns going first); medians and ranges",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    python = sys.executable
    say(f"recompute_vs_kishu: nbcheckpoint at {source_version()}, Python {sys.version.split()[0]}")
    say(f"load average at start: {load_average()} (a shared machine)")
    with tempfile.TemporaryDirectory(prefix="nbc-recompute-") as tmp:
        root = Path(tmp)
        expected = reference(root, python)
        say(f"uninterrupted run, next cells print: {expected}")
        kishu_version = kishu_available(args.kishu_python) if args.kishu_python else None
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for n in range(max(1, args.rounds)):
            order = ["nbcheckpoint", "kishu"] if n % 2 == 0 else ["kishu", "nbcheckpoint"]
            for tool in order:
                if tool == "nbcheckpoint":
                    ours.append(nbcheckpoint_round(root, python, n))
                elif kishu_version:
                    theirs.append(kishu_round(root, args.kishu_python, n))
            turns = " first, then ".join(order) if kishu_version else "nbcheckpoint only"
            say(
                f"  round {n + 1} ({turns}): nbcheckpoint {ours[-1]['seconds'] * 1000:.0f} ms"
                + (f", Kishu {theirs[-1]['seconds'] * 1000:.0f} ms" if theirs else "")
                + f"; load average {load_average()}"
            )
    say("")
    say("nbcheckpoint: %checkpoint restore --recompute after %checkpoint save and SIGKILL")
    for r in ours:
        say(
            f"  {r['seconds'] * 1000:.0f} ms; recomputed {r['recomputed']}; working {r['works']}; "
            f"next cells as uninterrupted: {r['outputs'] == expected}; log cell ran "
            f"{r['log_runs']}x in all; its recipe shown before it ran: {r['shown_first']}"
        )
    ours_s = [r["seconds"] for r in ours]
    say(f"  median (range) of {len(ours)} rounds: {median_range(ours_s, ms)}")
    if not theirs:
        say(f"Kishu: not installed for {args.kishu_python} (see --kishu-python)")
    else:
        say(f"Kishu {kishu_version}: checkout of the last commit after SIGKILL")
        for r in theirs:
            say(
                f"  {r['seconds'] * 1000:.0f} ms; error {r['error']}; working {r['works']}; "
                f"next cells as uninterrupted: {r['outputs'] == expected} ({r['outputs']}); "
                f"log cell ran {r['log_runs_before']}x before the checkout, "
                f"{r['log_runs']}x after it"
            )
        theirs_s = [r["seconds"] for r in theirs]
        say(f"  median (range) of {len(theirs)} rounds: {median_range(theirs_s, ms)}")
        say(
            f"Kishu / nbcheckpoint: {statistics.median(theirs_s) / statistics.median(ours_s):.1f}x "
            f"(medians); per round {ratio_range(theirs_s, ours_s)}"
        )
    say(f"load average at the end: {load_average()}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
