"""PyTorch tensors: their bytes go to the store out of band, chunked and deduplicated.

PyTorch's own pickling puts a ``torch.save`` of each storage in the pickle; here only the
storage's bytes change hands, so a re-save writes the layers that changed and nothing else.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

import pytest

from nbcheckpoint.store import CheckpointStore, NotebookRef

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is installed for the tests on Python 3.11 on x86_64 only (a CPU build "
    "lies on this machine's disk for that Python; other Pythons would download a CUDA build)"
    if sys.version_info[:2] != (3, 11)
    else "PyTorch is not installed: `make test` installs it (pyproject.toml, test extra)",
)


def _model_and_optimizer() -> tuple[object, object]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1024)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 256)).sum().backward()
    opt.step()
    return model, opt


def test_a_model_and_its_optimizer_come_back_sharing_their_tensors(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    model, opt = _model_and_optimizer()
    flat = model[0].weight.data.view(-1)  # a view of a parameter, in another variable
    extras = {
        "half": torch.arange(6, dtype=torch.float16).reshape(2, 3).requires_grad_(),
        "brain": torch.ones(3, dtype=torch.bfloat16),
        "ids": torch.arange(10, dtype=torch.int64)[2:8:2],  # a strided view of a slice
        "empty": torch.empty(0, 4),
    }
    store.save({"model": model, "opt": opt, "flat": flat, **extras}, nb)
    back = CheckpointStore(store.url).load(nb).values

    m2, o2 = back["model"], back["opt"]
    for (name, a), (_, b) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), name
    params = list(m2.parameters())
    assert all(type(p) is torch.nn.Parameter and p.requires_grad for p in params)
    # The optimizer steps the restored model's own parameters, not copies of them.
    assert all(a is b for a, b in zip(o2.param_groups[0]["params"], params))
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(o2.state_dict()["state"][0][key], value), key
    # The view still shares memory with the weight it was taken from.
    back["flat"][0] = 123.0
    assert m2[0].weight.data[0, 0].item() == 123.0
    for name, value in extras.items():
        got = back[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert got.stride() == value.stride() and torch.equal(got, value), name
        assert got.requires_grad == value.requires_grad, name
    # Restored tensors are ordinary, writable memory: training goes on.
    model(torch.randn(8, 256)).sum().backward()
    m2(torch.randn(8, 256)).sum().backward()
    o2.step()


def test_tensor_bytes_are_chunked_and_a_resave_writes_only_the_changed_layer(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 2048), torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 512)
    )
    total = sum(p.nbytes for p in model.parameters())
    first = store.save({"model": model}, nb)
    # Out of band, not a torch.save copy inside the pickle.
    assert first.new_bytes >= total * 0.9
    payloads = [g for g in first.body["groups"] if "model" in g["names"]]
    assert len(payloads[0]["buffers"]) >= len(list(model.parameters()))
    with torch.no_grad():
        model[2].weight.add_(1.0)  # one layer: 4 MiB of 37 MiB
    layer = model[2].weight.nbytes
    second = CheckpointStore(store.url).save({"model": model}, nb)
    assert second.new_bytes <= layer * 1.2, (second.new_bytes, layer)
    back = store.load(nb).values["model"]
    assert torch.equal(back[2].weight, model[2].weight)
    assert torch.equal(back[1].weight, model[1].weight)


def test_a_tensor_saved_on_a_missing_device_comes_back_on_the_cpu_with_a_warning() -> None:
    from nbcheckpoint.store.serializer import _storage_from_buffer

    with pytest.warns(RuntimeWarning, match=r"saved on cuda:0 was restored on the CPU"):
        storage = _storage_from_buffer(bytearray(b"\x00\x00\x80\x3f"), "cuda:0")
    assert storage.device.type == "cpu"
    tensor = torch.empty(0).set_(storage)
    assert tensor.tolist() == [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _storage_from_buffer(memoryview(b"ab"), "cpu").nbytes() == 2  # read-only: copied


def test_the_scanner_watches_tensor_memory_instead_of_copying_it(monkeypatch) -> None:
    from nbcheckpoint.capture.changes import Scanner

    def copied(self: object) -> object:
        raise AssertionError("a scan copied a storage through torch.save")

    monkeypatch.setattr(torch.storage.TypedStorage, "__reduce__", copied)
    monkeypatch.setattr(torch.UntypedStorage, "__reduce__", copied)
    model, opt = _model_and_optimizer()
    small = torch.zeros(4)
    ns = {"model": model, "opt": opt, "small": small, "other": torch.ones(1 << 20)}
    names = list(ns)
    scanner = Scanner()
    first = scanner.scan(ns, names)
    # Large storages are spans of memory, watched or hashed where they lie.
    second = scanner.scan(ns, names)
    assert second.changed_since(first) == set()
    model(torch.randn(8, 256)).sum().backward()
    opt.step()  # in place: the parameters and Adam's moments
    third = scanner.scan(ns, names)
    assert third.changed_since(second) == {"model", "opt"}
    small[1] = 2.0
    fourth = scanner.scan(ns, names)
    assert fourth.changed_since(third) == {"small"}
    with torch.no_grad():
        ns["other"][-1] = 5.0
    assert scanner.scan(ns, names).changed_since(fourth) == {"other"}


def test_a_view_in_another_variable_is_pickled_with_its_base_and_others_apart() -> None:
    """Tensors share memory through storages the garbage collector does not list: the
    grouping walk links them by address. Tensors that share nothing (not even their class,
    which is pickled by reference) go in groups of their own."""
    from nbcheckpoint.store.serializer import deserialize, serialize

    layer = torch.nn.Linear(4, 8)
    ns = {"layer": layer, "cols": layer.weight.data[:, :2], "other": torch.ones(3)}
    snap = serialize(ns)
    assert sorted(sorted(g.names) for g in snap.groups) == [["cols", "layer"], ["other"]]
    back: dict[str, object] = {}
    for g in snap.groups:
        back.update(deserialize(g.payload, [bytearray(b) for b in g.buffers], g.pickler))
    back["cols"][0, 0] = 42.0
    assert back["layer"].weight[0, 0].item() == 42.0


class _CompiledLib:
    """What cffi puts in ``sys.modules`` for a compiled library (``_openssl.lib``, which
    cryptography loads): an object whose ``__dict__`` is a new dict at each access."""

    @property
    def __dict__(self) -> dict[str, object]:  # type: ignore[override]
        return {"OPENSSL_VERSION": 1}


@pytest.mark.parametrize(
    "entry", ["a library's namespace made on the fly", "a module imported again"]
)
def test_a_namespace_no_module_holds_anymore_does_not_split_a_model_from_its_optimizer(
    entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouping walk skips module namespaces by id, and their ids are cached while
    the number of modules stays the same. A namespace freed since (one made for a single
    access, or the old one of a module imported again) gives its memory, so its id, to the
    next new dict: the walk must enter that dict all the same. Skipped as a module's, it
    left the optimizer inside apart from the model, and the optimizer came back stepping
    copies of the model's parameters."""
    from nbcheckpoint.store import serializer
    from nbcheckpoint.store.serializer import deserialize, serialize

    model, opt = _model_and_optimizer()
    serialize({"model": model, "opt": opt})  # what a save imports is imported by now
    name = "_nbcheckpoint_test_entry"
    if entry == "a module imported again":
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        serializer._module_dict_ids()  # a save while the first import is loaded
        sys.modules[name] = types.ModuleType(name)  # as many modules: the first one is freed
    else:
        monkeypatch.setitem(sys.modules, name, _CompiledLib())
    ids = serializer._module_dict_ids()
    spare = []
    shelf: dict[str, object] = {}
    while id(shelf) not in ids and len(spare) < 10_000:  # CPython reuses a freed dict first
        spare.append(shelf)
        shelf = {}
    shelf["opt"] = opt
    snap = serialize({"model": model, "shelf": shelf})
    assert [sorted(g.names) for g in snap.groups] == [["model", "shelf"]]
    back: dict[str, Any] = {}
    for g in snap.groups:
        back.update(deserialize(g.payload, [bytearray(b) for b in g.buffers], g.pickler))
    params = list(back["model"].parameters())
    assert all(a is b for a, b in zip(back["shelf"]["opt"].param_groups[0]["params"], params))


