"""The train-alexnet flow runs every stage through DVC on the real Prefect engine."""

import json
import shutil

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.train_alexnet import DEMO_OVERRIDES, train_alexnet
from flows.workspace import set_params
from tests.conftest import REPO, dvc_up_to_date, run, stages_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_every_stage_and_publishes_artifacts(workspace, prefect_api):
    # A real gate (TINY's min_accuracy is 0): one epoch on the sample is far from 99%.
    state = train_alexnet(overrides={"train.epochs": 1, "promote.min_accuracy": 0.99},
                          workspace=str(workspace), return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["report"].endswith("reports/report.html")
    accuracy = json.loads((workspace / "reports/metrics.json").read_text())["accuracy"]
    decision = json.loads((workspace / "reports/promotion.json").read_text())["promoted"]
    assert result["accuracy"] == accuracy
    assert result["promoted"] is decision is (accuracy >= 0.99)  # the gate's own verdict
    assert (workspace / "models/champion/model.keras").exists() is decision
    html = (workspace / "reports/report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html
    assert json.loads((workspace / "reports/metrics.json").read_text())["n_test"] > 0
    # The flow ran through DVC: the workspace is exactly what dvc.lock says.
    assert dvc_up_to_date(workspace)
    second = run(["dvc", "repro"], workspace)
    assert stages_run(second.stdout) == ["ingest"]  # always; it found nothing new

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"validation", "split", "test-metrics", "train-alexnet-summary"} <= keys


def test_bad_override_fails_before_any_stage(workspace, prefect_api):
    state = train_alexnet(overrides={"train.epoks": 1}, workspace=str(workspace),
                          return_state=True)
    assert state.is_failed()
    assert not (workspace / "data/raw").exists()


def params_only(path, overrides=None):
    """A folder holding this project's params.yaml (reference defaults) and no pipeline: the
    flow settles its params, then stops at its first stage (`dvc repro` finds no project)."""
    path.mkdir()
    shutil.copy2(REPO / "params.yaml", path / "params.yaml")
    if overrides:
        set_params(path, overrides)
    return path


def flat(params, dotted):
    node = params
    for key in dotted.split("."):
        node = node[key]
    return node


def test_the_flow_itself_gives_the_sample_its_demo_settings(tmp_path, prefect_api):
    # However the flow is started (make run, a deployment, a schedule, the new-data trigger), it
    # is this function that runs; the caller's explicit override still wins.
    ws = params_only(tmp_path / "ws")
    state = train_alexnet(overrides={"train.epochs": 3}, workspace=str(ws), return_state=True)
    assert state.is_failed()  # no dvc.yaml here: it stops at ingest, after writing params.yaml
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert flat(params, "train.epochs") == 3
    for key, value in DEMO_OVERRIDES.items():
        if key != "train.epochs":
            assert flat(params, key) == value, key
    assert flat(params, "train.workers") == "auto"  # not a demo setting: as it was
    assert (ws / "data/sample").is_dir()


def test_own_data_and_own_choices_get_no_demo_settings(tmp_path, prefect_api):
    own = params_only(tmp_path / "own", {"ingest.source": "data/mine"})
    before = (own / "params.yaml").read_text()
    assert train_alexnet(workspace=str(own), return_state=True).is_failed()
    assert (own / "params.yaml").read_text() == before

    chosen = params_only(tmp_path / "chosen", {"preprocess.image_size": 128})
    assert train_alexnet(workspace=str(chosen), return_state=True).is_failed()
    params = yaml.safe_load((chosen / "params.yaml").read_text())
    assert flat(params, "preprocess.image_size") == 128  # set in params.yaml: kept
    assert flat(params, "train.epochs") == DEMO_OVERRIDES["train.epochs"]
