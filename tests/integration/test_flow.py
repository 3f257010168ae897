"""The train-alexnet flow runs every stage through DVC on the real Prefect engine."""

import json
import re

import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.train_alexnet import train_alexnet
from tests.conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_every_stage_and_publishes_artifacts(workspace, prefect_api):
    state = train_alexnet(overrides={"train.epochs": 1}, workspace=str(workspace),
                          return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["report"].endswith("reports/report.html") and result["promoted"] is True
    html = (workspace / "reports/report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html
    assert json.loads((workspace / "reports/metrics.json").read_text())["n_test"] > 0
    # The flow ran through DVC: the workspace is exactly what dvc.lock says.
    assert "up to date" in run(["dvc", "status"], workspace).stdout
    second = run(["dvc", "repro"], workspace)
    assert not re.findall(r"Running stage", second.stdout)

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"validation", "split", "test-metrics", "train-alexnet-summary"} <= keys


def test_bad_override_fails_before_any_stage(workspace, prefect_api):
    state = train_alexnet(overrides={"train.epoks": 1}, workspace=str(workspace),
                          return_state=True)
    assert state.is_failed()
    assert not (workspace / "data/raw").exists()
