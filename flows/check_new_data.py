"""The `check-new-data` flow: retrain only when the labelled images changed.

    python -m flows.check_new_data                    # once, against PREFECT_API_URL's server
    python -m flows.deploy                            # served every 10 minutes (--check-every)

It fingerprints the source folder (`ingest.source` in params.yaml, relative to the workspace)
cheaply: relative paths, sizes and mtimes, and the sha256 of only the files whose (size, mtime)
differ from the last fingerprint. That fingerprint is kept in `.alexnet/source-state.json` in the
workspace (written atomically), with the alexnet.fingerprint of the code and source folder that
computed it: the recorded sha256s are reused only when both are unchanged (otherwise every file
is hashed again, and still compared with the recorded listing). If files were added, removed or changed in content, the flow emits
the Prefect event `alexnet.source.changed` for the resource `alexnet.source.<hash of the source
path>`; the `train-alexnet` deployment has a `DeploymentEventTrigger` on exactly that event and
resource (flows/deploy.py), so the Prefect server starts one training run. Unchanged data emits
nothing and costs one directory walk. A touched but unchanged file (new mtime, same sha256) is
not a change.

Why an event and not `run_deployment`: the trigger keeps the two deployments decoupled (anything
can announce new data: a CI job, an upload hook, `prefect event emit`), the server records each
event, and checked against a real local `prefect server` with `serve` (tests/server/
test_new_data.py) the automation creates exactly one `train-alexnet` run per change.

The first check of a workspace (no state file yet) only records the fingerprint: data already
there is trained on by the weekly schedule or a manual run, not by the checker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.events import emit_event

from alexnet.fingerprint import fingerprint as producer_fingerprint
from alexnet.ingest import NotRegularFile, is_system_file, open_regular
from alexnet.io import write_json
from alexnet.params import load_params

EVENT = "alexnet.source.changed"
STATE_FILE = Path(".alexnet/source-state.json")
Fingerprint = dict[str, dict[str, Any]]  # relative path -> {"size", "mtime_ns", "sha256"}


@dataclass(frozen=True)
class Change:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.modified)} modified"


def resource_id(source: Path) -> str:
    """The event resource of one source folder: `alexnet.source.<sha256 of its path>[:16]`."""
    return "alexnet.source." + hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]


def source_dir(workspace: Path) -> Path:
    """`ingest.source` from params.yaml, relative to the workspace."""
    return (workspace / load_params(workspace / "params.yaml").ingest.source).resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:  # no link followed, no FIFO waited on
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(source: Path, previous: Fingerprint) -> Fingerprint:
    """Every regular file under `source` that ingest would consider (no dot-files or OS litter:
    alexnet.ingest.is_system_file); sha256 only where (size, mtime) changed.

    Regular files only, by lstat, as ingest takes them: a symlink (out of the source, to
    /dev/zero, or broken), a FIFO or a socket is never opened and never counts as data."""
    current: Fingerprint = {}
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if is_system_file(PurePosixPath(path.relative_to(source).as_posix())):
                continue  # what ingest ignores (dot-files, Thumbs.db, __MACOSX/...) is no news
            rel = path.relative_to(source).as_posix()
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                old = previous.get(rel)
                same = old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns
                sha = old["sha256"] if same else _sha256(path)
            except (NotRegularFile, FileNotFoundError):  # replaced or removed while walking
                continue
            current[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    return current


def compare(previous: Fingerprint, current: Fingerprint) -> Change:
    return Change(added=sorted(current.keys() - previous.keys()),
                  removed=sorted(previous.keys() - current.keys()),
                  modified=sorted(k for k in current.keys() & previous.keys()
                                  if current[k]["sha256"] != previous[k]["sha256"]))


def state_fingerprint(source: Path) -> str:
    """What produced a state file: this module's code and the folder it looked at."""
    return producer_fingerprint("flows.check_new_data", {"source": str(source)})


def read_state(workspace: Path) -> Fingerprint | None:
    path = workspace / STATE_FILE
    return json.loads(path.read_text())["files"] if path.is_file() else None


def reusable_hashes(workspace: Path, source: Path) -> Fingerprint:
    """The recorded files whose sha256 may be reused: all of them if the state was written by
    this code for this source folder, none otherwise (an older state has no fingerprint)."""
    path = workspace / STATE_FILE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    return state["files"] if state.get("fingerprint") == state_fingerprint(source) else {}


def write_state(workspace: Path, source: Path, files: Fingerprint) -> None:
    path = workspace / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = path.parent / ".gitignore"  # keep the state out of git and of `dvc exp save`
    if not ignore.exists():
        ignore.write_text("*\n")
    write_json(path, {"source": str(source), "fingerprint": state_fingerprint(source),
                      "files": files})


@task
def fingerprint_source(source: Path, previous: Fingerprint | None) -> Fingerprint:
    return fingerprint(source, previous or {})


@task
def announce_change(source: Path, workspace: Path, change: Change) -> None:
    """Emit `alexnet.source.changed`; the train-alexnet deployment's trigger starts a run."""
    event = emit_event(event=EVENT, resource={"prefect.resource.id": resource_id(source),
                                              "prefect.resource.name": str(source)},
                       payload={"workspace": str(workspace), "source": str(source),
                                "added": len(change.added), "removed": len(change.removed),
                                "modified": len(change.modified),
                                "examples": (change.added + change.modified)[:10]})
    if event is None:  # e.g. events disabled: better to fail than to silently never retrain
        raise RuntimeError(f"could not emit {EVENT}: Prefect events are not enabled here")
    get_run_logger().info("emitted %s (%s) for %s", EVENT, event.id, resource_id(source))


@flow(name="check-new-data")
def check_new_data(workspace: str = ".") -> dict[str, Any]:
    """Fingerprint `ingest.source`; if the images changed, announce it (triggers training).

    Returns {"changed": bool, "added": n, "removed": n, "modified": n, "first_check": bool}.
    """
    logger = get_run_logger()
    ws = Path(workspace).resolve()
    source = source_dir(ws)
    if not source.is_dir():  # e.g. the built-in sample, generated by the first training run
        logger.warning("source %s does not exist (yet): nothing to check", source)
        return {"changed": False, "first_check": False, "added": 0, "removed": 0, "modified": 0}
    previous = read_state(ws)
    current = fingerprint_source(source, reusable_hashes(ws, source))
    change = compare(previous or {}, current)
    if previous is None:
        logger.info("first check of %s: %d files recorded, nothing triggered", source, len(current))
    elif change:
        logger.info("source changed (%s): requesting a training run", change.summary())
        announce_change(source, ws, change)
    else:
        logger.info("source unchanged (%d files): no training", len(current))
    write_state(ws, source, current)  # after the emit: if it raised, the next check retries
    return {"changed": bool(change) and previous is not None, "first_check": previous is None,
            "added": len(change.added), "removed": len(change.removed),
            "modified": len(change.modified)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=".")
    args = parser.parse_args(argv)
    check_new_data(workspace=args.workspace)


if __name__ == "__main__":
    main()
