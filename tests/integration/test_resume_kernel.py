"""Kill a real kernel at a random safe point of a ``%%checkpoint`` cell, resume it in a new one.

Each cell shape runs three ways: uninterrupted in a plain kernel without nbcheckpoint (the
reference), then with ``%%checkpoint`` in a kernel that is SIGKILLed part-way, then again in
a new kernel, where it resumes. The final state is hashed inside the kernel and must equal
the reference. Iterations are counted by ``tick()``, which appends a byte to a file: a
counter outside the captured state, so that a resume cannot restore it and the test can
prove that fewer iterations ran.

The kill point is random but measured in progress, not time: the kernel is killed once a
random number of iterations ran and at least one checkpoint exists, which keeps the test
independent of the machine's speed. Set ``NBCHECKPOINT_TEST_SEED`` to replay a failure.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import queue
import random
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbcheckpoint.capture.rewrite import instrument
from nbcheckpoint.store import Checkpoint, CheckpointStore

from .kernel import Kernel, Reply, wait_for

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("NBCHECKPOINT_TEST_SEED", random.randrange(1_000_000)))
# Seconds each iteration sleeps in the checkpointed runs; about 30 iterations make ~2.5 s.
DELAY = 0.08
MAGIC = "%%checkpoint --every 0.2"

SETUP = """\
import hashlib
import os
import pickle
import time

import numpy as np

DELAY = {delay!r}
TICKS = {ticks!r}


def tick(path=TICKS):
    with open(path, "ab") as fh:
        fh.write(b".")


def squares(n):
    for k in range(n):
        yield k * k


def state_hash(*values):
    # One digest per value, so that sharing between variables (an interned string in two
    # of them) does not change the bytes; sharing inside one value still counts.
    parts = b"".join(hashlib.sha256(pickle.dumps(v, protocol=4)).digest() for v in values)
    return hashlib.sha256(parts).hexdigest()


