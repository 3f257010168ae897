"""Retraining on new data against a real `prefect server`: `python -m flows.deploy` serves both
deployments; check-new-data starts exactly one train-alexnet run per change of the source images,
through the event trigger, and none when nothing changed. Every wait is bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from flows.check_new_data import EVENT
from tests.conftest import VENV_BIN, make_workspace, run
from tests.server.conftest import start, stop, sync_client, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]
# After a check, how long a trigger gets to create a run we do not want. The positive case
# below shows the real latency (seconds); this is several times that.
SETTLE_SECONDS = 20


def train_runs(api_url: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with sync_client(api_url) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["train-alexnet"])))


def announcements(api_url: str) -> list[dict]:
    """The payloads of every `alexnet.source.changed` event the server has stored, oldest first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOrder

    with sync_client(api_url) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[EVENT]),
                                              order=EventOrder.ASC),
                                  limit=50)  # the server refuses more (the default, 100)
    return [event.payload for event in page.events]


def check(env: dict, ws) -> str:
    """One check-new-data run through the served deployment; its log output."""
    done = run([str(VENV_BIN / "prefect"), "deployment", "run", "check-new-data/check-new-data",
                "--watch", "--watch-timeout", "300"], ws, env=env, timeout=360, check=False)
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout[-3000:]
    return done.stdout


def add_images(source, n_per_class: int) -> int:
    from alexnet.sample_data import make_image

    rng = np.random.default_rng(123)
    for kind in ("disks", "stripes"):
        for i in range(n_per_class):
            make_image(kind, rng).save(source / kind / f"{kind}.new{i}.jpg", format="JPEG")
    return 2 * n_per_class


def test_new_images_trigger_exactly_one_training(tmp_path, prefect_server):
    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    ws = make_workspace(tmp_path / "ws", overrides={"train.epochs": 1})
    log = tmp_path / "serve.log"
    served = start([sys.executable, "-m", "flows.deploy", "--workspace", str(ws),
                    "--no-schedule", "--check-every", "0"], env, log)
    try:
        inspect = [str(VENV_BIN / "prefect"), "deployment", "inspect", "check-new-data/check-new-data"]
        wait_until(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0,
                   120, "deployments", served, log)
        with sync_client(api) as client:
            automations = client.read_automations()
        assert [a.trigger.expect for a in automations] == [{"alexnet.source.changed"}]

        check(env, ws)  # first check: records the fingerprint
        state = json.loads((ws / ".alexnet/source-state.json").read_text())
        assert len(state["files"]) == 81  # 2 x 40 images + SYNTHETIC.txt
        check(env, ws)  # nothing changed
        # No wait here for a run that must not come: the end of the test counts every run and
        # every announcement of the whole test, the first two checks' included, after far
        # longer than SETTLE_SECONDS.
        assert train_runs(api) == []

        added = add_images(ws / "data/sample", 2)
        check(env, ws)
        t0 = time.monotonic()
        first = wait_until(lambda: train_runs(api), 60, "a train-alexnet run", served, log)
        latency = time.monotonic() - t0
        assert len(first) == 1
        done = wait_until(lambda: [r for r in train_runs(api) if r.state.is_final()], 900,
                          "the train-alexnet run to finish", served, log, every=5)
        assert done[0].state.is_completed(), (done[0].state, log.read_text()[-3000:])
        # It trained on the new images, and ended recorded as a DVC experiment.
        ingested = json.loads((ws / "reports/validation.json").read_text())["total"]
        assert ingested == 80 + added
        assert done[0].name in run(["dvc", "exp", "list", "--name-only"], ws).stdout

        check(env, ws)  # nothing changed since
        time.sleep(max(SETTLE_SECONDS, 3 * latency))
        assert len(train_runs(api)) == 1
        # One announcement in the whole test, the third check's (the images it added): the
        # first, second and fourth checks emitted nothing a trigger could act on.
        assert [(e["added"], e["removed"], e["modified"]) for e in announcements(api)] == \
            [(added, 0, 0)]
    finally:
        stop(served)
