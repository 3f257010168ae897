"""Stopping a served run against a real `prefect server`: Cancel, a flow-run timeout and a crash
of the flow-run process end every process of the run within 30 s (Horovod workers included),
nothing is written for it, and the next run resumes from its checkpoint. SIGTERM or SIGINT to
`python -m flows.deploy` ends it at once.

The run's processes are found by its identity, never by a name: tasks/stages.py puts the flow
run's id into the environment of every process a stage starts (RUN_MARKER), and the flow-run
process is the parent of the stage's guard (tasks/guard.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

import tasks.guard
from tasks.stages import RUN_MARKER
from tests.conftest import VENV_BIN, make_workspace, run
from tests.server.conftest import start, stop, sync_client, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]
BOUND_SECONDS = 30  # cancel/timeout/crash -> no process of the run left
# Long enough that the run is still training when it is stopped (after its first checkpoint),
# with room for the epochs that end while a cancel travels (the `prefect` command starting, the
# runner polling the server for it): under load, with another test file beside this one, two
# and once three epochs ended in that time. How many is the machine's speed, not a property of
# the pipeline (the 30 s bound on the processes is the timing claim); that a stop leaves room
# for the next phase is asserted, so a late one fails here, not in a 600 s wait.
EPOCHS = 10


def serve(env: dict, ws: Path, log: Path, *extra: str) -> subprocess.Popen:
    served = start([sys.executable, "-m", "flows.deploy", "--workspace", str(ws), "--no-schedule",
                    "--check-every", "0", *extra], env, log)
    inspect = [str(VENV_BIN / "prefect"), "deployment", "inspect", "train-alexnet/train-alexnet"]
    wait_until(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0,
               120, "deployment", served, log)
    return served


def start_run(env: dict, ws: Path) -> str:
    created = run([str(VENV_BIN / "prefect"), "deployment", "run", "train-alexnet/train-alexnet"],
                  ws, env=env).stdout
    return re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)


def read_run(api: str, run_id: str):
    with sync_client(api) as client:
        return client.read_flow_run(run_id)


def run_processes(run_id: str) -> list[psutil.Process]:
    """Every live process carrying this flow run's marker in its environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_MARKER) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def checkpoint_epoch(ws: Path) -> int:
    state = ws / "models/checkpoints/state.json"
    return json.loads(state.read_text())["epoch"] if state.is_file() else 0


def wait_training(run_id: str, ws: Path, served, log: Path, min_epoch: int) -> list[psutil.Process]:
    """The run's processes once both Horovod workers train and `min_epoch` epochs are saved,
    plus the flow-run process (the guard's parent)."""
    def training():
        procs = run_processes(run_id)
        workers = [p for p in procs if "alexnet.distributed" in p.cmdline()[2:3]]
        return procs if len(workers) == 2 and checkpoint_epoch(ws) >= min_epoch else None

    procs = wait_until(training, 600, "training", served, log, every=0.5)
    guard_py = os.path.abspath(tasks.guard.__file__)
    guard = next(p for p in procs if p.cmdline()[2:3] == [guard_py])
    return [*procs, psutil.Process(guard.ppid())]


