"""Save code defined in a kernel-like ``__main__`` module, or restore it in a fresh interpreter.

Usage: ``main_code.py STORE NOTEBOOK save|load``; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import types

from nbcheckpoint.store import CheckpointStore, NotebookRef

CELL = """
import dataclasses
import enum
import functools

SCALE = 10

add_one = lambda x: x + 1

def make_multiplier(k):
    def multiply(x):
        return x * k + 1
    return multiply

times_two = make_multiplier(2)

class Model:
    def __init__(self, w):
        self.w = w
    def predict(self, x):
        return self.w * x + 1

class Derived(Model):
    def __repr__(self):
        return f"Derived({self.w})"

@dataclasses.dataclass
class Config:
    lr: float
    epochs: int

def scaled(x):
    return x * SCALE

def squares(n):
    for i in range(n):
        yield i * i

def shout(fn):
    @functools.wraps(fn)
    def wrapper(*a):
        return fn(*a) + 1
    return wrapper

@shout
def decorated(x):
    return x * 4

class Color(enum.Enum):
    RED = 1
    BLUE = 2
    CRIMSON = 1  # an alias
    def label(self):
        return self.name.lower()

class Planet(enum.Enum):
    EARTH = (5.97e24, 6.37e6)
    def __init__(self, mass, radius):
        self.mass = mass
        self.radius = radius

class Perm(enum.IntFlag):
    R = 4
    W = 2

model = Model(4.0)
derived = Derived(2)
config = Config(0.1, 3)
settings = {"color": Color.BLUE, "planet": Planet.EARTH, "perm": Perm.R | Perm.W}
"""


def main() -> None:
    store_dir, notebook, mode = sys.argv[1:4]
    store = CheckpointStore(store_dir)
    nb = NotebookRef.from_path(notebook)
    if mode == "save":
        # As IPython does: a real module object is registered as __main__ and cells run in it.
        user_module = types.ModuleType("__main__")
        sys.modules["__main__"] = user_module
        exec(compile(CELL, "<cell>", "exec"), user_module.__dict__)
        names = [n for n in user_module.__dict__ if not n.startswith("__")]
        ck = store.save(user_module.__dict__, nb, names=names)
        print(json.dumps({"skipped": ck.body["skipped"], "ids": ck.id}))
        return
    restored = store.load(nb)
    # Restore into this interpreter's __main__, as the extension restores into the user namespace.
    main_globals = sys.modules["__main__"].__dict__
    for name, module in restored.modules.items():
        main_globals[name] = __import__(module)
    main_globals.update(restored.values)
    v = restored.values
    print(
        json.dumps(
            {
                "failed": restored.failed,
                "lambda": v["add_one"](10),
                "closure": v["times_two"](10),
                "method": v["model"].predict(4),
                "class_identity": type(v["model"]) is v["Model"]
                and isinstance(v["derived"], v["Model"]),
                "global_lookup": v["scaled"](11),
                "subclass": repr(v["derived"]),
                "dataclass": _asdict(v["config"]),
                "generator_function": list(v["squares"](3)),
                "decorated": v["decorated"](2),
                "enums": [
                    v["settings"]["color"] is v["Color"].BLUE,
                    v["Color"].CRIMSON is v["Color"].RED,
                    v["Color"].BLUE.label(),
                    v["settings"]["planet"].mass,
                    type(v["settings"]["perm"]) is v["Perm"],
                    int(v["settings"]["perm"]),
                ],
            }
        )
    )


def _asdict(obj: object) -> dict[str, object]:
    import dataclasses

    return dataclasses.asdict(obj)  # type: ignore[call-overload]


if __name__ == "__main__":
    main()
