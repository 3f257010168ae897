"""`alexnet train`: launch the Horovod workers (alexnet/distributed.py) with horovodrun.

    horovodrun -np {train.workers} -H {train.hosts} --gloo python -m alexnet.distributed ...

The launcher owns what a single worker cannot know: how many processes, on which hosts, how long
to wait for a dead peer, and what the workers' exit codes mean for the pipeline (a NaN loss is a
permanent failure; a worker killed by a signal is transient and a rerun resumes from the last
checkpoint).

Stopping it (SIGTERM, or SIGINT/Ctrl-C) stops the workers too: the signal is forwarded to
horovodrun, whose shutdown handler makes each worker's middleman (the worker's own session)
SIGTERM the worker and SIGKILL it 5 s later; if horovodrun is not gone after STOP_SECONDS, this
kills it and every process it started, in whatever process group. Then it exits 128 + signal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from alexnet.errors import (EXIT_CONFIG, EXIT_DATA, EXIT_TRANSIENT, ConfigError, PipelineError,
                            TrainingError, TransientError)
from alexnet.hardware import host_gpu_count, resolve_workers
from alexnet.params import TrainParams

_logger = logging.getLogger(__name__)

# A dead peer must end the job, not hang it: Horovod's stall check warns after this many seconds
# and shuts the job down after the second; Gloo's collective timeout bounds a lost connection.
TIMEOUTS = {
    "HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
    "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "120",
    "HOROVOD_GLOO_TIMEOUT_SECONDS": "120",
}
_EXIT_LINE = re.compile(r"Process (\d+) exit with status code (-?\d+)")
# The last line a rank writes to stderr before dying: "error: ..." from distributed.main, or the
# last line of a traceback.
# After forwarding a stop signal: how long horovodrun gets to stop its workers (its middlemen
# need up to 2 x 5 s) before it and everything it started are killed.
STOP_SECONDS = 12.0
_RANK_ERROR = re.compile(r"\[(\d+)\]<stderr>:((?:error: |\w+(?:\.\w+)*(?:Error|Exception): ).*)")


def hosts_spec(p: TrainParams) -> str:
    """-H argument: "localhost" means all workers here; otherwise the user's host:slots list."""
    return f"localhost:{p.workers}" if p.hosts == "localhost" else p.hosts


def horovodrun_command(p: TrainParams, worker_args: list[str]) -> list[str]:
    horovodrun = shutil.which("horovodrun", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                                f"{os.environ.get('PATH', '')}")
    if horovodrun is None:
        raise TrainingError("horovodrun not found: install Horovod (see README, `make setup`)")
    return [horovodrun, "-np", str(p.workers), "-H", hosts_spec(p), "--gloo",
            "--start-timeout", "120", sys.executable, "-m", "alexnet.distributed", *worker_args]


# Horovod (gloo_run.py, _slot_info_to_command_fn) puts every exported variable of its environment
# into each rank's command as `env K=V ...`; for a remote host that is the ssh command line, which
# `ps` shows to every user of both machines. The workers need none of these.
_SECRET = re.compile(r"AWS_|.*(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE_?KEY)",
                     re.IGNORECASE)
# What Horovod's `cd {pwd} > /dev/null 2>&1 ; cmd` on a remote host reads as one plain path: it
# does not quote pwd.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/+-]+")


def remote_hosts(p: TrainParams) -> list[str]:
    """The hosts Horovod starts ranks on over SSH: by its own rule, those whose address is not
    one of this machine's (127.0.0.2 is remote, 127.0.0.1 is not)."""
    from horovod.runner.util.network import filter_local_addresses  # psutil only, no TF

    return filter_local_addresses([h.rpartition(":")[0] for h in hosts_spec(p).split(",")])


def worker_env(environ: dict[str, str], remote: bool) -> dict[str, str]:
    """The environment horovodrun exports to the ranks: all of it when every host is this
    machine, else all but secrets (AWS keys, tokens, passwords, API keys)."""
    return {k: v for k, v in environ.items() if not (remote and _SECRET.match(k))}


def check_remote_cwd(cwd: str, remote: list[str]) -> None:
    """Refuse (ConfigError) a working directory that Horovod's unquoted `cd` on a remote host
    would split or expand."""
    if remote and not _PLAIN_PATH.fullmatch(cwd):
        raise ConfigError(f"working directory {cwd!r}: horovodrun runs `cd` to it unquoted on "
                          f"{', '.join(remote)}, so it may hold only letters, digits and ._/+-; "
                          "move the workspace to such a path (the same on every host)")


