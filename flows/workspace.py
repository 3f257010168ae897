"""The DVC workspace a flow runs in: params.yaml overrides and the built-in sample data."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from alexnet.io import atomic_open
from alexnet.params import Params, apply_overrides, load_params, parse_params

SAMPLE_SOURCE = "data/sample"  # ingest.source's default: generated on demand


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
