"""Record a finished run: a DVC experiment named after the Prefect flow run, outputs pushed.

The last tasks of `train-alexnet` (flows/train_alexnet.py). After them, a run can be
reproduced from its flow-run name alone (README, "Reproduce a past run"):

    python -m flows.reproduce <flow-run-name>   # dvc exp apply + dvc pull, clear errors

- `save_experiment`: `dvc exp save -n <flow-run-name> --force` commits params.yaml, dvc.lock and
  the metrics to a git ref under refs/exps/ (HEAD and the working tree are left as they are) and
  the outputs to the DVC cache. `--force` because a retried flow run keeps its name.
- `push_outputs`: only when the user turned DVC's own switch on, `dvc config exp.auto_push true`
  (the one `dvc exp run` obeys; off by default): `dvc push` to the default DVC remote, then
  `dvc exp push <exp.git_remote, default origin> NAME`. Off, nothing leaves the workspace: a
  clone of a public repository never pushes to it; the run's data stays in this workspace's
  DVC cache, which the record names, and reproducing it here needs nothing else.
- `publish_run_record`: a markdown artifact (`run-record`) linking the flow run to the
  experiment: its name, git ref and commit, where its data is, and the dvc.lock md5s.

Only transient failures are retried (a held DVC lock, an unreachable remote), as in
tasks/stages.py; a missing git repository, or a push switched on with nowhere configured to
push to, fails at once with the command that fixes it.
"""

from __future__ import annotations

import json
import os
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
class PushSettings:
    """Where runs go, from DVC's config (`dvc config exp.auto_push/exp.git_remote`)."""
    enabled: bool  # exp.auto_push, or the DVC_EXP_AUTO_PUSH environment variable as DVC reads it
    git_remote: str  # exp.git_remote, DVC's default "origin"
    dvc_remote: str | None  # the default DVC remote, None when none is configured
    cache_dir: str  # this workspace's DVC cache: where the run's data is in any case


@dataclass(frozen=True)
class PushResult:
    data: str  # this workspace's DVC cache: the run's data is there, pushed or not
    dvc_remote: str | None  # the DVC remote the outputs were pushed to, None when not pushed
    exp_pushed_to: str | None  # git remote name, or None when not pushed
    note: str


# DVC's own reading of a boolean (dvc.utils.env2bool / the config schema's Bool).
_TRUE = {"true", "1", "yes", "y", "on"}


def _run(cmd: list[str], workspace: Path, timeout: float = 3600, check: bool = True,
         env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=workspace, env={**dvc_env(), **(env or {})}, text=True,
                          capture_output=True, timeout=timeout)
    output = (proc.stdout + proc.stderr).strip()
    if check and proc.returncode != 0:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
        raise DvcCommandFailed(" ".join(cmd[:3]), proc.returncode,
                               (errors or lines or ["no output"])[0],
                               transient=any(s in output for s in _TRANSIENT))
    return output if proc.returncode == 0 else ""


def push_settings(workspace: Path) -> PushSettings:
    """Read the push switch and the remotes from DVC's merged config (project, local, global)."""
    env = os.environ.get("DVC_EXP_AUTO_PUSH")
    switch = env if env is not None else _run(["dvc", "config", "exp.auto_push"], workspace,
                                              check=False)
    git_remote = _run(["dvc", "config", "exp.git_remote"], workspace, check=False).strip()
    dvc_remote = _run(["dvc", "remote", "default"], workspace, check=False).strip()
    return PushSettings(enabled=switch.strip().lower() in _TRUE,
                        git_remote=os.environ.get("DVC_EXP_GIT_REMOTE", git_remote or "origin"),
                        dvc_remote=dvc_remote or None,
                        cache_dir=_run(["dvc", "cache", "dir"], workspace).strip())


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
    # DVC's own auto push would run inside `exp save` and only warn when it fails; push_outputs
    # does it instead, retried and failing clearly.
    _run(["dvc", "exp", "save", "--name", name, "--force"], workspace,
         env={"DVC_EXP_AUTO_PUSH": "false"})
    experiment = find_experiment(workspace, name)
    get_run_logger().info("saved DVC experiment %s (%s, commit %s)", name, experiment.ref,
                          experiment.commit[:10])
    return experiment


def _refuse(settings: PushSettings, problem: str, fix: str) -> DvcCommandFailed:
    return DvcCommandFailed("dvc exp push", None,
                            f"exp.auto_push is on but {problem}: {fix} (or `dvc config --unset "
                            "exp.auto_push` to keep runs in this workspace)", transient=False)


