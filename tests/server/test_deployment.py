"""A real `prefect server start` on 127.0.0.1, the served deployments, and
`prefect deployment run train-alexnet/train-alexnet --watch`; every process stopped by its id."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import VENV_BIN, make_workspace, run
from tests.server.conftest import start, stop, sync_client, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]


def read_deployment(api_url: str, name: str = "train-alexnet/train-alexnet"):
    with sync_client(api_url) as client:
        return client.read_deployment_by_name(name)


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
        check = read_deployment(env["PREFECT_API_URL"], "check-new-data/check-new-data")
        assert [s.schedule.interval.total_seconds() for s in check.schedules] == [600]
        done = run([str(VENV_BIN / "prefect"), "deployment", "run", "train-alexnet/train-alexnet",
                    "--params", '{"overrides": {"train.epochs": 1}}', "--watch",
                    "--watch-timeout", "900"], ws, env=env, timeout=960, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + log.read_text()[-3000:]
        assert "Completed" in done.stdout
        assert (ws / "reports/report.html").is_file()
        assert (ws / "models/champion/model.keras").is_file()
        # Recorded: one DVC experiment, named after the flow run (tasks/record.py).
        assert len(run(["dvc", "exp", "list", "--name-only"], ws).stdout.split()) == 1
    finally:
        stop(served)
