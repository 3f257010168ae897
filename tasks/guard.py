"""Run one stage command so that none of its processes outlives the flow run that started it.

    python -I tasks/guard.py --parent PID -- dvc repro --single-item train

tasks/stages.py starts this guard in a session of its own (its output goes to the task's pipe);
the guard starts the command in a process group of its own and waits for it. The command's
processes are stopped when:

- the task stops the stage (Prefect cancels the run, the flow times out, Ctrl-C, any exception
  in the flow-run process): the task sends the guard SIGTERM;
- the flow-run process dies without a chance to do that (SIGKILL after Prefect's grace period,
  the OOM killer, a crash): the kernel sends the guard SIGTERM (prctl PR_SET_PDEATHSIG). The
  guard sets that on itself, so nothing runs between fork and exec in the multi-threaded
  flow-run process (no preexec_fn). PDEATHSIG fires when the *thread* that started the guard
  ends; that thread is inside run_stage until the guard exits, so it fires only when the
  process dies. A parent that died before prctl is caught by comparing getppid() to --parent.

Stopping: SIGINT to the command's process group, which is what Ctrl-C in a terminal does to
`dvc repro`: DVC ignores it while the stage command runs and, once the command has failed,
exits through its own error path, releasing its locks and writing no dvc.lock entry; `alexnet
train` forwards it to horovodrun, which stops the Horovod workers (they run in sessions of
their own). Then up to GRACE_SECONDS for every descendant to end, then SIGKILL to whatever is
left, in any session. The guard is a child subreaper (PR_SET_CHILD_SUBREAPER): processes
orphaned when dvc or horovodrun dies are re-parented to it instead of init, so "no child left"
means no process of the stage is left. It acts before it reports: its output is a pipe to the
flow-run process, broken once that process is dead, so a report never fails a stop (`_say`).

Stdlib + psutil only (psutil comes with dvc and horovod): it must start in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Iterator

import psutil

GRACE_SECONDS = 15.0  # stop -> SIGKILL; well under the 30 s Prefect gives a run before SIGKILL
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# Descriptors a guard started meanwhile keeps open until its stage's last process is gone: the
# workspace lock (flows.workspace.workspace_lock), so that a flow-run process that dies does not
# free the workspace for the next run while its stages are still being stopped. The guard's own
# child does not inherit them (Popen closes descriptors by default).
HELD_FDS: set[int] = set()


@contextlib.contextmanager
def held_by_stages(fd: int) -> Iterator[None]:
    """While the block runs, every guard started (tasks.stages.start_stage) holds `fd` too."""
    HELD_FDS.add(fd)
    try:
        yield
    finally:
        HELD_FDS.discard(fd)


class Stop(Exception):
    """Raised by the signal handler: the stage must end now."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum: int, _frame: object) -> None:
    # Ignore further stop signals first (the task's SIGTERM and PDEATHSIG's can both come): a
    # second Stop must not interrupt the stopping.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stop(signum)


def _say(message: str) -> None:
    """One line to stderr, only once the stage's processes are signalled: stderr is the pipe to
    the flow-run process, broken (EPIPE) once that process is dead, and full with no reader
    while the task waits for the guard. So: unbuffered, non-blocking when stderr is a pipe (the
    stage no longer uses it; a terminal is left as it is: the flag would be the terminal's, for
    every program writing to it), never raising, dropped if it cannot be written."""
    try:
        fd = sys.stderr.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, False)
        os.write(fd, f"{message}\n".encode())
    except (OSError, ValueError):
        pass


def prctl(option: int, value: int) -> bool:
    """Linux prctl(2); False where it does not exist (the guard then only stops on a signal)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap() -> bool:
    """Collect exited children without blocking; True while any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def stop_all(pgid: int | None, grace: float) -> None:
    """Ctrl-C to the command's group (or SIGTERM to every descendant when there is no group:
    leftovers), up to `grace` s for all of them to end, then SIGKILL to every descendant."""
    if pgid is not None:
        _killpg(pgid, signal.SIGINT)
    else:
        _signal_descendants(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while reap() and time.monotonic() < deadline:
        time.sleep(0.1)
    if reap():
        if pgid is not None:
            _killpg(pgid, signal.SIGKILL)
        _signal_descendants(signal.SIGKILL)
        _say(f"still running after {grace:.0f} s: killed")
        deadline = time.monotonic() + 5.0
        while reap() and time.monotonic() < deadline:
            time.sleep(0.1)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _signal_descendants(sig: int) -> None:
    for proc in psutil.Process().children(recursive=True):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def run(cmd: list[str], parent: int, grace: float = GRACE_SECONDS) -> int:
    """Run `cmd` to completion; its exit code, or 128 + signal number if it was stopped."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    pgid = None
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the flow-run process died before prctl took effect
            raise Stop(signal.SIGTERM)
        child = subprocess.Popen(cmd, process_group=0)
        pgid = child.pid
        code = child.wait()
        # Anything the command left behind (re-parented to this subreaper) ends with it.
        if reap():
            stop_all(None, grace)
        return code
    except Stop as stop:
        stop_all(pgid, grace)
        _say(f"stage stopped ({stop}): its processes are gone")
        return 128 + stop.signum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True,
                        help="pid of the process that started the guard; its death stops the stage")
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS,
                        help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command")
    return run(cmd, args.parent, args.grace)


if __name__ == "__main__":
    sys.exit(main())
