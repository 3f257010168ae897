"""dvc.yaml and the code agree: each stage writes exactly its outs, reads only its deps, and
depends on the source of every module it runs.

A path hard-coded in a stage but missing from dvc.yaml silently escapes DVC's cache and lock
(CONVENTIONS.md #2); this test parses each stage's command with the real CLI parser instead. A
module missing from a stage's deps means DVC skips the stage after that module changed; the
module set is derived from the code (alexnet.fingerprint.module_closure, the same closure the
stages fingerprint their stored state with), never written down here. Stages are read through
DVC's own API, so `${}` interpolation is DVC's.
"""

import ast
import inspect
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

import alexnet
from alexnet import cli
from alexnet.cli import build_parser
from alexnet.fingerprint import module_closure, module_file
from alexnet.ingest import MANIFEST_COLUMNS
from alexnet.params import Params
from alexnet.split import SPLIT_COLUMNS

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGES = DVC["stages"]
with Repo(str(REPO)) as _repo:
    RESOLVED = {s.name: {"cmd": s.cmd, "deps": [d.def_path for d in s.deps]}
                for s in _repo.index.stages}


def names(entries):
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def parsed(stage):
    argv = shlex.split(RESOLVED[stage]["cmd"])
    assert argv[0] == "alexnet" and argv[1] == stage
    return build_parser().parse_args(argv[1:])


def entry_module(stage):
    """The module `alexnet STAGE` hands over to: the one its cli.cmd_STAGE function imports."""
    modules = cmd_imports(stage)
    if f"alexnet.{stage}" in modules:  # helpers such as alexnet.io may be imported beside it
        return f"alexnet.{stage}"
    [module] = modules
    return module


def cmd_imports(stage):
    """Modules cli.cmd_STAGE imports (it runs them as part of the stage)."""
    tree = ast.parse(inspect.getsource(getattr(cli, f"cmd_{stage.replace('-', '_')}")))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def stage_modules(stage):
    """Everything `alexnet STAGE` runs: the CLI module with its module-level imports (not the
    other stages' lazy imports), and the closure of what cmd_STAGE imports."""
    tree = ast.parse(module_file("alexnet.cli").read_bytes())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)
           and (n.module or "").split(".")[0] == "alexnet"}
    modules = {"alexnet", "alexnet.cli"}
    for name in top | cmd_imports(stage):
        modules.update(module_closure(name))
    return modules


def code_files(modules):
    """Repo-relative paths of the source files of `modules` (as the interpreter finds them)."""
    return {module_file(m).relative_to(REPO).as_posix() for m in modules}


def test_stages_are_the_pipeline_in_order():
    assert list(STAGES) == ["ingest", "validate", "split", "preprocess", "train", "evaluate",
                            "promote", "report"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_command_writes_exactly_the_declared_outs(stage):
    ns = parsed(stage)
    written = {str(getattr(ns, dest)) for dest in ns.outputs}
    declared = names(STAGES[stage].get("outs")) | names(STAGES[stage].get("metrics"))
    assert written == declared


@pytest.mark.parametrize("stage", list(STAGES))
def test_command_reads_only_declared_deps(stage):
    """Or the stage is `always_changed`: it reads something DVC does not track (ingest's source
    folder, which DVC would walk six times per run: dvc.yaml), so DVC runs it every time and the
    stages after it rerun only when its outs change."""
    ns = parsed(stage)
    # An input left out of the command (ingest's source) is read from the stage's params block.
    read = {str(getattr(ns, dest) or PARAMS[stage][dest]) for dest in ns.inputs
            if dest not in ns.listed}
    deps = set(RESOLVED[stage]["deps"])
    if STAGES[stage].get("always_changed"):
        assert stage == "ingest" and read - deps == {PARAMS["ingest"]["source"]}
    else:
        assert read <= deps, read - deps


# The listings a stage reads a folder's files through, and their columns.
LISTING_COLUMNS = {"data/manifest.csv": MANIFEST_COLUMNS, "data/splits.csv": SPLIT_COLUMNS}


LISTED = [stage for stage in STAGES if parsed(stage).listed]


def test_the_stages_that_read_data_raw_through_a_listing():
    assert LISTED == ["validate", "preprocess"]


@pytest.mark.parametrize("stage", LISTED)
def test_a_folder_read_through_a_listing_is_not_a_dep_its_listing_is(stage):
    """validate and preprocess read data/raw's files as a listing names them, by path and
    sha256: their dep is the listing, not the folder, whose every file DVC walks and looks up
    six times per dep and stage (issue 15). Sound because ingest writes data/raw and the
    manifest together, and runs on every `dvc repro` (always_changed), which restores a
    data/raw changed outside it (tests/integration/test_dvc_repro.py). The stage also depends on a
    listing written beside the folder by the stage that writes it (ingest's manifest): DVC
    read-locks it while the command runs, so no `dvc repro` beside it replaces the folder (it
    stops with "is busy")."""
    ns = parsed(stage)
    deps = set(RESOLVED[stage]["deps"])
    for folder, listing in ns.listed.items():
        folder, listing = str(getattr(ns, folder)), str(getattr(ns, listing))
        assert folder not in deps and listing in deps
        assert {"path", "sha256"} <= set(LISTING_COLUMNS[listing])
        [writer] = [s for s in STAGES if folder in names(STAGES[s].get("outs"))]
        beside = names(STAGES[writer]["outs"]) & set(LISTING_COLUMNS)
        assert beside & deps, f"{stage} depends on none of {writer}'s listings {beside}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_resume_state_is_neither_an_out_nor_in_git(stage):
    """A stage's own state (train's checkpoints) is outside DVC: `dvc exp apply` cannot
    restore it, so as an out it would make `dvc repro` rerun the stage after every apply."""
    ns = parsed(stage)
    for dest in ns.state:
        path = str(getattr(ns, dest))
        declared = names(STAGES[stage].get("outs")) | set(RESOLVED[stage]["deps"])
        assert not any(path == p or path.startswith(p + "/") for p in declared), path
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not ignored by git"


def test_the_code_checked_is_this_checkout():
    assert Path(alexnet.__file__).resolve().parent == REPO / "alexnet"


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_the_modules_the_stage_runs(stage):
    """Every module the stage imports (lazily too, and `python -m` workers) is a dep, and no
    other source file is: DVC reruns the stage exactly when its code changes."""
    runs = code_files(stage_modules(stage))
    assert f"alexnet/{stage}.py" in runs
    listed = {d for d in RESOLVED[stage]["deps"] if d.endswith(".py")}
    assert runs - listed == set(), f"dvc.yaml {stage}: missing deps {sorted(runs - listed)}"
    assert listed - runs == set(), f"dvc.yaml {stage}: not imported {sorted(listed - runs)}"

