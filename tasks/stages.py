"""One Prefect task per pipeline stage; every stage runs through DVC.

DVC is the single executor and cache (`dvc repro --single-item STAGE`): an unchanged stage is
skipped, dvc.lock always matches the outputs, and a flow run gives the same result as `dvc repro`
from a shell. Prefect adds retries of transient failures, logs and artifacts.

A stage's exit code says whether a retry can help (alexnet/errors.py): 75 (a worker died, a lock
was held) is retried; bad data (65) and bad params (78) fail at once.

A stage never outlives its flow run: it runs under tasks/guard.py, in a session of its own.
When the task is interrupted (Prefect's SIGTERM on Cancel, the flow's timeout, Ctrl-C) it stops
the guard, which stops every process of the stage, Horovod workers included; if the flow-run
process dies outright, the kernel tells the guard (PR_SET_PDEATHSIG). The stage's processes
carry RUN_MARKER=<flow-run id> in their environment, so they can be found by run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from alexnet.errors import EXIT_TRANSIENT
from alexnet.io import OUTPUT_MARKER, keep, kept_dir
from tasks import guard

_EXITED = re.compile(r"exited with (\d+)")
_SKIPPED = re.compile(r"Stage '([\w-]+)' didn't change, skipping")
# DVC holds a lock on the workspace while one command runs, and a read/write lock on the deps and
# outs of a stage while its command runs (rwlock: "'data/cache' is busy, it is being blocked by:");
# another run must wait and retry, not fail.
LOCKED = ("Unable to acquire lock", "is busy, retrying", "is busy, it is being blocked by")
# In the environment of every process a stage starts (Horovod workers too): the flow-run id.
RUN_MARKER = "ALEXNET_FLOW_RUN_ID"
# The stages that reuse their last output from its kept twin (alexnet/io.py keep): the output
# (dvc.yaml) holds all they need of it (ingest: data/raw's index and packs).
KEPT_OUTS = {"ingest": "data/raw", "preprocess": "data/cache"}


class StageFailed(RuntimeError):
    """`dvc repro` of a stage failed; `transient` says whether a retry may succeed."""

    def __init__(self, stage: str, code: int | None, tail: str, transient: bool) -> None:
        self.stage, self.code, self.transient = stage, code, transient
        super().__init__(f"stage {stage!r} failed (exit code {code}): {tail}")


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool  # False when DVC found nothing changed and skipped it


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only failures a second try can fix."""
    try:
        state.result()
    except StageFailed as exc:
        return exc.transient
    except Exception:
        return False
    return False


def dvc_env() -> dict[str, str]:
    """The environment stages run in: this venv's tools first, no analytics traffic, and the
    flow run's id (RUN_MARKER) when there is one."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if run_id := flow_run.get_id():
        env[RUN_MARKER] = str(run_id)
    return env


def guarded(cmd: list[str]) -> list[str]:
    """`cmd` under tasks/guard.py, which ends all of its processes if this process goes away.
    Run by path in isolated mode (-I): never a `tasks` package from the workspace."""
    return [sys.executable, "-I", os.path.abspath(guard.__file__), "--parent", str(os.getpid()),
            "--", *cmd]


def stop_guard(proc: subprocess.Popen) -> None:
    """Stop a guarded stage and wait until its processes are gone (the guard's grace period,
    then SIGKILL), within Prefect's 30 s between its SIGTERM and SIGKILL of the flow run."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=guard.GRACE_SECONDS + 8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_stage(cmd: list[str], workspace: Path) -> subprocess.Popen:
    """Start `cmd` under the guard (`guarded`), its output piped as text lines.

    Own session: signals meant for the flow-run process (a terminal's Ctrl-C, a group kill)
    reach the stage only through stop_guard, in order. The guard holds guard.HELD_FDS (the
    workspace lock) until the stage's last process is gone.
    """
    return subprocess.Popen(guarded(cmd), cwd=workspace, env=dvc_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, pass_fds=tuple(sorted(guard.HELD_FDS)))