# Division by zero raises unless a cell says otherwise with np.errstate.
np.seterr(all="raise")
"""


@dataclass(frozen=True)
class Shape:
    """A cell to checkpoint, and the variables that make its final state."""

    name: str
    cell: str
    state: str

    @property
    def body(self) -> str:
        return textwrap.dedent(self.cell).strip() + "\n"

    def progressed(self, position: dict[str, Any]) -> bool:
        """Whether a recorded position lies after the first iteration of the cell's first loop,
        so that a resume from it must skip work (a snapshot taken before the loop need not)."""
        plan = instrument(ast.parse(self.body)).plan
        sp = plan.safepoints[position["sp"]]
        first_loop = min(loop.stmt for loop in plan.loops.values())
        return sp.stmt > first_loop or any(c > 0 for c in position["counters"])

    def checkpointed(self, magic: str = MAGIC) -> str:
        return f"{magic}\n{self.body}"


SHAPES = [
    Shape(
        "single_loop",
        """
        total = 0
        for i in range(30):
            tick()
            total += i * i
            time.sleep(DELAY)
        """,
        "total, i",
    ),
    Shape(
        "nested_with_statements_before_inner",
        """
        grid = []
        sums = []
        for i in range(6):
            start = len(grid)
            scale = 10 ** i
            time.sleep(DELAY)
            for j in range(5):
                tick()
                grid.append(scale * (j + 1))
                time.sleep(DELAY)
            sums.append(sum(grid[start:]))
        """,
        "grid, sums, i, j, start, scale",
    ),
    Shape(
        "while_loop",
        """
        n = 0
        acc = 1
        seen = []
        while n < 30:
            tick()
            n += 1
            acc = (acc * 31 + n) % 1_000_003
            seen.append(acc)
            time.sleep(DELAY)
        """,
        "n, acc, seen",
    ),
    Shape(
        "over_a_list",
        """
        words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] * 5
        lengths = []
        for word in words:
            tick()
            lengths.append(len(word) * len(lengths))
            time.sleep(DELAY)
        """,
        "words, lengths, word",
    ),
    Shape(
        "over_a_generator",
        """
        out = []
        for sq in squares(30):
            tick()
            out.append(sq + len(out))
            time.sleep(DELAY)
        """,
        "out, sq",
    ),
    Shape(
        "over_dict_items",
        """
        table = {f"k{i}": i * 3 for i in range(30)}
        doubled = {}
        for key, value in table.items():
            tick()
            doubled[key] = value * 2 + len(doubled)
            time.sleep(DELAY)
        """,
        "table, doubled, key, value",
    ),
    Shape(
        "enumerate",
        """
        values = [v * 0.5 for v in range(30)]
        weighted = []
        for idx, val in enumerate(values):
            tick()
            weighted.append(idx * val)
            time.sleep(DELAY)
        """,
        "values, weighted, idx, val",
    ),
    Shape(
        "zip",
        """
        xs = list(range(30))
        ys = [x * x for x in xs]
        pairs = []
        for x, y in zip(xs, ys):
            tick()
            pairs.append((x, y, x + y))
            time.sleep(DELAY)
        """,
        "xs, ys, pairs, x, y",
    ),
    Shape(
        "code_before_and_after",
        """
        base = 7
        time.sleep(DELAY * 3)
        series = [base]
        time.sleep(DELAY * 3)
        for step in range(20):
            tick()
            series.append(series[-1] * 3 % 101)
            time.sleep(DELAY)
        time.sleep(DELAY * 3)
        peak = max(series)
        time.sleep(DELAY * 3)
        summary = (peak, len(series), sum(series))
        """,
        "base, series, step, peak, summary",
    ),
    Shape(
        "numpy_random",
        """
        np.random.seed(12345)
        rng = np.random.default_rng(2024)
        weights = np.zeros(4)
        draws = []
        for epoch in range(30):
            tick()
            noise = np.random.rand(4)
            jitter = rng.normal(size=4)
            weights = weights + 0.1 * noise - 0.05 * jitter
            draws.append(float(noise.sum() + jitter.sum()))
            time.sleep(DELAY)
        """,
        "rng, weights, draws, noise, jitter, epoch, np.random.get_state()",
    ),
    Shape(
        "accumulating_list",
        """
        history = []
        batches = []
        for epoch in range(30):
            tick()
            batch = [epoch * k for k in range(3)]
            batches.append(batch)
            history.append(sum(history[-3:]) + epoch)
            time.sleep(DELAY)
        """,
        "history, batches, batch, epoch",
    ),
    Shape(
        "break_continue_else",
        """
        kept = []
        for i in range(40):
            tick()
            time.sleep(DELAY)
            if i % 3 == 0:
                continue
            kept.append(i)
            if i == 29:
                stop = i
                break
        else:
            stop = None
        finished = []
        for j in range(8):
            tick()
            time.sleep(DELAY)
            if j == 100:
                break
            finished.append(j)
        else:
            finished.append("else ran")
        """,
        "kept, i, stop, finished, j",
    ),
    Shape(
        "loop_inside_with",
        """
        log = []
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = []
            for i in range(30):
                tick()
                ratios.append(float(np.float64(i % 4) / np.float64(i % 3)))
                time.sleep(DELAY)
            log.append("inside")
        log.append("after")
        """,
        "log, ratios, i",
    ),
    Shape(
        "loop_inside_if",
        """
        mode = "train"
        losses = []
        if mode == "train":
            for epoch in range(30):
                tick()
                losses.append(1.0 / (epoch + 1))
                time.sleep(DELAY)
            status = "trained"
        elif mode == "eval":
            status = "evaluated"
        else:
            status = "idle"
        """,
        "mode, losses, epoch, status",
    ),
    Shape(
        "loop_inside_try",
        """
        results = []
        cleanup = []
        stopped_at = None
        try:
            for k in range(32):
                tick()
                if k == 28:
                    raise ValueError(k)
                results.append(k * 2)
                time.sleep(DELAY)
            results.append("not reached")
        except ValueError as e:
            stopped_at = e.args[0]
        else:
            results.append("no error")
        finally:
            cleanup.append("finally")
        """,
        "results, cleanup, stopped_at, k",
    ),
]


# -- helpers -------------------------------------------------------------------------------


@dataclass
class Reference:
    """The uninterrupted run: its final-state hash and how many iterations it took."""

    digest: str
    ticks: int


@dataclass
class Killed:
    """What a killed run left: ticks it did and the checkpoint a re-run should resume from."""

    ticks: int
    latest: Checkpoint
    stdout: str


class Lab:
    """Kernels for one notebook in a temp folder, its tick file and its checkpoint store."""

    def __init__(self, root: Path, name: str = "train") -> None:
        self.cwd = root / name
        self.cwd.mkdir(parents=True)
        self.notebook = str(self.cwd / f"{name}.ipynb")
        self.ticks = str(self.cwd / "ticks")
        Path(self.ticks).touch()
        self.store_url = str(self.cwd / ".nbcheckpoint")
        self.kernels: list[Kernel] = []

    def kernel(self, *, delay: float = DELAY, load_ext: bool = True) -> Kernel:
        env = {"NBCHECKPOINT_KEY_FILE": os.environ["NBCHECKPOINT_KEY_FILE"]}
        k = Kernel(self.notebook, str(self.cwd), env)
        self.kernels.append(k)
        k.start(load_ext=load_ext)
        k.run(SETUP.format(delay=delay, ticks=self.ticks)).check()
        return k

    def tick_count(self) -> int:
        return os.path.getsize(self.ticks)

    def checkpoints(self) -> list[Checkpoint]:
        # The only notebook in this folder's store, whatever key the kernel derived for it;
        # a fresh store object each time, so that nothing read earlier is cached.
        return CheckpointStore(self.store_url).list()

    def close(self) -> None:
        for k in self.kernels:
            k.shutdown()


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[Any]:
    made: list[Lab] = []

    def make(name: str = "train") -> Lab:
        lab = Lab(tmp_path, name)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.close()


def reference(lab: Lab, shape: Shape) -> Reference:
    """Run the plain cell (no magic, no extension, no sleeping) in a fresh kernel."""
    k = lab.kernel(delay=0.0, load_ext=False)
    try:
        k.run(shape.body).check()
        digest = k.value(f"state_hash({shape.state})")
    finally:
        k.shutdown()
    return Reference(digest, lab.tick_count())


class Watch:
    """The outputs of one request to a kernel that may be killed before it answers."""

    def __init__(self, k: Kernel, msg_id: str) -> None:
        self.k, self.msg_id = k, msg_id
        self.stdout = ""
        self.error: dict[str, Any] | None = None
        self.finished = False

    def poll(self) -> None:
        """Take what already arrived, without waiting."""
        while True:
            try:
                msg = self.k.kc.get_iopub_msg(timeout=0)
            except queue.Empty:
                return
            if msg.get("parent_header", {}).get("msg_id") != self.msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                self.stdout += content["text"]
            elif kind == "error":
                self.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                self.finished = True

    def describe(self) -> str:
        err = self.error or {}
        return f"stdout: {self.stdout!r}; error: {err.get('ename')}: {err.get('evalue')}"


def run_and_kill(
    lab: Lab,
    k: Kernel,
    shape: Shape,
    code: str,
    rnd: random.Random,
    total: int,
    span: tuple[float, float] = (0.15, 0.6),
    after: int = 0,
    cell_id: str | None = None,
) -> Killed:
    """Start ``code`` and SIGKILL the kernel once it ran a random share ``span`` of ``total``
    iterations and saved a checkpoint newer than ``after`` past the first iteration; return
    the newest checkpoint."""
    start = lab.tick_count()
    target = start + max(2, round(rnd.uniform(*span) * total))
    watch = Watch(k, submit(k, code, cell_id))

    def ready() -> bool:
        watch.poll()
        if watch.finished:
            raise AssertionError(
                f"the cell ended before the kill, after {lab.tick_count() - start} of {total} "
                f"iterations (target {target - start}); checkpoints: "
                f"{[(c.id, c.status, c.body.get('position')) for c in lab.checkpoints()]}; "
                + watch.describe()
            )
        if lab.tick_count() < target:
            return False
        cks = lab.checkpoints()
        return bool(cks) and cks[-1].id > after and shape.progressed(cks[-1].body["position"])

    wait_for(ready, 60, f"iteration {target - start} and a checkpoint after #{after}")
    k.kill()
    watch.poll()
    latest = lab.checkpoints()[-1]
    ticks = lab.tick_count() - start
    position = latest.body.get("position") or {}
    assert latest.status == "running", (latest.id, latest.status, ticks)
    assert position.get("resumable"), position
    return Killed(ticks, latest, watch.stdout)


def submit(k: Kernel, code: str, cell_id: str | None = None) -> str:
    """``Kernel.submit``, optionally with the cell id a notebook frontend sends."""
    if cell_id is None:
        return k.submit(code)
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = k.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
    k.kc.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


def run(k: Kernel, code: str, cell_id: str | None = None) -> Reply:
    return k.collect(submit(k, code, cell_id)).check()


def resume(lab: Lab, k: Kernel, shape: Shape, killed: Killed) -> tuple[Reply, int]:
    """Re-run the cell in ``k``; check that it said it resumed from the newest checkpoint."""
    before = lab.tick_count()
    reply = run(k, shape.checkpointed())
    said = re.search(
        rf"^Resuming from checkpoint #{killed.latest.id}: .+, \d+ variables restored "
        r"\(--no-resume starts over\)\.$",
        reply.stdout,
        re.MULTILINE,
    )
    assert said, reply.text
    return reply, lab.tick_count() - before


def context(seed_note: str, killed: Killed) -> str:
    position = killed.latest.body.get("position") or {}
    return (
        f"{seed_note}; killed after {killed.ticks} iterations, "
        f"latest #{killed.latest.id} at {position.get('description')}"
    )


# -- the matrix ----------------------------------------------------------------------------


# A real PyTorch training loop over a shuffling DataLoader: the loader's generator is put
# back to the loop's start before it is rebuilt, so the batches come in the same order.
TORCH = Shape(
    "torch_dataloader_shuffle",
    """
    import torch
    torch.manual_seed(0)
    X = torch.randn(240, 8)
    Y = (X.sum(1, keepdim=True) > 0).float()
    g = torch.Generator().manual_seed(7)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, Y), batch_size=8, shuffle=True, generator=g
    )
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for xb, yb in loader:
        tick()
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        time.sleep(DELAY)
    """,
    "[p.detach().numpy().tobytes() for p in model.parameters()], "
    "[s['momentum_buffer'].numpy().tobytes() for s in opt.state.values()], "
    "losses, xb.numpy().tobytes(), g.get_state().numpy().tobytes()",
)
# Gradients accumulated over 4 batches before each step: a resume between two steps needs
# the gradients so far, which PyTorch's own pickling drops.
TORCH_ACCUMULATE = Shape(
    "torch_gradient_accumulation",
    """
    import torch
    torch.manual_seed(1)
    X = torch.randn(240, 8)
    Y = X @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for step in range(30):
        tick()
        xb, yb = X[step * 8 : step * 8 + 8], Y[step * 8 : step * 8 + 8]
        (torch.nn.functional.mse_loss(model(xb), yb) / 4).backward()
        if step % 4 == 3:
            opt.step()
            opt.zero_grad()
        time.sleep(DELAY)
    """,
    "[p.detach().numpy().tobytes() for p in model.parameters()], "
    "[None if p.grad is None else p.grad.numpy().tobytes() for p in model.parameters()], "
    "[(k, v.numpy().tobytes()) for s in opt.state.values() for k, v in sorted(s.items())], "
    "step",
)
# Dropout draws from PyTorch's global generator: a resume must put it back too.
TORCH_DROPOUT = Shape(
    "torch_dropout_global_generator",
    """
    import torch
    torch.manual_seed(2)
    X = torch.randn(64, 8)
    Y = X.sum(1, keepdim=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    noise = []
    for step in range(30):
        tick()
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        opt.step()
        noise.append(torch.rand(1).item())
        time.sleep(DELAY)
    """,
    "[p.detach().numpy().tobytes() for p in model.parameters()], noise, step, "
    "torch.get_rng_state().numpy().tobytes()",
)
NO_TORCH = importlib.util.find_spec("torch") is None
MATRIX = [
    *[pytest.param(s, id=s.name) for s in SHAPES],
    *[
        pytest.param(
            shape,
            id=shape.name,
            marks=pytest.mark.skipif(
                NO_TORCH,
                reason="PyTorch is not installed here (the test extra installs it on Python "
                "3.11 on x86_64 only)",
            ),
        )
        for shape in [TORCH, TORCH_ACCUMULATE, TORCH_DROPOUT]
    ],
]


@pytest.mark.parametrize("shape", MATRIX)
def test_kill_at_random_safe_point_then_resume(labs: Any, shape: Shape) -> None:
    rnd = random.Random(f"{SEED}-{shape.name}")
    note = f"NBCHECKPOINT_TEST_SEED={SEED}"
    ref = reference(labs("reference"), shape)

    lab = labs()
    killed = run_and_kill(lab, lab.kernel(), shape, shape.checkpointed(), rnd, ref.ticks)
    where = context(note, killed)
    assert killed.ticks < ref.ticks, where

    k = lab.kernel()
    _, resumed_ticks = resume(lab, k, shape, killed)
    assert k.value(f"state_hash({shape.state})") == ref.digest, where
    # The resumed run redid at most what came after the checkpoint, never the whole cell.
    assert 0 < resumed_ticks < ref.ticks, (resumed_ticks, ref.ticks, where)
    assert killed.ticks + resumed_ticks >= ref.ticks, (killed.ticks, resumed_ticks, where)
    # The cell's last checkpoint may still be landing after its reply (seen under load).
    wait_for(lambda: lab.checkpoints()[-1].status == "complete", 60, "a complete checkpoint")


RESUME_TWICE = SHAPES[[s.name for s in SHAPES].index("numpy_random")]
NESTED = SHAPES[[s.name for s in SHAPES].index("nested_with_statements_before_inner")]


@pytest.mark.parametrize("shape", [RESUME_TWICE, NESTED], ids=lambda s: s.name)
def test_kill_during_resumed_run_resumes_again(labs: Any, shape: Shape) -> None:
    rnd = random.Random(f"{SEED}-twice-{shape.name}")
    note = f"NBCHECKPOINT_TEST_SEED={SEED}"
    ref = reference(labs("reference"), shape)

    lab = labs()
    first = run_and_kill(
        lab, lab.kernel(), shape, shape.checkpointed(), rnd, ref.ticks, (0.15, 0.4)
    )

    # The second kernel resumes, then dies too, after a checkpoint of its own.
    second = run_and_kill(
        lab, lab.kernel(), shape, shape.checkpointed(), rnd, ref.ticks, (0.1, 0.25), first.latest.id
    )
    where = f"{context(note, first)}; then {context(note, second)}"
    assert f"Resuming from checkpoint #{first.latest.id}:" in second.stdout, where

    k = lab.kernel()
    _, resumed_ticks = resume(lab, k, shape, second)
    assert k.value(f"state_hash({shape.state})") == ref.digest, where
    assert 0 < resumed_ticks < ref.ticks, (resumed_ticks, ref.ticks, where)
    assert first.ticks + second.ticks + resumed_ticks >= ref.ticks, where
    # Resuming twice never ran the cell from the top again.
    assert first.ticks + second.ticks + resumed_ticks < 2 * ref.ticks, where


def test_no_resume_and_edited_cell_start_over(labs: Any) -> None:
    shape = RESUME_TWICE
    rnd = random.Random(f"{SEED}-start-over")
    ref = reference(labs("reference"), shape)
    lab = labs()
    cell_id = "5f3a-training-cell"
    edited = shape.checkpointed() + "edited = True\n"

    def from_scratch(k: Kernel, code: str, cell_id: str | None) -> Reply:
        before = lab.tick_count()
        reply = run(k, code, cell_id)
        assert "Resuming" not in reply.text, reply.text
        assert lab.tick_count() - before == ref.ticks, reply.text
        assert k.value(f"state_hash({shape.state})") == ref.digest
        return reply

    # An edited cell starts over. Without a cell id there is nothing to say why.
    killed = run_and_kill(lab, lab.kernel(), shape, shape.checkpointed(), rnd, ref.ticks)
    k = lab.kernel()
    reply = from_scratch(k, edited, None)
    assert "changed since" not in reply.text, reply.text
    assert k.value("edited") is True

    # --no-resume: the same cell from the start, though a resumable checkpoint is there.
    killed = run_and_kill(
        lab, k, shape, shape.checkpointed(), rnd, ref.ticks, after=killed.latest.id, cell_id=cell_id
    )
    k = lab.kernel()
    from_scratch(k, shape.checkpointed(f"{MAGIC} --no-resume"), cell_id)

    # With the cell id a notebook sends, an edited cell says why it starts over.
    killed = run_and_kill(
        lab, k, shape, shape.checkpointed(), rnd, ref.ticks, after=killed.latest.id, cell_id=cell_id
    )
    k = lab.kernel()
    reply = from_scratch(k, edited, cell_id)
    assert f"this cell changed since checkpoint #{killed.latest.id}" in reply.stdout, reply.text
