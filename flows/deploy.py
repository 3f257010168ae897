"""Serve `train-alexnet` and `check-new-data` from this machine (what `make serve` runs).

    prefect server start --host 127.0.0.1                    # terminal 1: API + UI, SQLite
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy                                   # terminal 2: serves both deployments
    prefect deployment run train-alexnet/train-alexnet --watch \
        --params '{"overrides": {"train.epochs": 3}}'        # terminal 3, or CI, or the UI

`check-new-data` runs every 10 minutes (`--check-every`, minutes; 0 turns it off) and emits
`alexnet.source.changed` when the images under `ingest.source` changed; `train-alexnet` has a
`DeploymentEventTrigger` on that event for this workspace's source, so the server starts one
training run per change (flows/check_new_data.py says why an event rather than run_deployment).

Runs cannot choose the workspace: it is bound here, when serving (flows/served.py). Anyone who
can reach the API can start runs, so a server not on 127.0.0.1 needs Prefect's auth: start it
with PREFECT_SERVER_API_AUTH_STRING=user:password, and give this process and every client
PREFECT_API_AUTH_STRING with the same value (README, "Security model").

`serve` (rather than `prefect deploy` + a work pool + a worker) because the flow must run where
the DVC workspace and the Horovod workers are: one long-running process on that machine polls
the server and runs each flow run in a subprocess. README ("More than one machine") covers
work pools on GPU hosts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from flows.check_new_data import EVENT, resource_id, source_dir
from flows.served import (TIMEOUT_ENV, WORKSPACE_ENV, check_new_data_served,
                          train_alexnet_served)

WEEKLY = "0 3 * * 1"  # Mondays 03:00: retrain on whatever data has arrived
CHECK_EVERY_MINUTES = 10.0


def new_data_trigger(workspace: Path) -> DeploymentEventTrigger:
    """Run train-alexnet once per `alexnet.source.changed` event about this workspace's source.

    The resource id is computed from `ingest.source` when serving starts: after changing
    `ingest.source`, restart `python -m flows.deploy` (it re-creates the automation).
    """
    return DeploymentEventTrigger(
        name="train-alexnet on new data",
        expect={EVENT},
        match={"prefect.resource.id": resource_id(source_dir(workspace))},
        posture="Reactive",
        threshold=1,
    )


def build_deployments(workspace: Path, cron: str | None, timeout_hours: float,
                      check_every_minutes: float = CHECK_EVERY_MINUTES) -> list[RunnerDeployment]:
    """The deployments served from this machine, bound to one DVC workspace.

    The workspace is not a run parameter (an API caller could then choose it): it is set here,
    in this process's environment, which every flow run it serves inherits (flows/served.py).
    """
    workspace = workspace.resolve()
    os.environ[WORKSPACE_ENV] = str(workspace)
    flow = train_alexnet_served.with_options(timeout_seconds=int(timeout_hours * 3600))
    check = check_new_data_served.to_deployment(
        name="check-new-data",
        description="Fingerprint ingest.source; emit alexnet.source.changed if the images changed.",
        interval=check_every_minutes * 60 if check_every_minutes > 0 else None,
        # A slow check (huge folder) must not pile up behind itself.
        concurrency_limit=1,
        tags=["alexnet"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [check, flow.to_deployment(
        name="train-alexnet",
        description="Ingest, validate, split, preprocess, train (Horovod), evaluate, promote; "
                    "recorded as a DVC experiment named after the flow run.",
        cron=cron,
        # Two runs must never share a DVC workspace: the second one waits in the queue.
        concurrency_limit=1,
        triggers=[new_data_trigger(workspace)],
        tags=["alexnet"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )]


def check_api() -> str | None:
    """None if the configured Prefect API answers and accepts us, else a one-line reason."""
    url = PREFECT_API_URL.value()
    if not url:  # Prefect would serve against a temporary server whose deployments vanish
        return ("no Prefect server configured (PREFECT_API_URL is not set); run first:  "
                "prefect server start --host 127.0.0.1   (another terminal)  and  "
                "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()  # returns the exception instead of raising it
        if error is None:
            try:
                client.hello()  # unlike the health check, needs the auth string if one is set
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 401:
                    raise
                return (f"the Prefect API at {url} refused us (401 Unauthorized): set "
                        "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING")
            return None
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (f"the Prefect API at {url} is unreachable ({reason}); start it with "
            "`prefect server start` or fix PREFECT_API_URL")


def interrupt_as_termination(signum: int, frame: object) -> None:
    """Ctrl-C (SIGINT) stops serving the way a service manager's SIGTERM does: through Prefect's
    Runner.handle_sigterm, which cancels the runs in flight and then stops the polling loops.
    Left to asyncio.run, the first SIGINT only cancels the main task (asyncio.runners._on_sigint;
    a second one raises KeyboardInterrupt), and a cancel that the runner absorbed while starting
    up was lost: `flows.deploy` went on serving (tests/server/test_cancel.py, SIGINT, 30 s)."""
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the DVC project the runs work in (default: .)")
    parser.add_argument("--cron", default=WEEKLY,
                        help=f"retraining schedule (default: {WEEKLY!r}, weekly)")
    parser.add_argument("--no-schedule", action="store_true", help="serve without a schedule")
    parser.add_argument("--timeout-hours", type=float, default=24.0,
                        help="a run taking longer is cancelled (default: 24)")
    parser.add_argument("--check-every", type=float, default=CHECK_EVERY_MINUTES,
                        metavar="MINUTES", help="check-new-data interval (default: 10; 0: off, "
                        "run it by hand with `prefect deployment run check-new-data/check-new-data`)")
    args = parser.parse_args(argv)
    problem = check_api()
    if problem:
        sys.exit(f"flows.deploy: {problem}")
    # Each served run imports the flow afresh in its own process: the timeout goes by environment.
    os.environ[TIMEOUT_ENV] = str(int(args.timeout_hours * 3600))
    # Installed before serve(): asyncio.run then keeps it (it replaces only Python's default).
    signal.signal(signal.SIGINT, interrupt_as_termination)
    serve(*build_deployments(args.workspace, None if args.no_schedule else args.cron,
                             args.timeout_hours, args.check_every))


if __name__ == "__main__":
    main()
