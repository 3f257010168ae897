"""A real `prefect server start` on 127.0.0.1, the served deployment, and
`prefect deployment run train-alexnet/train-alexnet --watch`; every process stopped by its id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, make_workspace, run, tool_env

pytestmark = [pytest.mark.server, pytest.mark.slow]


def read_deployment(api_url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_deployment_by_name("train-alexnet/train-alexnet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # Own process group, so stopping it also stops the subprocesses it started.
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited {proc.returncode}\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(1)
    raise AssertionError(f"{what}: not ready after {timeout}s\n{log.read_text()[-3000:]}")


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"),
                   PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                   PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    log = tmp_path / "server.log"
    server = start([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                    "--port", str(port)], env, log)
    try:
        url = f"http://127.0.0.1:{port}/api/health"
        wait_until(lambda: urllib.request.urlopen(url, timeout=5).status == 200, 180,
                   "prefect server", server, log)
        yield env
    finally:
        stop(server)


def test_deployment_run_completes(tmp_path, prefect_server):
    env = prefect_server
    ws = make_workspace(tmp_path / "ws")
    log = tmp_path / "serve.log"
    served = start([sys.executable, "-m", "flows.deploy", "--workspace", str(ws)], env, log)
    try:
        inspect = [str(VENV_BIN / "prefect"), "deployment", "inspect", "train-alexnet/train-alexnet"]
        wait_until(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0,
                   120, "deployment", served, log)
        deployment = read_deployment(env["PREFECT_API_URL"])
        assert deployment.global_concurrency_limit.limit == 1  # runs queue, never share a workspace
        assert deployment.parameters == {"workspace": str(ws)}
        done = run([str(VENV_BIN / "prefect"), "deployment", "run", "train-alexnet/train-alexnet",
                    "--params", '{"overrides": {"train.epochs": 1}}', "--watch",
                    "--watch-timeout", "900"], ws, env=env, timeout=960, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + log.read_text()[-3000:]
        assert "Completed" in done.stdout
        assert (ws / "reports/report.html").is_file()
        assert (ws / "models/champion/model.keras").is_file()
    finally:
        stop(served)
