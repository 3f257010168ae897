"""Every run ends recorded as a DVC experiment, pushed only when `exp.auto_push` is on, and a
recorded run can be reproduced from its name: `python -m flows.reproduce NAME` (dvc exp apply +
dvc pull), then `dvc repro` retrains the same weights (deterministic mode, one worker). Real
Prefect engine (test harness), real dvc, real horovodrun."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from alexnet.hardware import host_cpu_flags, resolve_precision
from flows.train_alexnet import train_alexnet
from tests.conftest import make_workspace, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DETERMINISTIC = {"train.deterministic": True, "train.workers": 1, "train.epochs": 1}


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


def test_recorded_run_is_reproduced_by_name(tmp_path, prefect_api):
    ws = make_workspace(tmp_path / "ws", overrides=DETERMINISTIC)
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], ws)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], ws)
    # The push switch on (DVC's exp.auto_push), with a DVC remote to push to (README).
    run(["dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "store")], ws)
    run(["dvc", "config", "--local", "exp.auto_push", "true"], ws)
    first = train_alexnet(workspace=str(ws), return_state=True)
    assert first.is_completed(), first
    name = first.result()["experiment"]
    recorded = weights(ws / "models/candidate")
    lock = (ws / "dvc.lock").read_text()

    # Recorded: an experiment with this run's params and dvc.lock, outputs on the DVC remote, its
    # git ref on origin, and an artifact that names them.
    assert name in run(["dvc", "exp", "list", "--name-only"], ws).stdout
    assert "in sync" in run(["dvc", "status", "--cloud"], ws).stdout  # pushed
    pushed_refs = run(["git", "ls-remote", "origin"], ws).stdout
    assert "refs/exps/" in pushed_refs and name in pushed_refs
    with get_client(sync_client=True) as client:
        record = client.read_artifacts(limit=1, sort="CREATED_DESC")[0]
    assert record.key == "run-record" and name in record.data
    assert first.result()["experiment_commit"] in record.data
    assert "DVC remote `store`" in record.data and "git remote `origin`" in record.data
    # What `auto` resolved to (train.mixed_precision is auto in the repo's params.yaml).
    precision = json.loads((ws / "models/candidate/model.json").read_text())["resolved"]
    assert precision == {"workers": 1, "mixed_precision":
                         resolve_precision("auto", host_cpu_flags(), [])}
    assert f"train.mixed_precision `{precision['mixed_precision']}`" in record.data
    assert "train.workers `1`" in record.data

    # The switch off (the default): the second run, with a different param, is recorded here and
    # nothing leaves the workspace, though origin and the DVC remote are still configured.
    run(["dvc", "config", "--local", "--unset", "exp.auto_push"], ws)
    second = train_alexnet(overrides={"train.learning_rate": 0.001}, workspace=str(ws),
                           return_state=True)
    assert second.is_completed(), second
    assert second.result()["experiment"] != name
    assert second.result()["experiment"] in run(["dvc", "exp", "list", "--name-only"], ws).stdout
    assert run(["git", "ls-remote", "origin"], ws).stdout == pushed_refs  # refs unchanged
    assert "in sync" not in run(["dvc", "status", "--cloud"], ws).stdout  # new model not pushed
    with get_client(sync_client=True) as client:
        record = client.read_artifacts(limit=1, sort="CREATED_DESC")[0]
    assert "exp.auto_push` is off" in record.data and str(ws / ".dvc/cache") in record.data
    assert not same(weights(ws / "models/candidate"), recorded)

    # README "Reproduce a past run", with the local cache emptied so that the outputs must come
    # from the DVC remote.
    shutil.rmtree(ws / ".dvc/cache")
    shutil.rmtree(ws / "models/candidate")
    run(["python", "-m", "flows.reproduce", name], ws)
    assert (ws / "dvc.lock").read_text() == lock
    assert same(weights(ws / "models/candidate"), recorded)  # restored from the remote

    shutil.rmtree(ws / "models/candidate")
    shutil.rmtree(ws / "models/checkpoints", ignore_errors=True)
    repro = run(["dvc", "repro", "--no-run-cache"], ws)
    assert "Running stage 'train'" in repro.stdout  # retrained, not restored
    assert same(weights(ws / "models/candidate"), recorded)


def test_applying_a_recorded_run_then_repro_is_a_noop(tmp_path):
    """`dvc exp apply NAME` restores a run's params, dvc.lock and outputs; `dvc repro` must then
    find nothing to do (it used to retrain from scratch, issue 18)."""
    from flows.workspace import set_params

    ws = make_workspace(tmp_path / "ws", overrides={"train.workers": 1, "train.epochs": 1})
    run(["dvc", "repro"], ws)
    run(["dvc", "exp", "save", "--name", "first"], ws)
    lock = (ws / "dvc.lock").read_text()
    recorded = weights(ws / "models/candidate")
    set_params(ws, {"train.learning_rate": 0.001})
    run(["dvc", "repro"], ws)
    run(["dvc", "exp", "save", "--name", "second"], ws)

    run(["dvc", "exp", "apply", "first"], ws)
    assert (ws / "dvc.lock").read_text() == lock
    status = run(["dvc", "status"], ws).stdout
    assert "up to date" in status, status
    repro = run(["dvc", "repro"], ws)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert same(weights(ws / "models/candidate"), recorded)
