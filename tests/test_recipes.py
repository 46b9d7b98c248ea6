"""Recipes of unpicklable variables: extraction from cells, the manifest field, dependency order,
refusals, and ``%checkpoint restore [--recompute]`` in an in-process shell."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.capture import recipes as rc
from nbcheckpoint.capture.recipes import (
    RecipeBook,
    changed_step,
    notebook_cells,
    plan_recompute,
    reads_of,
    run_recipes,
    source_hash,
    statements,
)
from nbcheckpoint.errors import MalformedManifest, VerificationError
from nbcheckpoint.store import CheckpointStore, NotebookRef
from nbcheckpoint.store.manifest import FORMAT_MINOR, Recipe, RecipeStep, parse

H = "0" * 64


def _shape(source: str, transform: Any = None) -> list[tuple[str, list[str], list[str]]]:
    return [(s.code, sorted(s.binds), sorted(s.changes)) for s in statements(source, transform)]


# ------------------------------------------------------------ extraction
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1", [("x = 1", ["x"], [])]),
        ("a, (b, *c) = f()", [("a, (b, *c) = f()", ["a", "b", "c"], [])]),
        ("n += step", [("n += step", ["n"], [])]),
        ("n: int = 3\nm: int", [("n: int = 3", ["n"], []), ("m: int", ["m"], [])]),
        (
            "for i, row in enumerate(rows):\n    acc.append(row)",
            [("for i, row in enumerate(rows):\n    acc.append(row)", ["i", "row"], ["acc"])],
        ),
        (
            "with open(p) as fh, lock:\n    text = fh.read()",
            [("with open(p) as fh, lock:\n    text = fh.read()", ["fh", "text"], [])],
        ),
        ("import os.path, numpy as np", [("import os.path, numpy as np", ["np", "os"], [])]),
        ("from x import *", []),
        ("def f(a):\n    b = a\n    return b", [("def f(a):\n    b = a\n    return b", ["f"], [])]),
        ("class C(Base):\n    y = 1", [("class C(Base):\n    y = 1", ["C"], [])]),
        ("conn.execute('insert')", [("conn.execute('insert')", [], ["conn"])]),
        ("d['k'] = 1\ndel d2['k']", [("d['k'] = 1", [], ["d"]), ("del d2['k']", [], ["d2"])]),
        ("obj.attr.sub = 2", [("obj.attr.sub = 2", [], ["obj"])]),
        ("next(gen)", [("next(gen)", [], ["gen"])]),
        ("print(conn)\nlen(data)", []),
        ("squares = [k * k for k in ks]", [("squares = [k * k for k in ks]", ["squares"], [])]),
        ("if (m := f()) > 0:\n    pass", [("if (m := f()) > 0:\n    pass", ["m"], [])]),
        ("def broken(:\n", []),
    ],
)
def test_statements_of_many_cell_shapes(source: str, expected: list[Any]) -> None:
    assert _shape(source) == expected


def test_magics_are_read_as_the_code_they_run() -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    transform = TransformerManager().transform_cell
    cell = "%time conn = sqlite3.connect(path)\n%matplotlib inline\nfiles = !ls\nx = 1"
    python = transform(cell)
    assert _shape(python, transform) == [
        ("conn = sqlite3.connect(path)", ["conn"], ["sqlite3"]),
        ("files = get_ipython().getoutput('ls')", ["files"], []),
        ("x = 1", ["x"], []),
    ]
    body = "%%time\ngen = iter(data)\n%time next(gen)\n"
    assert _shape(transform(body), transform) == [
        ("gen = iter(data)", ["gen"], []),
        ("next(gen)", [], ["gen"]),
    ]
    # What the extension's input transformer makes of a %%checkpoint cell.
    marked = "__nbc_cell__('--every 1')\nfor i in range(3):\n    total += i\n"
    assert _shape(marked) == [("for i in range(3):\n    total += i", ["i", "total"], [])]
    # ``x = %time f()`` binds the magic's result: no recipe from it.
    assert _shape(transform("x = %time f()")) == []


@pytest.mark.parametrize(
    ("codes", "reads"),
    [
        (["gen = (x * k for x in data if x > lo)"], ["data", "k", "lo"]),
        (["gen = (x for x in data)", "next(gen)"], ["data"]),
        (["total += x"], ["total", "x"]),
        (["f = lambda a, b=dflt: a + b + glob"], ["dflt", "glob"]),
        (["def g(a):\n    t = a + scale\n    return t"], ["scale"]),
        (["def g():\n    global counter\n    counter = counter + 1"], ["counter"]),
        (["class C(Base):\n    y = z\n    w = y"], ["Base", "z"]),
        (["for i in range(n):\n    acc = i"], ["n"]),
        (["with connect(url) as c:\n    rows = c.fetch()"], ["connect", "url"]),
        (["import sqlite3", "conn = sqlite3.connect(p)"], ["p"]),
        (["d = {k: v for k, v in pairs}"], ["pairs"]),
        (["m = [[a for a in row] for row in grid]"], ["grid"]),
        (["print = log", "print(x)"], ["log", "x"]),
        (["not python ("], []),
    ],
)
def test_reads_in_evaluation_order(codes: list[str], reads: list[str]) -> None:
    assert reads_of(codes) == reads


# ------------------------------------------------------------ the book
def test_the_book_restarts_on_rebinding_and_appends_changes_across_cells() -> None:
    book = RecipeBook()
    book.record("conn = sqlite3.connect(path)", cell_id="a", execution_count=1)
    book.record("conn.execute('create table t (x)')\ncur = conn.cursor()", cell_id="b")
    r = book.recipe("conn")
    assert r is not None
    assert [s["code"] for s in r["steps"]] == [
        "conn = sqlite3.connect(path)",
        "conn.execute('create table t (x)')\ncur = conn.cursor()",
    ]
    assert [s["cell_id"] for s in r["steps"]] == ["a", "b"]
    assert r["steps"][1]["source_hash"] == source_hash(
        "conn.execute('create table t (x)')\ncur = conn.cursor()"
    )
    assert r["reads"] == ["path", "sqlite3"]
    cur = book.recipe("cur")
    assert cur is not None and cur["reads"] == ["conn"]
    book.record("conn = other()", cell_id="c")
    assert [s["code"] for s in book["conn"]["steps"]] == ["conn = other()"]
    # A change to a variable no cell made here gives no recipe.
    book.record("stranger.append(1)")
    assert "stranger" not in book
    book.forget(["conn"])
    assert book.recipe("conn") is None
    # Names that are not the user's are left out.
    book.record("_i3 = 1\nkept = 2", names=lambda n: not n.startswith("_i"))
    assert "_i3" not in book and "kept" in book


def test_a_variable_changed_by_too_many_cells_keeps_no_recipe() -> None:
    book = RecipeBook()
    book.record("log = open_log()")
    for i in range(rc.MAX_STEPS):
        book.record(f"log.write({i})")
    r = book["log"]
    assert r["steps"] == [] and "more than" in r["note"]


# ------------------------------------------------------------ order and refusals
def _recipe(code: str, *reads: str, cell_id: str | None = None, count: int | None = None) -> Recipe:
    return Recipe((RecipeStep(source_hash(code), code, cell_id, count),), tuple(reads))


def test_dependencies_run_first() -> None:
    recipes = {
        "cur": _recipe("cur = conn.cursor()", "conn"),
        "conn": _recipe("conn = connect(path)", "connect", "path"),
        "rows": _recipe("rows = iter(cur)", "cur"),
    }
    plan = plan_recompute(["rows", "cur", "conn"], recipes, lambda n: n in {"connect", "path"})
    assert plan.order == ["conn", "cur", "rows"] and plan.refused == {}


def test_a_cycle_is_reported_not_guessed() -> None:
    recipes = {"a": _recipe("a = f(b)", "b", "f"), "b": _recipe("b = g(a)", "a", "g")}
    plan = plan_recompute(["a", "b"], recipes, lambda n: n in {"f", "g"})
    assert plan.order == []
    assert "depends on itself (a -> b -> a)" in plan.refused["a"]
    assert "depends on itself" in plan.refused["b"]
    own = plan_recompute(["n"], {"n": _recipe("n += 1", "n")}, lambda n: False)
    assert own.refused == {"n": "its recipe needs its own earlier value"}


def test_a_missing_dependency_is_reported() -> None:
    recipes = {
        "conn": _recipe("conn = connect(path)", "connect", "path"),
        "cur": _recipe("cur = conn.cursor()", "conn"),
        "lone": Recipe((), (), "changed by more than 16 cells: no recipe kept"),
    }
    plan = plan_recompute(["cur", "lone", "ghost"], recipes, lambda n: n == "connect")
    assert plan.order == []
    assert plan.refused == {
        "conn": "needs path: not in the checkpoint nor the notebook",
        "cur": "needs conn, which needs path: not in the checkpoint nor the notebook",
        "lone": "changed by more than 16 cells: no recipe kept",
        "ghost": "no recipe was recorded",
    }


def test_a_changed_cell_is_refused(tmp_path: Path) -> None:
    code = "conn = sqlite3.connect(path)"
    by_id = _recipe(code, "path", cell_id="c1", count=3)
    by_count = _recipe(code, "path", count=3)
    path = tmp_path / "nb.ipynb"

    def write(source: Any, ident: str = "c1") -> dict[str, str] | None:
        cells = [
            {"cell_type": "markdown", "id": "m", "source": code},
            {"cell_type": "code", "id": ident, "source": source},
        ]
        path.write_text(json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5}))
        return notebook_cells(str(path))

    same = write(["conn = sqlite3", ".connect(path)"])
    assert changed_step(by_id, same) is None and changed_step(by_count, same) is None
    edited = write("conn = sqlite3.connect(other)")
    assert changed_step(by_id, edited) == (
        "cell [3] changed since the checkpoint (saved notebook); run that cell again instead"
    )
    assert changed_step(by_count, edited) is not None
    gone = write(code, ident="c2")
    assert "not in the saved notebook; save it" in str(changed_step(by_id, gone))
    assert changed_step(by_count, gone) is None  # no id: any cell with that text will do
    assert changed_step(by_id, None) is None  # no notebook file: nothing to compare with
    refused = plan_recompute(
        ["conn"], {"conn": by_id}, lambda n: True, refuse=lambda n, r: changed_step(r, edited)
    )
    assert refused.order == [] and "changed since" in refused.refused["conn"]
    for junk in (b"\xff\xfe", b"[1, 2]", b'{"cells": 3}', b"{" * 100_000):
        path.write_bytes(junk)
        assert notebook_cells(str(path)) is None
    assert notebook_cells(str(tmp_path / "missing.ipynb")) is None


def test_recipes_run_in_a_copy_and_only_their_variables_come_back() -> None:
    ns: dict[str, Any] = {"data": [1, 2, 3], "i": "restored", "sqlite3": sqlite3}
    recipes = {
        "gen": _recipe("for i in range(2):\n    pass\ngen = (x * 2 for x in data)", "data"),
        "conn": _recipe("conn = sqlite3.connect(':memory:')", "sqlite3"),
        "twin": _recipe("a, twin = iter(data), iter(data)", "data"),
        "a": _recipe("a, twin = iter(data), iter(data)", "data"),
        "bad": _recipe("bad = 1 / 0"),
        "after": _recipe("after = bad + 1", "bad"),
    }
    shown: list[str] = []
    outcomes = run_recipes(
        ["gen", "conn", "a", "twin", "bad", "after"],
        recipes,
        ns,
        before=lambda name, recipe: shown.append(name),
    )
    result = {o.name: (o.ok, o.detail) for o in outcomes}
    assert result == {
        "gen": (True, "generator"),
        "conn": (True, "Connection"),
        "a": (True, "list_iterator"),
        "twin": (True, "list_iterator"),
        "bad": (False, "ZeroDivisionError: division by zero"),
        "after": (False, "not run: bad failed"),
    }
    assert shown == ["gen", "conn", "a", "bad"]  # twin came with a; after never ran
    assert list(ns["gen"]) == [2, 4, 6]
    assert ns["i"] == "restored"  # the recipe's loop variable was put back
    assert "bad" not in ns and "after" not in ns


def test_what_a_recipe_defines_looks_up_the_notebooks_globals() -> None:
    ns: dict[str, Any] = {"data": [1, 2], "k": 10}
    recipes = {
        "gen": _recipe("gen = (x * k for x in data)", "data", "k"),
        "scale": _recipe("k = 3\nscale = lambda x: x * k", "k"),
    }
    outcomes = run_recipes(["gen", "scale"], recipes, ns)
    assert [o.ok for o in outcomes] == [True, True]
    assert ns["k"] == 10  # the recipe's own k = 3 was put back
    ns["k"] = 100
    assert list(ns["gen"]) == [100, 200]  # the generator reads the notebook's k, as before
    assert ns["scale"](2) == 200
    ns.pop("scale")
    untouched = run_recipes(["scale"], {"scale": _recipe("pass")}, ns)
    assert [(o.ok, o.detail) for o in untouched] == [(False, "its statements did not assign it")]


# ------------------------------------------------------------ the manifest field
def _saved(tmp_path: Path) -> tuple[CheckpointStore, NotebookRef, Any]:
    store = CheckpointStore(str(tmp_path / "store"))
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    book = RecipeBook()
    book.record("gen = (x for x in data)\nnext(gen)", cell_id="c1", execution_count=2)
    book.record("data = [1, 2]", cell_id="c0", execution_count=1)
    data = [1, 2]
    ck = store.save({"data": data, "gen": (x for x in data)}, nb, recipes=book)
    return store, nb, ck


def test_the_recipe_is_part_of_the_signed_manifest(tmp_path: Path) -> None:
    store, nb, ck = _saved(tmp_path)
    m = store.read_checkpoint(nb, ck.id, use_cache=False).manifest
    assert m is not None and m.format_minor == FORMAT_MINOR >= 1
    assert set(m.recipes) == {"gen"}  # data was saved: no recipe recorded for it
    (step,) = m.recipes["gen"].steps
    assert (step.cell_id, step.execution_count, step.code) == (
        "c1",
        2,
        "gen = (x for x in data)\nnext(gen)",
    )
    assert m.recipes["gen"].reads == ("data",)
    # Signed with the rest: a recipe edited in the store is refused with its checkpoint.
    path = f"notebooks/{nb.key}/manifests/{ck.id:08d}.ckpt"
    data = store.backend.read(path)
    assert b"gen = (x for x in data)" in data
    store.backend.replace(
        path, data.replace(b"gen = (x for x in data)", b"gen = (x for x in evil)")
    )
    with pytest.raises(VerificationError, match="signature does not match"):
        store.read_checkpoint(nb, ck.id, use_cache=False)


def test_a_recipe_holding_a_credential_keeps_no_statements(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    book = RecipeBook()
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    book.record(f"client = make_client(token='{token}')")
    ck = store.save({"client": (i for i in ())}, nb, recipes=book)
    assert ck.manifest is not None
    recipe = ck.manifest.recipes["client"]
    assert recipe.steps == () and recipe.note == "its statements hold a credential"
    assert token not in json.dumps(
        store.backend.read(f"notebooks/{nb.key}/manifests/00000001.ckpt").decode()
    )


def _body(tmp_path: Path) -> tuple[dict[str, Any], NotebookRef]:
    store, nb, ck = _saved(tmp_path)
    data = store.backend.read(f"notebooks/{nb.key}/manifests/{ck.id:08d}.ckpt")
    return json.loads(data.split(b"\n", 2)[2]), nb


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: r.update(gen=[1]), "recipes['gen'] must be an object"),
        (lambda r: r["gen"].pop("steps"), "recipes['gen'].steps is missing"),
        (lambda r: r["gen"].update(steps={}), "recipes['gen'].steps must be a list"),
        (lambda r: r["gen"]["steps"][0].update(code=3), "steps[0].code must be text"),
        (lambda r: r["gen"]["steps"][0].update(source_hash="zz"), "is not a sha256"),
        (lambda r: r["gen"]["steps"][0].update(execution_count=-1), "out of range"),
        (lambda r: r["gen"]["steps"][0].update(cell_id=[]), "cell_id must be text"),
        (lambda r: r["gen"].update(reads=["os.system('x')"]), "is not a variable name"),
        (lambda r: r["gen"].update(note=1), "note must be text"),
        (lambda r: r.update(data=r["gen"]), "recipes['data'] is not a skipped variable"),
    ],
)
def test_a_malformed_recipe_is_one_bad_checkpoint(tmp_path: Path, change: Any, says: str) -> None:
    body, nb = _body(tmp_path)
    bad = copy.deepcopy(body)
    change(bad["recipes"])
    with pytest.raises(MalformedManifest, match=None) as caught:
        parse(bad, key=nb.key, ident=1)
    assert says in str(caught.value)
    body["recipes"] = "not an object"
    with pytest.raises(MalformedManifest, match="recipes must be an object"):
        parse(body, key=nb.key, ident=1)


def test_a_store_with_a_malformed_recipe_lists_it_and_restore_passes_over_it(
    tmp_path: Path,
) -> None:
    store, nb, ck = _saved(tmp_path)
    good = store.save({"data": [1, 2]}, nb)
    data = store.backend.read(f"notebooks/{nb.key}/manifests/{ck.id:08d}.ckpt")
    body = json.loads(data.split(b"\n", 2)[2])
    body["id"] = good.id
    body["recipes"]["gen"]["steps"] = "x = 1"
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    header = {
        "alg": "hmac-sha256",
        "key_id": store.key.key_id,
        "len": len(raw),
        "sig": store.key.sign(raw),
    }
    data = (
        b"NBCKPT1\n"
        + json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        + b"\n"
        + raw
    )
    store.backend.replace(f"notebooks/{nb.key}/manifests/{good.id:08d}.ckpt", data)
    listed = {c.id: c for c in store.list(nb)}
    bad = listed[good.id]
    assert (bad.verified, bad.manifest, bad.status) == (False, None, "damaged")
    assert "recipes['gen'].steps must be a list" in str(bad.problem)
    restored = store.load(nb)
    assert restored.checkpoint.id == ck.id and good.id in restored.passed_over


def test_a_minor_0_body_ignores_recipes(tmp_path: Path) -> None:
    body, nb = _body(tmp_path)
    body["format_minor"] = 0
    body["recipes"]["gen"] = "anything: minor 0 readers never looked"
    assert parse(body, key=nb.key, ident=1).recipes == {}


# ------------------------------------------------------------ the magic, in-process
def _write_notebook(path: Path, cells: dict[str, str]) -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "id": k, "source": v, "metadata": {}, "outputs": [],
             "execution_count": None}
            for k, v in cells.items()
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))


CELLS = {
    "c-data": "data = [3, 1, 2]",
    "c-gen": "gen = (x * 10 for x in sorted(data))\nnext(gen)",
    "c-conn": "import sqlite3\nconn = sqlite3.connect(':memory:')\nconn.execute('create table t (x)')",
    "c-insert": "conn.executemany('insert into t values (?)', [(v,) for v in data])",
}


def _run(ip: Any, cell_id: str, source: str) -> None:
    ip.run_cell(source, store_history=True, cell_id=cell_id).raise_error()


def test_restore_lists_recipes_and_recompute_runs_them(
    ip: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_notebook(tmp_path / "nb.ipynb", CELLS)
    for ident, source in CELLS.items():
        _run(ip, ident, source)
    ip.run_line_magic("checkpoint", "save")
    for name in ("data", "gen", "conn", "sqlite3"):
        ip.user_ns.pop(name)
    capsys.readouterr()
    ip.run_line_magic("checkpoint", "restore")
    out = capsys.readouterr().out
    assert "not saved: conn (sqlite3.Connection)" in out
    assert "not saved: gen (generator)" in out
    assert "gen = (x * 10 for x in sorted(data))" in out
    assert "conn.executemany('insert into t values (?)'" in out
    assert "--recompute" in out
    assert "gen" not in ip.user_ns and "conn" not in ip.user_ns  # nothing ran unasked
    ip.run_line_magic("checkpoint", "restore --recompute")
    out = capsys.readouterr().out
    assert re.search(r"Recomputing conn: from cell \[\d+\], cell \[\d+\], reads data, sqlite3", out)
    assert "recomputed: conn (Connection)" in out and "recomputed: gen (generator)" in out
    assert next(ip.user_ns["gen"]) == 20  # the recorded next(gen) ran again
    assert ip.user_ns["conn"].execute("select sum(x) from t").fetchone() == (6,)


def test_recompute_refuses_a_changed_cell(
    ip: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_notebook(tmp_path / "nb.ipynb", CELLS)
    for ident, source in CELLS.items():
        _run(ip, ident, source)
    ip.run_line_magic("checkpoint", "save")
    _write_notebook(tmp_path / "nb.ipynb", {**CELLS, "c-gen": "gen = iter(data)"})
    ip.user_ns.pop("gen")
    ip.user_ns.pop("conn")
    capsys.readouterr()
    ip.run_line_magic("checkpoint", "restore --recompute gen conn")
    out = capsys.readouterr().out
    assert re.search(r"not recomputed: gen: cell \[\d+\] changed since the checkpoint", out)
    assert "recomputed: conn (Connection)" in out
    assert "gen" not in ip.user_ns


def test_the_panel_recompute_button_shows_the_recipes_and_runs_them_only_on_yes(
    ip: Any, tmp_path: Path
) -> None:
    from nbcheckpoint.widgets import CheckpointPanel

    _write_notebook(tmp_path / "nb.ipynb", CELLS)
    for ident, source in CELLS.items():
        _run(ip, ident, source)
    ip.run_line_magic("checkpoint", "save data")  # nothing skipped: nothing to recompute
    ip.run_line_magic("checkpoint", "save")
    magics = ip.magics_manager.registry["Checkpoint"]
    panel = CheckpointPanel.from_magics(magics)
    try:
        panel.select(1)
        assert panel.recompute_button.disabled
        panel.select(2)
        assert not panel.recompute_button.disabled
        ip.user_ns.pop("gen")
        panel.recompute_button.click()
        question = panel.question or ""
        assert "side effects" in question and "gen = (x * 10 for x in sorted(data))" in question
        assert "gen" not in ip.user_ns  # asked, not run
        panel.confirm_no.click()
        assert "gen" not in ip.user_ns
        panel.recompute_button.click()
        panel.confirm_yes.click()
        assert "recomputed: gen (generator)" in panel.last_message
        assert next(ip.user_ns["gen"]) == 20
    finally:
        panel.close()


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(rc)
    assert result.attempted > 5 and result.failed == 0


def _newest_manifest(tmp_path: Path) -> Any:
    store = CheckpointStore(str(tmp_path / "store"))
    nb = NotebookRef.from_path(str(tmp_path / "nb.ipynb"))
    ck = store.list(nb)[-1]
    return store.read_checkpoint(nb, ck.id, use_cache=False).manifest


def test_checkpoint_cells_and_auto_mode_record_recipes_too(ip: Any, tmp_path: Path) -> None:
    _run(ip, "c-data", "data = [3, 1, 2]")
    _run(
        ip,
        "c-loop",
        "%%checkpoint --every 100\nrows = (d for d in data)\nfor i in range(2):\n    first = next(rows)",
    )
    m = _newest_manifest(tmp_path)
    assert m.recipes["rows"].steps[0].code == (
        "rows = (d for d in data)\nfor i in range(2):\n    first = next(rows)"
    )
    assert m.recipes["rows"].steps[0].cell_id == "c-loop"
    ip.run_line_magic("checkpoint", "auto on --min-duration 0")
    magics = ip.magics_manager.registry["Checkpoint"]
    magics._auto_collect(wait=True)
    _run(ip, "c-auto", "%time squares = (d * d for d in data)")
    magics._auto_collect(wait=True)
    ip.run_line_magic("checkpoint", "auto off")
    m = _newest_manifest(tmp_path)
    assert m.status == "auto"
    assert m.recipes["squares"].steps[0].code == "squares = (d * d for d in data)"
    assert m.recipes["squares"].reads == ("data",)


def test_cells_run_before_the_extension_was_loaded_have_recipes(ip: Any, tmp_path: Path) -> None:
    ip.run_line_magic("unload_ext", "nbcheckpoint")
    ip.run_cell("early = (n for n in range(3))", store_history=True).raise_error()
    ip.run_line_magic("load_ext", "nbcheckpoint")
    ip.run_line_magic("checkpoint", "save")
    m = _newest_manifest(tmp_path)
    (step,) = m.recipes["early"].steps
    assert step.code == "early = (n for n in range(3))" and step.cell_id is None
    assert step.execution_count is not None


def test_show_lists_the_recipes(
    ip: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(ip, "c-data", "data = [3, 1, 2]")
    _run(ip, "c-gen", "gen = (x for x in data)")
    ip.run_line_magic("checkpoint", "save")
    ident = _newest_manifest(tmp_path).id
    capsys.readouterr()
    ip.run_line_magic("checkpoint", f"show {ident}")
    out = capsys.readouterr().out
    assert re.search(r"skipped: gen \(generator\).*\n    gen: from cell \[\d+\], reads data\n", out)
    assert "        gen = (x for x in data)" in out