def wait_gone(run_id: str, procs: list[psutil.Process], log: Path, t0: float) -> float:
    """Seconds from `t0` until none of `procs` and no process with the run's marker is left."""
    while alive(procs) or run_processes(run_id):
        if time.monotonic() - t0 > 120:
            raise AssertionError(f"still running after 120 s: {alive(procs)}\n"
                                 f"{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return time.monotonic() - t0


def assert_nothing_written(ws: Path, lock_before: str, epochs_done: int) -> None:
    assert (ws / "dvc.lock").read_text() == lock_before  # no dvc.lock entry for train
    assert "train" not in yaml.safe_load(lock_before)["stages"]
    assert not (ws / "models/candidate/model.keras").exists()
    assert not (ws / "models/champion").exists() and not (ws / "reports/promotion.json").exists()
    assert run(["dvc", "exp", "list", "--name-only"], ws).stdout.split() == []  # no record
    assert checkpoint_epoch(ws) >= epochs_done  # the checkpoint stays, for the next run
    rwlock = ws / ".dvc/tmp/rwlock"  # DVC ended through its own error path: no stale lock
    assert not rwlock.exists() or not any(json.loads(rwlock.read_text()).values())


def wait_state(api: str, run_id: str, what: str, served, log: Path):
    return wait_until(lambda: (s := read_run(api, run_id).state).is_final() and s, 60, what,
                      served, log)


def test_cancel_and_crash_end_every_process_and_the_next_run_resumes(tmp_path, prefect_server):
    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    ws = make_workspace(tmp_path / "ws", overrides={"train.epochs": EPOCHS})
    log = tmp_path / "serve.log"
    served = serve(env, ws, log)
    try:
        # Cancel (`prefect flow-run cancel`, as from the UI) while training.
        first = start_run(env, ws)
        procs = wait_training(first, ws, served, log, min_epoch=1)
        lock_before, at_cancel = (ws / "dvc.lock").read_text(), checkpoint_epoch(ws)
        run([str(VENV_BIN / "prefect"), "flow-run", "cancel", first], ws, env=env)
        seconds = wait_gone(first, procs, log, time.monotonic())
        print(f"cancel -> last process of the run gone: {seconds:.1f} s")
        assert seconds < BOUND_SECONDS
        assert wait_state(api, first, "the Cancelled state", served, log).is_cancelled()
        cancelled_at = checkpoint_epoch(ws)
        # Training stopped before its end, with room left for the crash below.
        assert at_cancel <= cancelled_at <= EPOCHS - 3
        assert_nothing_written(ws, lock_before, cancelled_at)

        # A crash: the flow-run process is killed outright, once the next run trained an epoch.
        second = start_run(env, ws)
        procs = wait_training(second, ws, served, log, min_epoch=cancelled_at + 1)
        at_crash = checkpoint_epoch(ws)
        procs[-1].kill()  # the flow-run process
        seconds = wait_gone(second, procs, log, time.monotonic())
        print(f"crash -> last process of the run gone: {seconds:.1f} s")
        assert seconds < BOUND_SECONDS
        assert wait_state(api, second, "the Crashed state", served, log).is_crashed()
        crashed_at = checkpoint_epoch(ws)
        assert at_crash <= crashed_at <= EPOCHS - 1
        assert_nothing_written(ws, lock_before, crashed_at)

        third = start_run(env, ws)
        done = wait_until(lambda: (r := read_run(api, third)).state.is_final() and r, 900,
                          "the next run", served, log, every=3)
        assert done.state.is_completed(), (done.state, log.read_text()[-3000:])
        from prefect.client.schemas.filters import (LogFilter, LogFilterFlowRunId,
                                                    LogFilterTextSearch)

        with sync_client(api) as client:
            resumed = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[third]),
                                                 text=LogFilterTextSearch(query="resuming")))
        assert any(f"resuming from epoch {crashed_at} of {EPOCHS}" in r.message
                   for r in resumed), [r.message for r in resumed]
        assert (ws / "models/champion/model.keras").is_file()
    finally:
        stop(served)


def test_timeout_and_shutdown_end_every_process(tmp_path, prefect_server):
    """--timeout-hours: the run ends TimedOut while training, and its processes with it. Then
    one SIGTERM to the serving process while a run trains: it cancels the run and exits."""
    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    # Not 100, the reference default: on the built-in sample the flow's demo settings replace a
    # key still at its default (flows.workspace.demo_settings), and 10 epochs end before 90 s.
    ws = make_workspace(tmp_path / "ws", overrides={"train.epochs": 99})
    run(["dvc", "repro", "preprocess"], ws)  # so that the timeout lands in training
    log = tmp_path / "serve.log"
    timeout_s = 90
    served = serve(env, ws, log, "--timeout-hours", str(timeout_s / 3600))
    try:
        first = start_run(env, ws)
        procs = wait_training(first, ws, served, log, min_epoch=0)
        lock_before = (ws / "dvc.lock").read_text()
        started = read_run(api, first).start_time.timestamp()
        assert time.time() < started + timeout_s, "training started after the timeout"
        wait_until(lambda: time.time() > started + timeout_s, timeout_s, "the timeout", served,
                   log, every=0.2)
        seconds = wait_gone(first, procs, log, time.monotonic())
        print(f"timeout -> last process of the run gone: {seconds:.1f} s")
        assert seconds < BOUND_SECONDS
        assert wait_state(api, first, "the TimedOut state", served, log).name == "TimedOut"
        assert_nothing_written(ws, lock_before, 0)

        second = start_run(env, ws)
        procs = wait_training(second, ws, served, log, min_epoch=0)
        t0 = time.monotonic()
        os.kill(served.pid, signal.SIGTERM)  # the process only, as a service manager does
        seconds = wait_gone(second, procs, log, t0)
        served.wait(timeout=BOUND_SECONDS + 15)  # Prefect gives a run 30 s, then SIGKILL
        print(f"SIGTERM to serve -> last process of the run gone: {seconds:.1f} s, serve gone "
              f"after {time.monotonic() - t0:.1f} s")
        assert seconds < BOUND_SECONDS
        assert read_run(api, second).state.is_cancelled()
        assert_nothing_written(ws, lock_before, 0)
    finally:
        stop(served)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_serving(tmp_path, prefect_server, sig):
    """What a service manager (SIGTERM) or Ctrl-C (SIGINT) sends, once, to the main process."""
    ws = make_workspace(tmp_path / "ws")
    log = tmp_path / "serve.log"
    served = serve(prefect_server, ws, log)
    try:
        children = psutil.Process(served.pid).children(recursive=True)
        os.kill(served.pid, sig)
        served.wait(timeout=30)
        assert not alive(children)
    finally:
        stop(served)
