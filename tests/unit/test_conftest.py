"""tests/conftest.py's `run`: a command that times out is stopped with everything it started (a
`dvc repro train` left behind would keep horovodrun and its ranks training on 2 shared cores)."""

import subprocess

import psutil
import pytest

from tests.conftest import run


def test_a_command_that_times_out_leaves_no_process_behind(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run(["sh", "-c", f'sleep 120 & echo $! > {pidfile}; wait'], tmp_path, timeout=1)
    child = int(pidfile.read_text())
    try:
        assert psutil.Process(child).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped
    except psutil.NoSuchProcess:
        pass
