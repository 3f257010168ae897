"""Every run ends recorded as a DVC experiment, pushed only when `exp.auto_push` is on, and a
recorded run can be reproduced from its name: `python -m flows.reproduce NAME` (dvc exp apply +
dvc pull), then `dvc repro` retrains the same weights (deterministic mode, one worker). Real
Prefect engine (test harness), real dvc, real horovodrun."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from alexnet.hardware import host_cpu_flags, resolve_precision
from flows.train_alexnet import train_alexnet
from tests.conftest import dvc_up_to_date, make_workspace, run, stages_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DETERMINISTIC = {"train.deterministic": True, "train.workers": 1, "train.epochs": 1,
                 "train.mixed_precision": "auto"}


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def weights(model_dir) -> list[np.ndarray]:
    import tensorflow as tf

    model = tf.keras.models.load_model(model_dir / "model.keras", safe_mode=True, compile=False)
    return model.get_weights()


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, prefect_api):
    """Two flow runs in one workspace, trained once for this module: the first with
    `exp.auto_push` on (a DVC remote `store` and a git remote `origin`), the second, with another
    learning rate, with it off. What each test checks is read here, right after each run; each
    test then works on its own copy (`own_copy`)."""
    tmp = tmp_path_factory.mktemp("recorded")
    ws = make_workspace(tmp / "ws", overrides=DETERMINISTIC)
    run(["git", "init", "-q", "--bare", str(tmp / "origin.git")], ws)
    run(["git", "remote", "add", "origin", str(tmp / "origin.git")], ws)
    # The push switch on (DVC's exp.auto_push), with a DVC remote to push to (README).
    run(["dvc", "remote", "add", "--local", "-d", "store", str(tmp / "store")], ws)
    run(["dvc", "config", "--local", "exp.auto_push", "true"], ws)
    first = train_alexnet(workspace=str(ws), return_state=True)
    assert first.is_completed(), first
    out = SimpleNamespace(ws=ws, first=first.result(), weights=weights(ws / "models/candidate"),
                          lock=(ws / "dvc.lock").read_text(),
                          status_cloud=run(["dvc", "status", "--cloud"], ws).stdout,
                          pushed_refs=run(["git", "ls-remote", "origin"], ws).stdout,
                          first_record=latest_artifact(),
                          first_model=json.loads((ws / "models/candidate/model.json").read_text()))

    # The switch off (the default): the second run, with a different param, is recorded here and
    # nothing leaves the workspace, though origin and the DVC remote are still configured.
    run(["dvc", "config", "--local", "--unset", "exp.auto_push"], ws)
    second = train_alexnet(overrides={"train.learning_rate": 0.001}, workspace=str(ws),
                           return_state=True)
    assert second.is_completed(), second
    out.second, out.second_record = second.result(), latest_artifact()
    return out


def latest_artifact():
    with get_client(sync_client=True) as client:
        return client.read_artifacts(limit=1, sort="CREATED_DESC")[0]


@pytest.fixture
def own_copy(recorded, tmp_path):
    """This test's copy of the recorded workspace (hard links kept, as DVC made them)."""
    ws = tmp_path / "ws"
    run(["cp", "-a", str(recorded.ws), str(ws)], tmp_path)
    return ws


def test_recorded_run_is_reproduced_by_name(recorded, own_copy):
    ws, name = own_copy, recorded.first["experiment"]

    # Recorded: an experiment with this run's params and dvc.lock, outputs on the DVC remote, its
    # git ref on origin, and an artifact that names them.
    assert name in run(["dvc", "exp", "list", "--name-only"], ws).stdout
    assert "in sync" in recorded.status_cloud  # pushed
    assert "refs/exps/" in recorded.pushed_refs and name in recorded.pushed_refs
    record = recorded.first_record
    assert record.key == "run-record" and name in record.data
    assert recorded.first["experiment_commit"] in record.data
    assert "DVC remote `store`" in record.data and "git remote `origin`" in record.data
    # What `auto` resolved to (the module's runs set train.mixed_precision: auto).
    precision = recorded.first_model["resolved"]
    assert precision == {"workers": 1, "mixed_precision":
                         resolve_precision("auto", host_cpu_flags(), [])}
    assert f"train.mixed_precision `{precision['mixed_precision']}`" in record.data
    assert "train.workers `1`" in record.data

    # The second run, with the switch off: recorded here, nothing left the workspace.
    second = recorded.second["experiment"]
    assert second != name
    assert second in run(["dvc", "exp", "list", "--name-only"], ws).stdout
    assert run(["git", "ls-remote", "origin"], ws).stdout == recorded.pushed_refs  # refs unchanged
    assert "in sync" not in run(["dvc", "status", "--cloud"], ws).stdout  # new model not pushed
    record = recorded.second_record
    assert "exp.auto_push` is off" in record.data
    assert str(recorded.ws / ".dvc/cache") in record.data
    assert not same(weights(ws / "models/candidate"), recorded.weights)

    # README "Reproduce a past run", with the local cache emptied so that the outputs must come
    # from the DVC remote.
    shutil.rmtree(ws / ".dvc/cache")
    shutil.rmtree(ws / "models/candidate")
    run(["python", "-m", "flows.reproduce", name], ws)
    assert (ws / "dvc.lock").read_text() == recorded.lock
    assert same(weights(ws / "models/candidate"), recorded.weights)  # restored from the remote

    shutil.rmtree(ws / "models/candidate")
    shutil.rmtree(ws / "models/checkpoints", ignore_errors=True)
    repro = run(["dvc", "repro", "--no-run-cache"], ws)
    assert "Running stage 'train'" in repro.stdout  # retrained, not restored
    assert same(weights(ws / "models/candidate"), recorded.weights)


def test_applying_a_recorded_run_then_repro_is_a_noop(recorded, own_copy):
    """`dvc exp apply NAME` restores a run's params, dvc.lock and outputs; `dvc repro` must then
    find nothing to do (it used to retrain from scratch, issue 18: the checkpoint of the second
    run, in models/checkpoints, was taken for a change)."""
    ws = own_copy
    assert (ws / "dvc.lock").read_text() != recorded.lock  # the second run's, with its checkpoint
    assert (ws / "models/checkpoints").is_dir()

    run(["dvc", "exp", "apply", recorded.first["experiment"]], ws)
    assert (ws / "dvc.lock").read_text() == recorded.lock
    assert dvc_up_to_date(ws), run(["dvc", "status"], ws).stdout
    repro = run(["dvc", "repro"], ws)
    assert stages_run(repro.stdout) == ["ingest"], repro.stdout  # always; nothing after it
    assert same(weights(ws / "models/candidate"), recorded.weights)