def test_gradients_are_saved_with_their_tensors(store: CheckpointStore, nb: NotebookRef) -> None:
    """PyTorch's pickling drops ``.grad``; a loop that accumulates gradients over batches
    would resume with them gone. They are saved, and a change to them alone is seen."""
    from nbcheckpoint.capture.changes import Scanner

    model, opt = _model_and_optimizer()  # after one backward: every parameter has a grad
    loose = torch.ones(3, requires_grad=True)
    (loose * 2).sum().backward()
    store.save({"model": model, "opt": opt, "loose": loose}, nb)
    back = CheckpointStore(store.url).load(nb).values
    for (name, p), q in zip(model.named_parameters(), back["model"].parameters()):
        assert q.grad is not None and torch.equal(p.grad, q.grad), name
    assert back["opt"].param_groups[0]["params"][0] is next(back["model"].parameters())
    assert torch.equal(back["loose"].grad, torch.full((3,), 2.0))

    ns = {"model": model, "loose": loose}
    scanner = Scanner()
    first = scanner.scan(ns, list(ns))
    model(torch.randn(8, 256)).sum().backward()  # gradients accumulate; weights unchanged
    assert scanner.scan(ns, list(ns)).changed_since(first) == {"model"}


def test_pytorchs_global_generator_is_saved_and_put_back() -> None:
    from nbcheckpoint.store.serializer import capture_rng, restore_rng

    torch.manual_seed(5)
    torch.rand(3)
    saved = capture_rng()
    expected = torch.rand(4)
    torch.manual_seed(99)
    assert saved is not None and "torch" in restore_rng(saved)
    assert torch.equal(torch.rand(4), expected)


def test_comparing_checkpoints_shows_tensor_shapes_and_dtypes(
    store: CheckpointStore, nb: NotebookRef
) -> None:
    from nbcheckpoint.store.diff import diff_checkpoints

    a = store.save({"w": torch.zeros(3, 4), "b": torch.ones(2)}, nb)
    b = store.save({"w": torch.zeros(3, 5, dtype=torch.bfloat16), "b": torch.ones(2)}, nb)
    rows = {r.name: r for r in diff_checkpoints(store, nb, a.id, b.id).rows}
    assert rows["w"].notes == ("shape (3, 4) -> (3, 5)", "dtype float32 -> bfloat16")
    assert rows["b"].change == "same"
