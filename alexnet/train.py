"""`alexnet train`: launch the Horovod workers (alexnet/distributed.py) with horovodrun.

    horovodrun -np {train.workers} -H {train.hosts} --gloo python -m alexnet.distributed ...

The launcher owns what a single worker cannot know: how many processes, on which hosts, how long
to wait for a dead peer, and what the workers' exit codes mean for the pipeline (a NaN loss is a
permanent failure; a worker killed by a signal is transient and a rerun resumes from the last
checkpoint).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from alexnet.errors import EXIT_DATA, EXIT_TRANSIENT, TrainingError, TransientError
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


def launch(p: TrainParams, params_path: Path, cache_dir: Path, model_dir: Path,
           checkpoint_dir: Path, live_dir: Path) -> None:
    """Run the workers to completion; raise TrainingError/TransientError on failure."""
    args = ["--params", str(params_path), "--cache", str(cache_dir), "--model-dir", str(model_dir),
            "--checkpoint-dir", str(checkpoint_dir), "--live-dir", str(live_dir)]
    cmd = horovodrun_command(p, args)
    env = {**TIMEOUTS, **os.environ, "PYTHONUNBUFFERED": "1"}
    _logger.info("starting %d worker(s): %s", p.workers, " ".join(cmd))
    first_failure: int | None = None
    last_error: dict[int, str] = {}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            if first_failure is None and (m := _EXIT_LINE.search(line)) and m.group(2) != "0":
                first_failure = int(m.group(2))  # horovodrun then SIGTERMs the other ranks
            if m := _RANK_ERROR.match(line):
                last_error[int(m.group(1))] = m.group(2).strip()
    if proc.returncode == 0:
        return
    reason = "; ".join(f"rank {r}: {e}" for r, e in sorted(last_error.items())) or "see the log above"
    if first_failure == EXIT_DATA:
        raise TrainingError(f"training failed: {reason}")
    if first_failure is None or first_failure < 0 or first_failure >= 128 \
            or first_failure == EXIT_TRANSIENT:
        raise TransientError(
            f"a training worker died (exit code {first_failure}; horovodrun {proc.returncode}): "
            f"{reason}. Rerun the stage to resume from the last completed epoch.")
    raise TrainingError(f"a training worker failed with exit code {first_failure}: {reason}")
