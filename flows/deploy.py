"""Serve the `train-alexnet` deployment from this machine (what `make serve` runs).

    prefect server start --host 127.0.0.1                    # terminal 1: API + UI, SQLite
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy                                   # terminal 2: serves the deployment
    prefect deployment run train-alexnet/train-alexnet --watch \
        --params '{"overrides": {"train.epochs": 3}}'        # terminal 3, or CI, or the UI

`serve` (rather than `prefect deploy` + a work pool + a worker) because the flow must run where
the DVC workspace and the Horovod workers are: one long-running process on that machine polls
the server and runs each flow run in a subprocess. README ("More than one machine") covers
work pools on GPU hosts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows.train_alexnet import train_alexnet

WEEKLY = "0 3 * * 1"  # Mondays 03:00: retrain on whatever data has arrived


def build_deployments(workspace: Path, cron: str | None, timeout_hours: float) -> list[RunnerDeployment]:
    """The deployments served from this machine, bound to one DVC workspace."""
    flow = train_alexnet.with_options(timeout_seconds=int(timeout_hours * 3600))
    return [flow.to_deployment(
        name="train-alexnet",
        description="Ingest, validate, split, preprocess, train (Horovod), evaluate, promote.",
        parameters={"workspace": str(workspace.resolve())},
        cron=cron,
        # Two runs must never share a DVC workspace: the second one waits in the queue.
        concurrency_limit=1,
        tags=["alexnet"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the DVC project the runs work in (default: .)")
    parser.add_argument("--cron", default=WEEKLY,
                        help=f"retraining schedule (default: {WEEKLY!r}, weekly)")
    parser.add_argument("--no-schedule", action="store_true", help="serve without a schedule")
    parser.add_argument("--timeout-hours", type=float, default=24.0,
                        help="a run taking longer is cancelled (default: 24)")
    args = parser.parse_args(argv)
    serve(*build_deployments(args.workspace, None if args.no_schedule else args.cron,
                             args.timeout_hours))


if __name__ == "__main__":
    main()
