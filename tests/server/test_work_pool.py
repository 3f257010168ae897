"""The multi-machine shape on one machine: a real PostgreSQL (tests/server/postgres.py), a real
`prefect server start` on it, a `process` work pool with a real `prefect worker start`, and the
deployments registered on that pool by `python -m flows.deploy_pool`. Two runs requested at
once queue behind the concurrency limit of one; an `alexnet.source.changed` event starts exactly
one run. Every process is stopped by its process group, every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import time

import pytest

from tests.conftest import REPO, VENV_BIN, make_workspace, run
from tests.server.conftest import running_prefect_server, start, stop, sync_client, wait_until
from tests.server.postgres import running_postgres
from tests.server.test_new_data import SETTLE_SECONDS, add_images

pytestmark = [pytest.mark.server, pytest.mark.slow]
POOL = "alexnet"
# One Horovod worker and one epoch: the runs take a minute or two, not the shape under test.
CHEAP = {"train.workers": 1, "train.epochs": 1}
PREFECT = str(VENV_BIN / "prefect")


@pytest.fixture
def pool_server(tmp_path):
    """A Prefect server on a fresh PostgreSQL, the `alexnet` process pool and one worker on it;
    yields (the clients' environment, the worker, its log, the database)."""
    with running_postgres() as pg, running_prefect_server(
            tmp_path, PREFECT_API_DATABASE_CONNECTION_URL=pg.url) as env:
        run([PREFECT, "work-pool", "create", POOL, "--type", "process"], tmp_path, env=env)
        log = tmp_path / "worker.log"
        # Polls every 2 s instead of 10 s, only to keep the tests short. Started as when pytest
        # itself was started by a shell's `cmd &` without job control (CI, scripts): with SIGINT
        # ignored, which children inherit (see `start`).
        with sigint_ignored():
            worker = start([PREFECT, "worker", "start", "--pool", POOL],
                           {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, log)
        try:
            def online():
                with sync_client(env["PREFECT_API_URL"]) as client:
                    return [w for w in client.read_workers_for_work_pool(POOL)
                            if w.status == "ONLINE"]
            wait_until(online, 120, "the worker", worker, log)
            yield env, worker, log, pg
        finally:
            stop_with_its_runs(worker)
        # Stopped by its SIGTERM, not SIGKILLed after `stop`'s 30 s (which leaves its runs).
        assert worker.returncode != -signal.SIGKILL, log.read_text()[-3000:]


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored in this process meanwhile, as a non-interactive shell's `cmd &` leaves it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_with_its_runs(worker) -> None:
    """Stop the worker and the flow runs it started. Prefect starts each run in a process group
    of its own (seen: engine, dvc, horovodrun in one, the Horovod rank in another); a worker
    that stops them itself leaves nothing, but one killed after `stop`'s 30 s would not."""
    import psutil

    runs = []
    with contextlib.suppress(psutil.Error):
        runs = psutil.Process(worker.pid).children(recursive=True)
    stop(worker)
    for proc in runs:  # by pid; psutil checks it is still the same process (no pid reuse)
        with contextlib.suppress(psutil.Error):
            proc.kill()


def deploy(ws, env, *options: str) -> None:
    run([sys.executable, "-m", "flows.deploy_pool", "--workspace", str(ws), "--pool", POOL,
         *options], ws, env=env, timeout=300)


def pool_names_in(pg) -> list[str]:
    """The work pools stored in PostgreSQL itself: the server really is on it."""
    import asyncio

    import asyncpg

    async def query():
        conn = await asyncpg.connect(pg.url.replace("+asyncpg", ""))
        try:
            return [r["name"] for r in await conn.fetch("SELECT name FROM work_pool")]
        finally:
            await conn.close()
    return asyncio.run(query())


def test_pool_runs_queue_behind_the_concurrency_limit(tmp_path, pool_server):
    env, worker, log, pg = pool_server
    api = env["PREFECT_API_URL"]
    assert POOL in pool_names_in(pg)
    ws = make_workspace(tmp_path / "ws", overrides=CHEAP)
    deploy(ws, env, "--check-every", "0")
    with sync_client(api) as client:
        deployment = client.read_deployment_by_name("train-alexnet/train-alexnet")
    assert deployment.work_pool_name == POOL
    assert deployment.global_concurrency_limit.limit == 1
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
    # The workspace is bound at deploy time: no run parameter, a pull step and the job env.
    assert deployment.parameters == {}
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": str(ws)}}]
    assert deployment.job_variables["env"] == {"ALEXNET_WORKSPACE": str(ws),
                                               "ALEXNET_FLOW_TIMEOUT_SECONDS": str(24 * 3600)}

    t0 = time.monotonic()
    ids = []
    for _ in range(2):  # requested at once: one runs, the other waits for its slot
        created = run([PREFECT, "deployment", "run", "train-alexnet/train-alexnet"], ws,
                      env=env).stdout
        ids.append(re.search(r"UUID: ([0-9a-f-]{36})", created).group(1))

    def finished():
        with sync_client(api) as client:
            runs = [client.read_flow_run(i) for i in ids]
        return runs if all(r.state.is_final() for r in runs) else None

    runs = wait_until(finished, 900, "two flow runs", worker, log, every=3)
    print(f"two queued runs through the worker: {time.monotonic() - t0:.0f} s")
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert first.state.is_completed() and second.state.is_completed(), (first.state, second.state)
    assert second.start_time >= first.end_time  # queued, not overlapping
    with sync_client(api) as client:
        waited = [s.name for s in client.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in waited, waited
    assert (ws / "models/champion/model.keras").is_file()
    experiments = run(["dvc", "exp", "list", "--name-only"], ws).stdout.split()
    assert sorted(experiments) == sorted([first.name, second.name])


def train_runs_of(api_url: str, deployment: str) -> list:
    """The flow runs of the deployment train-alexnet/<deployment>."""
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName,
                                                FlowFilter, FlowFilterName)

    with sync_client(api_url) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["train-alexnet"])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


def check(env: dict, ws, name: str) -> None:
    """One check-new-data run through the worker, watched to its end."""
    done = run([PREFECT, "deployment", "run", f"check-new-data/{name}", "--watch",
                "--watch-timeout", "300"], ws, env=env, timeout=360, check=False)
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout[-3000:]


def test_pool_new_data_event_starts_exactly_one_run(tmp_path, pool_server):
    env, worker, log, _ = pool_server
    api = env["PREFECT_API_URL"]
    ws = make_workspace(tmp_path / "ws", overrides=CHEAP)
    refused = run([sys.executable, "-m", "flows.deploy_pool", "--workspace", str(ws),
                   "--pool", "no-such-pool"], ws, env=env, check=False)
    assert refused.returncode != 0 and "no-such-pool" in refused.stderr, refused.stderr
    # A host's own deployment name, as with several hosts (README).
    deploy(ws, env, "--name", "host1", "--no-schedule", "--check-every", "0")
    with sync_client(api) as client:
        assert [a.trigger.expect for a in client.read_automations()] == [{"alexnet.source.changed"}]

    check(env, ws, "host1")  # the first check records the fingerprint
    assert json.loads((ws / ".alexnet/source-state.json").read_text())["files"]
    added = add_images(ws / "data/sample", 2)
    check(env, ws, "host1")  # emits alexnet.source.changed; the automation creates a run
    t0 = time.monotonic()
    wait_until(lambda: train_runs_of(api, "host1"), 60, "a train-alexnet run", worker, log)
    latency = time.monotonic() - t0
    done = wait_until(lambda: [r for r in train_runs_of(api, "host1") if r.state.is_final()], 900,
                      "the train-alexnet run to finish", worker, log, every=5)
    print(f"trigger latency {latency:.0f} s; run {time.monotonic() - t0:.0f} s")
    assert done[0].state.is_completed(), (done[0].state, log.read_text()[-3000:])
    assert json.loads((ws / "reports/validation.json").read_text())["total"] == 80 + added
    # A second run for this one event would come within SETTLE_SECONDS (and three times the
    # latency) of the check that emitted it; the training has usually taken longer than that.
    time.sleep(max(0.0, max(SETTLE_SECONDS, 3 * latency) - (time.monotonic() - t0)))
    assert len(train_runs_of(api, "host1")) == 1  # exactly one run for one event


# The served flows read the timeout from the environment (flows/served.py, on main); seen
# failing without it in the job environment: the run ends Completed.
@pytest.mark.skipif(not (REPO / "flows/served.py").is_file(),
                    reason="flows/served.py (the flows that read the timeout) is not in this tree")
def test_pool_run_times_out(tmp_path, pool_server):
    """--timeout-hours reaches a worker's run (by its environment): it ends TimedOut."""
    env, worker, log, _ = pool_server
    api = env["PREFECT_API_URL"]
    # Long enough that the timeout lands in training on any machine (99, not the reference
    # default 100, which the built-in sample's demo settings would replace by 10).
    ws = make_workspace(tmp_path / "ws", overrides={**CHEAP, "train.epochs": 99})
    timeout_s = 30
    deploy(ws, env, "--no-schedule", "--check-every", "0", "--timeout-hours", str(timeout_s / 3600))
    created = run([PREFECT, "deployment", "run", "train-alexnet/train-alexnet"], ws, env=env).stdout
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", created).group(1)

    def final():
        with sync_client(api) as client:
            state = client.read_flow_run(flow_run_id).state
        return state if state.is_final() else None

    assert wait_until(final, 300, "the run to end", worker, log, every=2).name == "TimedOut"