def keep_checked_out(stage: str, workspace: Path) -> Path | None:
    """Keep the stage's output as its twin if the workspace has the output (alexnet wrote it)
    but no twin: a fresh clone after `dvc pull`. `dvc repro` deletes the output before the stage
    runs, and the stage reuses only the twin (its stamp and fingerprint checks still decide
    what). Returns the twin, or None if nothing was kept."""
    if stage not in KEPT_OUTS:
        return None
    out = workspace / KEPT_OUTS[stage]
    if os.path.lexists(kept_dir(out)) or out.is_symlink() or not (out / OUTPUT_MARKER).is_file():
        return None
    return keep(out)


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_if_transient,
      task_run_name="dvc-repro-{stage}")
def run_stage(stage: str, workspace: Path) -> StageResult:
    """`dvc repro --single-item STAGE` in the workspace, streaming its output to the run log.

    Interrupted (Cancel, timeout, Ctrl-C: Prefect raises in this thread), it stops the stage's
    processes before re-raising, so nothing of the run keeps training or writes afterwards.
    """
    logger = get_run_logger()
    cmd = ["dvc", "repro", "--single-item", stage]
    if kept := keep_checked_out(stage, workspace):
        logger.info("%s: kept as %s for %s to reuse", KEPT_OUTS[stage], kept, stage)
    logger.info("%s", " ".join(cmd))
    lines: list[str] = []
    with start_stage(cmd, workspace) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    lines.append(line)
                    logger.info("%s", line)
        except BaseException as exc:
            logger.warning("stage %s interrupted (%s): stopping its processes", stage,
                           type(exc).__name__)
            stop_guard(proc)
            raise
    output = "\n".join(lines)
    if proc.returncode != 0:
        match = _EXITED.search(output)
        code = int(match.group(1)) if match else proc.returncode
        transient = (code == EXIT_TRANSIENT) or any(s in output for s in LOCKED)
        errors = [ln for ln in lines if "ERROR" in ln or "error:" in ln]
        raise StageFailed(stage, code, errors[0] if errors else " | ".join(lines[:4]) or
                          "no output", transient)
    return StageResult(stage, ran=stage not in _SKIPPED.findall(output))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@task
def publish_validation(workspace: Path) -> dict[str, Any]:
    """Validation counts as a table artifact and one log line."""
    summary = _read_json(workspace / "reports/validation.json")
    rows = [{"what": "files", "count": summary["total"]},
            {"what": "accepted", "count": summary["accepted"]},
            {"what": "quarantined", "count": summary["quarantined"]}]
    rows += [{"what": f"quarantined: {r}", "count": n} for r, n in summary["by_reason"].items()]
    rows += [{"what": f"class {c}", "count": n} for c, n in summary["per_class"].items()]
    create_table_artifact(key="validation", table=rows,
                          description="Validation verdicts (reports/quarantine.csv has each file)")
    get_run_logger().info("validation: %d accepted, %d quarantined %s", summary["accepted"],
                          summary["quarantined"], summary["by_reason"] or "")
    return summary


@task
def publish_split(workspace: Path) -> dict[str, Any]:
    summary = _read_json(workspace / "reports/split.json")
    rows = [{"split": s, **counts} for s, counts in summary["counts"].items()]
    create_table_artifact(key="split", table=rows, description="Images per class and split")
    return summary


@task
def publish_metrics(workspace: Path) -> dict[str, Any]:
    """Test metrics as a table artifact; the report's markdown summary as a markdown artifact."""
    metrics = _read_json(workspace / "reports/metrics.json")
    rows = [{"class": name, **{k: round(float(v), 4) for k, v in values.items()}}
            for name, values in metrics["per_class"].items()]
    rows += [{"class": avg.replace("_", " "), **{k: round(float(v), 4)
              for k, v in metrics[avg].items()}} for avg in ("macro_avg", "weighted_avg")]
    create_table_artifact(key="test-metrics", table=rows,
                          description=f"Test split: {metrics['n_test']} images, accuracy "
                                      f"{metrics['accuracy']:.4f}")
    create_markdown_artifact(key="train-alexnet-summary",
                             markdown=(workspace / "reports/summary.md").read_text(),
                             description="Summary of this training run (reports/report.html)")
    get_run_logger().info("test accuracy %.4f on %d images", metrics["accuracy"], metrics["n_test"])
    return metrics
