"""Shared fixtures: a throwaway git+DVC workspace holding this project's pipeline, tiny settings."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Small enough to train in seconds on 2 CPU cores, still AlexNet and still 2 Horovod workers.
TINY = {
    "preprocess.image_size": 67,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.optimizer": "adam",
    "train.learning_rate": 0.0001,
    "train.warmup_epochs": 1,
    "train.workers": 2,
    "validate.min_per_class": 5,
    "promote.min_accuracy": 0.0,
}
# Beside the pipeline itself (dvc.yaml, params.yaml and the code, read from dvc.yaml): the
# repository's DVC and git settings.
REPO_SETTINGS = (".dvcignore", ".gitignore")


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's tools first, no analytics traffic."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               TF_CPP_MIN_LOG_LEVEL="2", **extra)
    for who in ("AUTHOR", "COMMITTER"):  # git and `dvc exp` commit in the test workspaces
        env.setdefault(f"GIT_{who}_NAME", "alexnet tests")
        env.setdefault(f"GIT_{who}_EMAIL", "tests@localhost")
    return env


def stop_tree(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop `proc` and every process it started: SIGTERM first (`alexnet train` forwards it to
    horovodrun, which stops its ranks), then, after `grace` seconds, SIGKILL to each process of
    its tree as collected while it was alive (a rank orphaned by then is no longer a
    descendant; psutil.Process refuses a reused pid)."""
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(tree, timeout=10)


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900,
        **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with output captured; on a timeout (or an interrupt) the command's whole
    process tree is stopped (stop_tree), not only the command."""
    with subprocess.Popen(cmd, cwd=cwd, env=kwargs.pop("env", tool_env()), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:
            stop_tree(proc)
            raise
    proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


_SAMPLES: dict[int, Path] = {}


def run_readme_lines(lines: list[str], cwd: Path, subst: dict[str, str]) -> Path:
    """Run README command lines without a shell: `&&` chains, `cd` moves; returns the last cwd."""
    for line in lines:
        for old, new in subst.items():
            line = line.replace(old, new)
        for part in line.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv[0] == "cd":
                cwd = cwd / argv[1]
            else:
                run(argv, cwd)
    return cwd


def sample_data(dest: Path, per_class: int) -> None:
    """The synthetic sample (seed 0, `per_class` images per class) at `dest`: generated once per
    test session and size, then copied (generating it takes about a second, and dozens of
    workspaces start from this same set)."""
    from alexnet.sample_data import generate_sample_data

    if per_class not in _SAMPLES:
        root = Path(tempfile.mkdtemp(prefix="alexnet-tests-sample-"))
        atexit.register(shutil.rmtree, root, True)
        generate_sample_data(root / "sample", per_class=per_class, seed=0)
        _SAMPLES[per_class] = root / "sample"
    shutil.copytree(_SAMPLES[per_class], dest)


def make_workspace(path: Path, overrides: dict | None = None, per_class: int = 40) -> Path:
    """A git repo with this project's pipeline (dvc.yaml, params.yaml, DVC config), tiny
    settings, and the synthetic sample data in data/sample."""
    from flows.workspace import pipeline_files, set_params

    path.mkdir(parents=True, exist_ok=True)
    for name in (*pipeline_files(REPO), *REPO_SETTINGS):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, path / name)
    (path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc/config", path / ".dvc/config")
    shutil.copy2(REPO / ".dvc/.gitignore", path / ".dvc/.gitignore")
    set_params(path, {**TINY, **(overrides or {})})
    sample_data(path / "data/sample", per_class)
    run(["git", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "workspace"], path)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def force_pool(monkeypatch):
    """Use the process pool however little work there is, so small tests cover the parallel
    path (alexnet.parallel decodes a few images in-process)."""
    monkeypatch.setattr("alexnet.parallel.MIN_JOBS_FOR_POOL", 1)


def sample_splits(root: Path, per_class: int, seed: int) -> list[dict]:
    """The synthetic sample ingested into root/raw (packs) and root/manifest.csv, and a
    splits.csv of it (train, val, test in turn) in root: what preprocess reads, for tests that
    build a cache directly."""
    from alexnet.ingest import ingest
    from alexnet.io import read_csv, write_csv
    from alexnet.params import IngestParams
    from alexnet.sample_data import generate_sample_data

    generate_sample_data(root / "src", per_class=per_class, seed=seed)
    ingest(root / "src", root / "raw", root / "manifest.csv", root / "ingest.json",
           IngestParams())
    rows = [{"path": r["path"], "label": r["label"], "sha256": r["sha256"],
             "split": ("train", "val", "test")[i % 3]}
            for i, r in enumerate(read_csv(root / "manifest.csv"))]
    write_csv(root / "splits.csv", ["path", "label", "sha256", "split"], rows)
    return rows


# What `dvc status` says of a workspace that is exactly what dvc.lock records: only that ingest
# always runs (dvc.yaml: `always_changed`, as it reads the source folder itself).
UP_TO_DATE = "ingest:\n\talways changed\n"


def dvc_up_to_date(ws: Path) -> bool:
    return run(["dvc", "status"], ws).stdout == UP_TO_DATE


def stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran, in order."""
    import re

    return re.findall(r"Running stage '([\w-]+)'", output)
