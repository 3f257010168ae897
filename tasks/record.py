"""Record a finished run: a DVC experiment named after the Prefect flow run, outputs pushed.

The last tasks of `train-alexnet` (flows/train_alexnet.py). After them, a run can be
reproduced from its flow-run name alone (README, "Reproduce a past run"):

    dvc exp apply <flow-run-name> && dvc pull && dvc repro

- `save_experiment`: `dvc exp save -n <flow-run-name> --force` commits params.yaml, dvc.lock and
  the metrics to a git ref under refs/exps/ (HEAD and the working tree are left as they are) and
  the outputs to the DVC cache. `--force` because a retried flow run keeps its name.
- `push_outputs`: `dvc push` to the default DVC remote; `dvc exp push` to the git remote
  `origin` only if the repository has one (without one, the experiment ref stays local).
- `publish_run_record`: a markdown artifact (`run-record`) linking the flow run to the
  experiment: its name, git ref and commit, and the dvc.lock md5s of the data and the model.

Only transient failures are retried (a held DVC lock, an unreachable remote), as in
tasks/stages.py; a missing git repository or a bad remote URL fails at once.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.stages import LOCKED, StageFailed, dvc_env, retry_if_transient

# Output that says the remote or the lock may be there on a second try.
_TRANSIENT = LOCKED + ("Connection", "connection", "timed out", "Timeout", "Temporary failure")
# The dvc.lock entries the record lists: (stage, out path) -> what it is.
RECORDED_OUTS = {("ingest", "data/raw"): "raw data", ("preprocess", "data/cache"): "cache",
                 ("train", "models/candidate"): "model"}


class DvcCommandFailed(StageFailed):
    """A `dvc`/`git` command of the record step failed; `transient` says whether to retry."""


@dataclass(frozen=True)
class Experiment:
    name: str
    ref: str  # refs/exps/.../<name>
    commit: str  # the experiment commit's sha
    baseline: str  # the git commit it was derived from (HEAD)


@dataclass(frozen=True)
class PushResult:
    dvc_remote: str
    exp_pushed_to: str | None  # git remote name, or None when skipped
    note: str


def _run(cmd: list[str], workspace: Path, timeout: float = 3600) -> str:
    proc = subprocess.run(cmd, cwd=workspace, env=dvc_env(), text=True, capture_output=True,
                          timeout=timeout)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
        raise DvcCommandFailed(" ".join(cmd[:3]), proc.returncode,
                               (errors or lines or ["no output"])[0],
                               transient=any(s in output for s in _TRANSIENT))
    return output


def find_experiment(workspace: Path, name: str) -> Experiment:
    """The experiment `name` derived from HEAD (DVC's ref layout: refs/exps/ab/cdef.../name)."""
    baseline = _run(["git", "rev-parse", "HEAD"], workspace)
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    return Experiment(name=name, ref=ref, commit=_run(["git", "rev-parse", ref], workspace),
                      baseline=baseline)


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_if_transient,
      task_run_name="dvc-exp-save-{name}")
def save_experiment(workspace: Path, name: str) -> Experiment:
    """`dvc exp save -n NAME --force`: params, dvc.lock, metrics and outputs as experiment NAME."""
    _run(["dvc", "exp", "save", "--name", name, "--force"], workspace)
    experiment = find_experiment(workspace, name)
    get_run_logger().info("saved DVC experiment %s (%s, commit %s)", name, experiment.ref,
                          experiment.commit[:10])
    return experiment


@task(retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=retry_if_transient)
def push_outputs(workspace: Path, experiment: Experiment) -> PushResult:
    """`dvc push` to the default remote; `dvc exp push origin NAME` if a git remote exists."""
    logger = get_run_logger()
    remote = _run(["dvc", "remote", "default"], workspace).strip()
    logger.info("dvc push (remote %r)", remote)
    _run(["dvc", "push"], workspace)
    git_remotes = _run(["git", "remote"], workspace).split()
    if "origin" not in git_remotes:
        note = ("no git remote 'origin': the experiment ref stays in this repository "
                "(outputs are on the DVC remote; add a remote, then `dvc exp push origin "
                f"{experiment.name}`)")
        logger.info("dvc exp push skipped: %s", note)
        return PushResult(dvc_remote=remote, exp_pushed_to=None, note=note)
    # Outputs were pushed just above: only the git ref goes to origin.
    _run(["dvc", "exp", "push", "--no-cache", "--force", "origin", experiment.name], workspace)
    logger.info("dvc exp push origin %s", experiment.name)
    return PushResult(dvc_remote=remote, exp_pushed_to="origin", note="")


def locked_md5s(workspace: Path) -> dict[str, str]:
    """{"model (models/candidate)": md5, ...} from dvc.lock for the outputs in RECORDED_OUTS."""
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    out = {}
    for (stage, path), what in RECORDED_OUTS.items():
        for entry in lock["stages"].get(stage, {}).get("outs", []):
            if entry["path"] == path:
                out[f"{what} ({path})"] = entry["md5"]
    return out


def record_markdown(flow_run: dict[str, str], experiment: Experiment, pushed: PushResult,
                    md5s: dict[str, str]) -> str:
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in md5s.items())
    return f"""# Run record: {flow_run['name']}

| | |
| --- | --- |
| flow run | `{flow_run['name']}` (`{flow_run['id']}`) |
| DVC experiment | `{experiment.name}` |
| git ref | `{experiment.ref}` |
| experiment commit | `{experiment.commit}` |
| baseline commit | `{experiment.baseline}` |
| DVC remote | `{pushed.dvc_remote}` (outputs pushed) |
| experiment ref pushed to | {f"`{pushed.exp_pushed_to}`" if pushed.exp_pushed_to else pushed.note} |
{rows}

Reproduce (README, "Reproduce a past run"):

```bash
dvc exp apply {experiment.name}    # params.yaml + dvc.lock of this run, outputs from the cache
dvc pull                           # outputs missing locally, from the DVC remote
rm -rf models/candidate models/checkpoints && dvc repro --no-run-cache   # retrain
```
"""


@task
def publish_run_record(workspace: Path, flow_run: dict[str, str], experiment: Experiment,
                       pushed: PushResult) -> dict[str, Any]:
    """The `run-record` markdown artifact; returns what it shows."""
    md5s = locked_md5s(workspace)
    create_markdown_artifact(key="run-record", markdown=record_markdown(flow_run, experiment,
                             pushed, md5s), description=f"DVC experiment {experiment.name}")
    return {**flow_run, **asdict(experiment), **asdict(pushed), "md5": md5s}
