"""What produced a piece of stored state: one fingerprint for everything the pipeline reuses.

    fingerprint("alexnet.preprocess", {"image_size": 227, "resize": "squash"})  # sha256 hex

Five places reuse earlier work instead of redoing it: resume checkpoints (distributed.py), the
preprocess cache's kept shards, validate's verdict memo, ingest's kept packs and the
new-data checker's hashes (flows/check_new_data.py). Each may reuse its state only if it was
produced by the same params, from the same inputs, by the same code. DVC reruns a stage when a
dependency changes, but the stage itself must then not pick up state the old code wrote: so the
fingerprint covers the source of every module the stage runs, not only its params and data.

The code is the module closure of the stage's entry module: every module of this project's
packages (alexnet, flows, tasks) reachable through `import` statements (anywhere in a module,
including the lazy imports inside functions), the packages' `__init__` modules on the way, and
modules started as a subprocess, named by a string constant such as "alexnet.distributed" in
`python -m alexnet.distributed`. Every byte counts, comments too: an edit reruns the stage, as
DVC does for the same files. Files are found the way the interpreter finds them (`importlib`), so with an
editable install or PYTHONPATH the hashed files are those that actually run, whatever the working
directory. tests/unit/test_dvc_contract.py checks dvc.yaml's code deps against the same closure.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

# This project's packages: imports of anything else (numpy, tensorflow...) are not followed.
PACKAGES = ("alexnet", "flows", "tasks")


def module_file(name: str) -> Path | None:
    """The source file `import name` runs (None if there is no such module, or no source).

    Never imports anything but packages: a dotted name is looked up only below a package."""
    parent = name.rpartition(".")[0]
    if parent and not ((f := module_file(parent)) and f.name == "__init__.py"):
        return None
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None and spec.has_location else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _parents(name: str) -> list[str]:
    """The packages whose __init__ runs before a module: a.b.c -> [a, a.b]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported_names(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every module name `tree` (module `name`) may import, absolute, before filtering."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from pkg import name` imports the module pkg.name when there is one.
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and "." in node.value and node.value.replace(".", "").replace("_", "").isalnum():
            found.add(node.value)  # maybe `python -m pkg.module`: kept only if it is a module
    return found


@lru_cache(maxsize=None)
def module_closure(entry: str) -> tuple[str, ...]:
    """Sorted names of the modules `entry` runs, among this project's packages (PACKAGES)."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen.add(name)
        todo.extend(_parents(name))
        tree = ast.parse(path.read_bytes(), filename=str(path))
        todo.extend(other for other in _imported_names(tree, name, path.name == "__init__.py")
                    if other.split(".")[0] in PACKAGES and other not in seen)
    return tuple(sorted(seen))


@lru_cache(maxsize=None)
def code_digest(entry: str) -> str:
    """sha256 over the name and file bytes of every module in `module_closure(entry)`."""
    digest = hashlib.sha256()
    for name in module_closure(entry):
        path = module_file(name)
        assert path is not None  # module_closure keeps only modules with a source file
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def fingerprint(entry: str, params: Any, inputs: Any = None) -> str:
    """What produced a piece of state: the code of `entry`'s closure, params, input hashes.

    Args:
        entry: the module the stage runs (e.g. "alexnet.preprocess").
        params: the params the state depends on: a dataclass (a params block) or plain data.
        inputs: hashes (or anything JSON-serialisable) of the inputs it was computed from.
    Returns:
        a sha256 hex digest; equal only when code, params and inputs are all equal.
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    blob = json.dumps({"code": code_digest(entry), "params": params, "inputs": inputs},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# For an output directory with no metadata file of its own (data/raw): the fingerprint of what
# wrote it, in a hidden file beside the data.
STAMP = ".alexnet-fingerprint"


def write_stamp(directory: Path, value: str) -> None:
    (Path(directory) / STAMP).write_text(value + "\n")


def read_stamp(directory: Path) -> str | None:
    """The fingerprint `write_stamp` left in `directory`, or None (none, or unreadable)."""
    path = Path(directory) / STAMP
    try:
        return path.read_text().strip() if path.is_file() and not path.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        return None
