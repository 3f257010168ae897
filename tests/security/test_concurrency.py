"""Two runs in one workspace: they never interleave, and a lock DVC holds is waited for."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from tasks.stages import run_stage
from tests.conftest import run, tool_env

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def two_stage_project(ws):
    """Stage `a` writes a.txt slowly (from a.in); stage `b` reads a.txt."""
    ws.mkdir()
    slow = "import time, pathlib; time.sleep(12); pathlib.Path('a.txt').write_text(pathlib.Path('a.in').read_text())"
    copy = "import pathlib; pathlib.Path('b.txt').write_text(pathlib.Path('a.txt').read_text())"
    stages = {"a": {"cmd": f'{sys.executable} -c "{slow}"', "deps": ["a.in"], "outs": ["a.txt"]},
              "b": {"cmd": f'{sys.executable} -c "{copy}"', "deps": ["a.txt"], "outs": ["b.txt"]}}
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (ws / "a.in").write_text("1")
    (ws / "a.txt").write_text("1")
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)


@flow
def stage_b(ws):
    return run_stage.with_options(retries=4, retry_delay_seconds=8)("b", ws)


def test_a_dvc_output_busy_in_another_run_is_retried(tmp_path, prefect_api, caplog):
    ws = tmp_path / "ws"
    two_stage_project(ws)
    (ws / "a.in").write_text("2")
    writer = subprocess.Popen(["dvc", "repro", "--single-item", "a"], cwd=ws, env=tool_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rwlock = ws / ".dvc/tmp/rwlock"
        deadline = time.monotonic() + 120
        while not (rwlock.is_file() and "a.txt" in json.loads(rwlock.read_text() or "{}")
                   .get("write", {}).__repr__()):
            assert time.monotonic() < deadline and writer.poll() is None, writer.stdout.read()
            time.sleep(0.2)
        result = stage_b(ws)  # a.txt is being written: b's first try finds it busy
        out, _ = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, out
    assert "is busy, it is being blocked by" in caplog.text
    assert result.ran and (ws / "b.txt").read_text() == "2"  # b read a's finished output