class Stopped(PipelineError):
    """`alexnet train` was told to stop (SIGTERM/SIGINT); exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.exit_code = 128 + signum
        super().__init__(f"training stopped by {signal.Signals(signum).name}; the workers are "
                         "gone and the next run resumes from the last completed epoch")


class SignalForwarder:
    """While horovodrun runs: SIGTERM/SIGINT to this process go to horovodrun, and after
    `stop_seconds` whatever is left of it and of its workers is killed."""

    def __init__(self, stop_seconds: float = STOP_SECONDS) -> None:
        self.stop_seconds = stop_seconds
        self.proc: subprocess.Popen | None = None
        self.signum: int | None = None
        self._timer: threading.Timer | None = None
        self._tree: list[psutil.Process] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "SignalForwarder":
        # Signal handlers exist only in the main thread; elsewhere the caller's handling stands.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._timer is not None:
            self._timer.cancel()
        if self.signum is not None:
            self.kill()  # horovodrun has exited; a worker must not outlive it

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        if self.signum is not None:  # a signal came while horovodrun was starting
            self._forward()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            _logger.warning("received %s: stopping the training workers",
                            signal.Signals(signum).name)
            if self.proc is not None:
                self._forward()

    def _forward(self) -> None:
        assert self.proc is not None and self.signum is not None
        self._tree = _tree(self.proc.pid)  # the workers, while horovodrun still links to them
        try:
            self.proc.send_signal(self.signum)
        except ProcessLookupError:
            pass
        self._timer = threading.Timer(self.stop_seconds, self.kill)
        self._timer.daemon = True
        self._timer.start()

    def kill(self) -> None:
        """SIGKILL horovodrun and every process it started (the workers are in other sessions,
        so a process-group kill would miss them)."""
        if self.proc is None:
            return
        # Only a horovodrun not yet reaped can be looked up by pid (a reaped pid may be reused).
        current = _tree(self.proc.pid) if self.proc.poll() is None else []
        alive = [p for p in {*self._tree, *current} if _alive(p)]
        if alive:
            _logger.warning("killing %d leftover training process(es)", len(alive))
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree(pid: int) -> list[psutil.Process]:
    """`pid` and its descendants (psutil.Process compares by pid and start time: no reuse)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rank_errors(errors: dict[int, str]) -> str:
    """'ranks 0, 1: error: X; rank 2: error: Y': each distinct message once, with its ranks
    (e.g. every rank stops with the same message when the hosts' caches differ)."""
    ranks: dict[str, list[str]] = {}
    for rank, error in sorted(errors.items()):
        ranks.setdefault(error, []).append(str(rank))
    return "; ".join(f"rank{'s' if len(r) > 1 else ''} {', '.join(r)}: {e}"
                     for e, r in ranks.items())


def resolved(p: TrainParams) -> TrainParams:
    """`p` with `train.workers: auto` replaced by this host's number (alexnet.hardware); raises
    ParamsError (exit 78) when the global batch cannot be split that many ways."""
    if p.workers != "auto":
        return p
    n = resolve_workers(p.workers, host_gpu_count(), p.hosts, p.batch_size)
    _logger.info("train.workers: auto -> %d", n)
    return dataclasses.replace(p, workers=n)


def launch(p: TrainParams, params_path: Path, cache_dir: Path, model_dir: Path,
           checkpoint_dir: Path, live_dir: Path) -> None:
    """Run the workers to completion; raise TrainingError/TransientError on failure, Stopped
    when told to stop."""
    p = resolved(p)
    args = ["--params", str(params_path), "--cache", str(cache_dir), "--model-dir", str(model_dir),
            "--checkpoint-dir", str(checkpoint_dir), "--live-dir", str(live_dir)]
    cmd = horovodrun_command(p, args)
    remote = remote_hosts(p)
    check_remote_cwd(os.getcwd(), remote)
    env = {**TIMEOUTS, **worker_env(dict(os.environ), bool(remote)), "PYTHONUNBUFFERED": "1"}
    _logger.info("starting %d worker(s): %s", p.workers, " ".join(cmd))
    first_failure: int | None = None
    last_error: dict[int, str] = {}
    with SignalForwarder() as forwarder, \
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, bufsize=1) as proc:
        forwarder.started(proc)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                if first_failure is None and (m := _EXIT_LINE.search(line)) and m.group(2) != "0":
                    first_failure = int(m.group(2))  # horovodrun then SIGTERMs the other ranks
                if m := _RANK_ERROR.match(line):
                    last_error[int(m.group(1))] = m.group(2).strip()
        except BaseException:  # e.g. our stdout is gone: nobody is left to report to
            forwarder.kill()
            raise
    if forwarder.signum is not None:
        raise Stopped(forwarder.signum)
    if proc.returncode == 0:
        return
    reason = rank_errors(last_error) or "see the log above"
    if first_failure == EXIT_DATA:
        raise TrainingError(f"training failed: {reason}")
    if first_failure == EXIT_CONFIG:  # e.g. a worker refused an output directory
        raise ConfigError(f"training refused its configuration: {reason}")
    if first_failure is None or first_failure < 0 or first_failure >= 128 \
            or first_failure == EXIT_TRANSIENT:
        raise TransientError(
            f"a training worker died (exit code {first_failure}; horovodrun {proc.returncode}): "
            f"{reason}. Rerun the stage to resume from the last completed epoch.")
    raise TrainingError(f"a training worker failed with exit code {first_failure}: {reason}")
