"""A real `prefect server start` on 127.0.0.1, the served deployments, and
`prefect deployment run train-alexnet/train-alexnet`; every process stopped by its id."""

from __future__ import annotations

import re
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
        assert deployment.parameters == {}  # the workspace is bound when serving, not per run
        check = read_deployment(env["PREFECT_API_URL"], "check-new-data/check-new-data")
        assert [s.schedule.interval.total_seconds() for s in check.schedules] == [600]
        # Two runs requested at once: the concurrency limit makes the second wait for the first,
        # so they never share the DVC workspace.
        ids = []
        for _ in range(2):
            created = run([str(VENV_BIN / "prefect"), "deployment", "run",
                           "train-alexnet/train-alexnet", "--params",
                           '{"overrides": {"train.epochs": 1}}'], ws, env=env).stdout
            ids.append(re.search(r"UUID: ([0-9a-f-]{36})", created).group(1))

        def finished():
            with sync_client(env["PREFECT_API_URL"]) as client:
                runs = [client.read_flow_run(i) for i in ids]
            return runs if all(r.state.is_final() for r in runs) else None

        runs = wait_until(finished, 900, "two flow runs", served, log, every=3)
        first, second = sorted(runs, key=lambda r: r.start_time)
        assert first.state.is_completed() and second.state.is_completed(), (first.state, second.state)
        assert second.start_time >= first.end_time  # queued, not overlapping
        assert (ws / "reports/report.html").is_file()
        assert (ws / "models/champion/model.keras").is_file()
        # Recorded: one DVC experiment per run, named after the flow run (tasks/record.py).
        experiments = run(["dvc", "exp", "list", "--name-only"], ws).stdout.split()
        assert sorted(experiments) == sorted([first.name, second.name])
    finally:
        stop(served)
