"""Run inside a kernel: print a JSON fingerprint of every user variable, one entry per name.

The test sends this file's source to the kernel as a *silent* execute request (no
``pre_run_cell``/``post_run_cell`` events, so auto mode does not see it) and runs it with
``exec`` in a fresh dict, so it leaves no name in the user namespace.

Two values get equal fingerprints when they are equal the way each type defines it:
arrays by dtype, shape and bytes (``np.array_equal``, NaN included), DataFrames by
columns, dtypes, index and a hash of every row (``DataFrame.equals``), containers and
notebook objects element by element, functions and classes by their code, imported
functions, classes and modules by their import path, anything else by its pickle or,
when it has none, its repr without addresses. It never changes what it looks at:
a generator is described, not advanced.

Example (inside a kernel)::

    exec(source_of_this_file, {"__name__": "__main__"})   # prints {"name": [...], ...}
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import pickle
import re
import sys
import types
from typing import Any

# IPython's own names: outputs (_, __, ___, _N), inputs (_i, _ii, _iii, _iN), histories,
# the exit helpers, and module dunders. A name like ``_scale`` is the user's and is kept.
IPYTHON_NAMES = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_[oid]h|In|Out|exit|quit|get_ipython|__\w+__")
# What nbcheckpoint itself puts in the namespace (its safe-point runtime).
RUNTIME_PREFIXES = ("_nbc_", "__nbc_")
MAX_DEPTH = 8


def user_variables(shell: Any) -> dict[str, Any]:
    """The user's variables: not IPython's, not nbcheckpoint's, not left as the kernel set them."""
    hidden = shell.user_ns_hidden
    out = {}
    for name, value in shell.user_ns.items():
        if IPYTHON_NAMES.fullmatch(name) or name.startswith(RUNTIME_PREFIXES):
            continue
        if name in hidden and hidden[name] is value:  # e.g. ipykernel's own ``open``
            continue
        out[name] = value
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def without_addresses(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x?", text)


def code_fp(code: types.CodeType) -> list[Any]:
    consts = [code_fp(c) if isinstance(c, types.CodeType) else fp(c) for c in code.co_consts]
    return [code.co_name, sha(code.co_code), consts, list(code.co_names), list(code.co_varnames)]


def fp(value: Any, depth: int = 0, path: frozenset[int] = frozenset()) -> Any:
    """A JSON-able description of ``value``: equal values get equal descriptions."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return [kind.__name__, value]
    if kind in (float, complex, bytes, bytearray):
        return [kind.__name__, repr(value)]
    if depth > MAX_DEPTH:
        return ["too deep", qualified(kind)]
    if isinstance(value, types.ModuleType):
        return ["module", value.__name__]
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if np is not None:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                return [
                    "ndarray",
                    str(value.dtype),
                    list(value.shape),
                    fp(value.tolist(), depth + 1),
                ]
            data = np.ascontiguousarray(value).tobytes()
            return ["ndarray", str(value.dtype), list(value.shape), sha(data)]
        if isinstance(value, np.generic):
            return ["numpy scalar", str(value.dtype), repr(value.item())]
        if isinstance(value, np.random.Generator):
            return ["numpy Generator", fp(value.bit_generator.state, depth + 1)]
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        return pandas_fp(pd, value, depth)
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
            return [
                "tensor",
                qualified(kind),
                str(value.dtype),
                list(value.shape),
                list(value.stride()),
                value.requires_grad,
                str(value.device),
                sha(data),
            ]
        if isinstance(value, torch.Generator):
            return ["torch Generator", sha(value.get_state().numpy().tobytes())]
        if isinstance(value, torch.optim.Optimizer):
            return ["optimizer", qualified(kind), fp(value.state_dict(), depth + 1, path)]
        if isinstance(value, torch.nn.Module):
            state = {k: fp(v, depth + 1, path) for k, v in value.state_dict().items()}
            return ["torch module", qualified(kind), value.training, state]
    if id(value) in path:
        return ["cycle", qualified(kind)]
    path = path | {id(value)}
    if isinstance(value, dict):
        items = [[fp(k, depth + 1, path), fp(v, depth + 1, path)] for k, v in value.items()]
        return [qualified(kind), items]
    if isinstance(value, (list, tuple)):
        return [qualified(kind), [fp(v, depth + 1, path) for v in value]]
    if isinstance(value, (set, frozenset)):
        return [qualified(kind), sorted(json.dumps(fp(v, depth + 1, path)) for v in value)]
    if isinstance(value, types.GeneratorType):
        frame_locals = inspect.getgeneratorlocals(value)
        return [
            "generator",
            value.__qualname__,
            inspect.getgeneratorstate(value),
            {k: fp(v, depth + 1, path) for k, v in sorted(frame_locals.items())},
        ]
    if isinstance(value, io.IOBase):
        return [
            "file",
            qualified(kind),
            str(getattr(value, "name", "")),
            getattr(value, "mode", None),
            value.closed,
        ]
    if isinstance(value, types.FunctionType):
        if value.__module__ != "__main__":
            return ["imported function", qualified(value)]
        cells = [c.cell_contents for c in value.__closure__ or ()]
        return [
            "function",
            value.__qualname__,
            code_fp(value.__code__),
            fp(value.__defaults__, depth + 1, path),
            fp(value.__kwdefaults__, depth + 1, path),
            fp(cells, depth + 1, path),
        ]
    if isinstance(value, types.MethodType):
        return ["method", value.__func__.__qualname__, fp(value.__self__, depth + 1, path)]
    if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return [
            "builtin",
            qualified(value),
            without_addresses(repr(getattr(value, "__self__", None))),
        ]
    if isinstance(value, type):
        if value.__module__ != "__main__":
            return ["imported class", qualified(value)]
        members = {
            k: fp(v, depth + 1, path)
            for k, v in sorted(vars(value).items())
            # __slotnames__ is a cache that pickling an instance adds to its class.
            if k not in ("__dict__", "__weakref__", "__module__", "__doc__", "__slotnames__")
        }
        return ["class", value.__qualname__, [qualified(b) for b in value.__bases__], members]
    if hasattr(value, "__dict__") and kind.__module__ == "__main__":
        return ["object", kind.__qualname__, fp(vars(value), depth + 1, path)]
    try:
        return ["pickle", qualified(kind), sha(pickle.dumps(value, protocol=5))]
    except Exception:
        return ["repr", qualified(kind), without_addresses(repr(value))]


def pandas_fp(pd: Any, value: Any, depth: int) -> list[Any]:
    if isinstance(value, pd.Index):
        return [
            "Index",
            qualified(type(value)),
            str(value.dtype),
            repr(value.name),
            values_fp(pd, value),
        ]
    if isinstance(value, pd.Series):
        return [
            "Series",
            str(value.dtype),
            repr(value.name),
            fp(value.index, depth + 1),
            values_fp(pd, value),
        ]
    return [
        "DataFrame",
        [repr(c) for c in value.columns],
        [str(t) for t in value.dtypes],
        fp(value.index, depth + 1),
        values_fp(pd, value),
    ]


def values_fp(pd: Any, value: Any) -> Any:
    try:
        hashed = pd.util.hash_pandas_object(value, index=False)
        return sha(hashed.to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): compare them one by one
        return fp(value.to_numpy().tolist(), 1)


IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset, range)
NOT_DATA = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.GeneratorType,
    io.IOBase,
)


def aliases(variables: dict[str, Any]) -> list[list[str]]:
    """Names bound to the same mutable object (``b = a``): a restore must keep them one object."""
    by_id: dict[int, list[str]] = {}
    for name, value in variables.items():
        if type(value) in IMMUTABLE or isinstance(value, NOT_DATA):
            continue
        by_id.setdefault(id(value), []).append(name)
    return sorted(sorted(names) for names in by_id.values() if len(names) > 1)


def shared_tensors(variables: dict[str, Any]) -> list[list[str]]:
    """Tensors that share memory (a view and its base, an optimizer's parameters and the
    module's): a restore must keep them sharing. Named ``variable:where``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    found: dict[int, set[str]] = {}

    def add(label: str, tensor: Any) -> None:
        if tensor.device.type == "cpu" and tensor.untyped_storage().nbytes():
            found.setdefault(tensor.untyped_storage().data_ptr(), set()).add(label)

    for name, value in variables.items():
        if isinstance(value, torch.Tensor):
            add(name, value)
        elif isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict(keep_vars=True).items():
                add(f"{name}:{key}", tensor)
        elif isinstance(value, torch.optim.Optimizer):
            for g, group in enumerate(value.param_groups):
                for i, param in enumerate(group["params"]):
                    add(f"{name}:params[{g}][{i}]", param)
    return sorted(sorted(labels) for labels in found.values() if len(labels) > 1)


def main() -> None:
    from IPython import get_ipython

    variables = user_variables(get_ipython())
    report = {name: fp(value) for name, value in sorted(variables.items())}
    sharing = aliases(variables) + shared_tensors(variables)
    print(json.dumps({"variables": report, "aliases": sharing}))


if __name__ == "__main__":  # as the test runs it: exec(source, {"__name__": "__main__"})
    main()