@task(retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=retry_if_transient)
def push_outputs(workspace: Path, experiment: Experiment) -> PushResult:
    """Push the run only if `exp.auto_push` is on: `dvc push`, then `dvc exp push GIT_REMOTE NAME`.

    Raises:
        DvcCommandFailed: the switch is on but the git remote or the DVC remote is missing
            (not retried), or a push failed (retried when the remote may come back).
    """
    logger = get_run_logger()
    settings = push_settings(workspace)
    if not settings.enabled:
        note = ("not pushed (`dvc config exp.auto_push` is off): the run's data is in this "
                f"workspace's DVC cache {settings.cache_dir}; README, \"Reproduce a past run\", "
                "says how to push runs or reproduce them from a clone")
        logger.info("%s", note)
        return PushResult(data=settings.cache_dir, dvc_remote=None, exp_pushed_to=None, note=note)
    if settings.git_remote not in _run(["git", "remote"], workspace).split():
        raise _refuse(settings, f"the git remote {settings.git_remote!r} does not exist",
                      f"`git remote add {settings.git_remote} URL`, or `dvc config "
                      "exp.git_remote NAME`")
    if settings.dvc_remote is None:
        raise _refuse(settings, "no default DVC remote is configured",
                      "`dvc remote add -d NAME URL`")
    logger.info("dvc push (remote %r)", settings.dvc_remote)
    _run(["dvc", "push"], workspace)
    # Outputs were pushed just above: only the git ref goes to the git remote.
    _run(["dvc", "exp", "push", "--no-cache", "--force", settings.git_remote, experiment.name],
         workspace)
    logger.info("dvc exp push %s %s", settings.git_remote, experiment.name)
    return PushResult(data=settings.cache_dir, dvc_remote=settings.dvc_remote,
                      exp_pushed_to=settings.git_remote, note="")


def locked_md5s(workspace: Path) -> dict[str, str]:
    """{"model (models/candidate)": md5, ...} from dvc.lock for the outputs in RECORDED_OUTS."""
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    out = {}
    for (stage, path), what in RECORDED_OUTS.items():
        for entry in lock["stages"].get(stage, {}).get("outs", []):
            if entry["path"] == path:
                out[f"{what} ({path})"] = entry["md5"]
    return out


def resolved_settings(workspace: Path) -> dict[str, Any]:
    """What `auto` params became in the run's training (model.json's `resolved`), if any."""
    try:
        meta = json.loads((workspace / "models/candidate/model.json").read_text())
    except (OSError, ValueError):
        return {}
    resolved = meta.get("resolved") if isinstance(meta, dict) else None
    return resolved if isinstance(resolved, dict) else {}


def record_markdown(flow_run: dict[str, str], experiment: Experiment, pushed: PushResult,
                    md5s: dict[str, str], resolved: dict[str, Any] | None = None) -> str:
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in md5s.items())
    if resolved:
        rows += "\n| training ran with | " + ", ".join(
            f"train.{k} `{v}`" for k, v in sorted(resolved.items())) + " |"
    pushed_to = (f"data to DVC remote `{pushed.dvc_remote}`, experiment ref to git remote "
                 f"`{pushed.exp_pushed_to}`" if pushed.exp_pushed_to else pushed.note)
    return f"""# Run record: {flow_run['name']}

| | |
| --- | --- |
| flow run | `{flow_run['name']}` (`{flow_run['id']}`) |
| DVC experiment | `{experiment.name}` |
| git ref | `{experiment.ref}` |
| experiment commit | `{experiment.commit}` |
| baseline commit | `{experiment.baseline}` |
| data (DVC cache) | `{pushed.data}` |
| pushed | {pushed_to} |
{rows}

Reproduce (README, "Reproduce a past run"):

```bash
python -m flows.reproduce {experiment.name}   # dvc exp apply + dvc pull: params, dvc.lock, outputs
rm -rf models/candidate models/checkpoints && dvc repro --no-run-cache   # retrain
```
"""


@task
def publish_run_record(workspace: Path, flow_run: dict[str, str], experiment: Experiment,
                       pushed: PushResult) -> dict[str, Any]:
    """The `run-record` markdown artifact; returns what it shows."""
    md5s = locked_md5s(workspace)
    resolved = resolved_settings(workspace)
    create_markdown_artifact(key="run-record", markdown=record_markdown(
        flow_run, experiment, pushed, md5s, resolved),
        description=f"DVC experiment {experiment.name}")
    return {**flow_run, **asdict(experiment), **asdict(pushed), "md5": md5s, "resolved": resolved}
