"""The DVC workspace a flow runs in: one flow run at a time, params.yaml overrides and the
built-in sample data."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import io
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ruamel.yaml import YAML

from alexnet.io import atomic_open
from alexnet.params import Params, apply_overrides, load_params, parse_params
from tasks.guard import held_by_stages

SAMPLE_SOURCE = "data/sample"  # ingest.source's default: generated on demand
LOCK_FILE = Path(".alexnet/flow.lock")  # held by the flow run that owns the workspace
_logger = logging.getLogger(__name__)


@contextlib.contextmanager
def workspace_lock(workspace: Path, holder: str, on_wait: Callable[[str], None] = _logger.info,
                   poll_seconds: float = 1.0) -> Iterator[None]:
    """Hold the workspace for the whole block: one flow run per workspace at a time.

    DVC locks one command at a time, so two flow runs (a deployment run and a `make run`, or two
    shells) would interleave stage by stage and rewrite params.yaml under each other. This is an
    exclusive `flock` on `.alexnet/flow.lock`; the kernel releases it when the holder exits, so
    a killed run leaves no stale lock. Another run waits (saying once who holds it), then goes on.

    Args:
        holder: who we are, written into the lock file for the runs that wait ("flow run X").
        on_wait: called once with a message naming the holder (its pid) when we have to wait.
    """
    path = workspace / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = path.parent / ".gitignore"  # keep the lock out of git and of `dvc exp save`
    if not ignore.exists():
        ignore.write_text("*\n")
    with open(path, "a+") as fh:
        waited = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    fh.seek(0)
                    holder_now = fh.read().strip() or "another run"
                    on_wait(f"workspace {workspace} is in use by {holder_now}: waiting for it to "
                            "finish")
                    waited = True
                time.sleep(poll_seconds)
        fh.seek(0)
        fh.truncate()
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fh.write(f"{holder} (pid {os.getpid()}, since {since})\n")
        fh.flush()
        try:
            with held_by_stages(fh.fileno()):  # a stage's guard holds it until the stage ends
                yield
        finally:
            # Closing the file (not LOCK_UN, which would release it for every descriptor that
            # shares it) frees the workspace once no guard of this run holds it any more.
            fh.truncate(0)


def one_run_per_workspace(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a flow function with a `workspace` argument: its whole body runs under
    `workspace_lock`, params.yaml overrides included."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        from prefect import get_run_logger
        from prefect.runtime import flow_run

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        workspace = Path(bound.arguments["workspace"]).resolve()
        logger = get_run_logger()
        with workspace_lock(workspace, f"flow run {flow_run.get_name()!r}", on_wait=logger.info):
            return fn(*args, **kwargs)
    return locked


def set_params(workspace: Path, overrides: dict[str, Any]) -> bool:
    """Write dotted-key overrides into params.yaml, as `dvc exp run -S` does; True if it changed.

    Comments and key order are kept (ruamel round-trip). The overrides are validated against the
    schema first, so a typo fails here, before any stage runs.
    """
    path = workspace / "params.yaml"
    # ruamel's round-trip loader builds only plain data (maps, lists, scalars), like safe_load,
    # and keeps comments and key order for writing the file back.
    round_trip = YAML(typ="rt")
    doc = round_trip.load(path.read_text())
    apply_overrides(dict(doc), overrides)  # validation only; raises ParamsError
    changed = False
    for dotted, value in overrides.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        if node.get(leaf) != value:
            node[leaf] = value
            changed = True
    if changed:
        buf = io.StringIO()
        round_trip.dump(doc, buf)
        with atomic_open(path) as fh:
            fh.write(buf.getvalue())
    return changed


def ensure_source(workspace: Path) -> tuple[Path, bool]:
    """The configured image source; generates the sample set if that is what is configured.

    Returns (source path, True if it is the built-in synthetic sample).
    """
    source = load_params(workspace / "params.yaml").ingest.source
    path = workspace / source
    is_sample = Path(source) == Path(SAMPLE_SOURCE)
    if is_sample and not path.exists():
        from alexnet.sample_data import generate_sample_data

        generate_sample_data(path)
    return path, is_sample


def pipeline_stages(workspace: Path) -> dict[str, Any]:
    """The stages of `workspace`'s dvc.yaml, by name, as DVC reads them (`${}` interpolated with
    its params.yaml), in pipeline order: `.cmd`, `.deps`, `.outs` are DVC's own objects."""
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        return {stage.name: stage for stage in repo.index.stages}


def pipeline_files(workspace: Path) -> list[str]:
    """What a copy of the pipeline needs, read from its dvc.yaml (the one place it is written):
    the dvc.yaml files, the params files the stages read, and the Python packages that hold the
    stages' code deps (whole packages: `alexnet <stage>` needs the CLI too). Relative paths."""
    from dvc.dependency.param import ParamsDependency

    root = Path(workspace).resolve()
    files: set[str] = set()
    for stage in pipeline_stages(root).values():
        files.add(Path(stage.path).relative_to(root).as_posix())
        for dep in stage.deps:
            rel = Path(dep.fs_path).relative_to(root)
            if isinstance(dep, ParamsDependency):
                files.add(rel.as_posix())
            elif rel.suffix == ".py" and (root / rel.parts[0] / "__init__.py").is_file():
                files.add(rel.parts[0])
    return sorted(files)


def _get(params: Params, dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def demo_settings(workspace: Path, overrides: dict[str, Any], demo: dict[str, Any]) -> dict[str, Any]:
    """The demo settings to add to `overrides` for this run (what `make run` has always done).

    Only when the run trains on the built-in sample (after the caller's overrides), and only for
    keys the caller does not set and params.yaml still holds at the reference default: an
    explicit choice, the caller's or the file's, wins. On the user's own data: nothing.
    """
    data = YAML(typ="safe").load((workspace / "params.yaml").read_text()) or {}
    params = parse_params(apply_overrides(data, overrides))
    if Path(params.ingest.source) != Path(SAMPLE_SOURCE):
        return {}
    reference = Params()
    return {k: v for k, v in demo.items()
            if k not in overrides and _get(params, k) == _get(reference, k)}
