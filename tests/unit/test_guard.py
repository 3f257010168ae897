"""tasks/guard.py with real processes (seconds): a stage's whole process tree ends when the
flow-run process dies or stops it, including processes in other sessions (as Horovod's workers
are) and processes that ignore SIGINT/SIGTERM (killed after the grace period)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import tasks.guard

GUARD = os.path.abspath(tasks.guard.__file__)
# A stage-like tree: a shell in the guard's group, a child in a session of its own (like a
# Horovod worker's middleman), and one that ignores SIGINT and SIGTERM.
TREE = ("setsid sleep 300 & "
        "python3 -c 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)' & "
        "echo started; wait")
# The flow-run process's stand-in: starts the guard as tasks/stages.py does, then waits.
PARENT = ("import os, subprocess, sys, time\n"
          "subprocess.Popen([sys.executable, '-I', sys.argv[1], '--parent', str(os.getpid()),"
          " '--grace', '3', '--', 'sh', '-c', sys.argv[2]], start_new_session=True)\n"
          "time.sleep(300)\n")


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("GUARD_TEST") == marker and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def wait_for(check, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.parametrize("how", ["crash", "stop"])
def test_the_stage_tree_ends_with_its_parent(tmp_path, how):
    marker = f"{os.getpid()}-{how}"
    env = {**os.environ, "GUARD_TEST": marker}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, GUARD, TREE], env=env,
                              start_new_session=True)
    try:
        wait_for(lambda: len(marked(marker)) >= 5, 20)  # guard, sh, setsid sleep, python3 (+sleep)
        guard = next(p for p in marked(marker) if GUARD in p.cmdline())
        if how == "crash":
            parent.kill()  # SIGKILL: the parent gets no chance to stop anything
        else:
            guard.send_signal(signal.SIGTERM)  # what run_stage does when interrupted
        seconds = wait_for(lambda: not marked(marker), 20)
        assert seconds < 3 + 5  # the grace period, then SIGKILL
    finally:
        for proc in [psutil.Process(parent.pid)] if parent.poll() is None else []:
            proc.kill()
        for proc in marked(marker):
            proc.kill()


def test_exit_code_is_the_commands(tmp_path):
    done = subprocess.run([sys.executable, "-I", GUARD, "--parent", str(os.getpid()), "--",
                           "sh", "-c", "echo out; exit 3"], capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout) == (3, "out\n")


def test_a_dead_parent_stops_the_command_before_it_starts(tmp_path):
    flag = tmp_path / "ran"
    done = subprocess.run([sys.executable, "-I", GUARD, "--parent", "1", "--", "touch",
                           str(flag)], timeout=30)
    assert done.returncode == 128 + signal.SIGTERM and not flag.exists()


def test_a_full_output_pipe_does_not_hold_up_the_stop(tmp_path):
    """The task stops reading the guard's output when it stops the guard (stop_guard): a stage
    that filled the pipe must not leave the guard blocked writing its report, never stopping."""
    proc = subprocess.Popen([sys.executable, "-I", GUARD, "--parent", str(os.getpid()), "--grace",
                             "3", "--", "sh", "-c", "head -c 1000000 /dev/zero; sleep 300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    guard = psutil.Process(proc.pid)
    try:
        wait_for(lambda: any(p.name() == "head" and p.status() == psutil.STATUS_SLEEPING
                             for p in guard.children(recursive=True)), 20)  # the pipe is full
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM  # its output still unread
    finally:
        for child in guard.children(recursive=True) if proc.poll() is None else []:
            child.kill()
        proc.kill()
        proc.wait()
        proc.stdout.close()


# A flow-run process that holds the workspace lock and runs one stage, as train_alexnet does.
LOCKED_PARENT = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from flows.workspace import workspace_lock\n"
    "from tasks.stages import start_stage\n"
    "with workspace_lock(Path(sys.argv[1]), 'test run'):\n"
    "    start_stage(['python3', '-c', sys.argv[2]], Path(sys.argv[1]))\n"
    "    print('started', flush=True)\n"
    "    time.sleep(300)\n")
IGNORES_SIGINT = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "time.sleep(300)")
STAGE = ["python3", "-c", IGNORES_SIGINT]


def ignores_sigint(proc: psutil.Process) -> bool:
    """The stage is running and has set SIGINT to SIG_IGN (/proc/PID/status SigIgn)."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            ignored = next(int(ln.split()[1], 16) for ln in fh if ln.startswith("SigIgn:"))
        return proc.cmdline() == STAGE and bool(ignored >> (signal.SIGINT - 1) & 1)
    except (psutil.Error, OSError):
        return False


def test_a_dead_run_keeps_the_workspace_until_its_stage_is_gone(tmp_path):
    """The flow-run process dies: its stage takes the guard's grace period to stop, and no other
    run may take the workspace (and rewrite params.yaml) before the stage's last process ends.
    The guard's output is a pipe to the dead process: reporting must not stop it stopping."""
    import fcntl

    marker = f"{os.getpid()}-lock"
    env = {**os.environ, "GUARD_TEST": marker}
    parent = subprocess.Popen([sys.executable, "-c", LOCKED_PARENT, str(tmp_path), IGNORES_SIGINT],
                              env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == "started"
        # The stage itself, past its SIG_IGN (the parent and the guard carry the marker too).
        wait_for(lambda: any(ignores_sigint(p) for p in marked(marker)), 20)
        parent.kill()
        parent.wait()
        with open(tmp_path / ".alexnet/flow.lock") as fh:
            with pytest.raises(BlockingIOError):  # the stage still runs: the workspace is held
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seconds = wait_for(lambda: not marked(marker), tasks.guard.GRACE_SECONDS + 10)
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # all gone: free at once
        assert seconds >= tasks.guard.GRACE_SECONDS - 1  # it ignored SIGINT: killed after grace
    finally:
        for proc in marked(marker):
            proc.kill()


def test_a_report_to_a_terminal_leaves_it_blocking():
    """The guard makes its stderr non-blocking only when it is a pipe: on a terminal the flag
    is the terminal's, and every program writing to it afterwards would get EAGAIN."""
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import os; from tasks.guard import _say; _say('stopped'); "
             "print(os.get_blocking(2))"], stderr=follower, stdout=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(GUARD)), timeout=30)
        assert done.stdout.strip() == "True"
        assert os.read(leader, 100).startswith(b"stopped")
    finally:
        os.close(leader)
        os.close(follower)
