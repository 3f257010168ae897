"""Register `train-alexnet` and `check-new-data` on a process work pool, for its workers.

The multi-machine shape: one server (on PostgreSQL), a worker on each host that holds a
workspace (README, "More than one machine"); `make serve` is the one-machine way.

    prefect work-pool create alexnet --type process               # once, against the server
    prefect worker start --pool alexnet                           # on the host, kept running
    python -m flows.deploy_pool --workspace /srv/ws --pool alexnet   # on the host, once
    prefect deployment run train-alexnet/train-alexnet --watch    # anywhere, or the UI

The deployments are the ones `python -m flows.deploy` serves (same concurrency limit of one,
schedule, new-data trigger, check interval: `build_deployments`), registered instead of served:
a `process` worker polls the pool and runs each flow run in a subprocess on its own host.

No image and no code upload: the entrypoints are module paths of this installed package, which
the worker's Python imports (install the project on every worker host). The workspace is bound
here, at deploy time, never by a run's parameters: a pull step makes it the flow run's working
directory, and ALEXNET_WORKSPACE in the deployment's job environment names it (the variable the
served flows read; the run timeout goes the same way). Job variables can be overridden per run by anyone who can reach the API,
like every other run setting: keep the API on 127.0.0.1 or behind Prefect's auth string.

With several hosts, give each its own pool and deployment name (`--pool gpu1 --name gpu1`),
so that each host's runs land on the worker that holds its workspace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect.deployments.runner import RunnerDeployment, deploy
from prefect.runner.storage import LocalStorage

from flows.deploy import CHECK_EVERY_MINUTES, WEEKLY, build_deployments, check_api
# What the served flows read when a run starts: the workspace, the timeout.
from flows.served import TIMEOUT_ENV, WORKSPACE_ENV


def pool_deployments(workspace: Path, pool: str, name: str | None, cron: str | None,
                     timeout_hours: float, check_every_minutes: float) -> list[RunnerDeployment]:
    """`build_deployments`' deployments, bound to `workspace` and meant for `pool`'s workers.

    Args:
        name: deployment name for both flows (default: the flow's own name, as served).
    """
    workspace = workspace.resolve()
    deployments = build_deployments(workspace, cron, timeout_hours, check_every_minutes)
    # A worker imports the flow from its module: the timeout set with `with_options` does not
    # reach the run (a deployment stores none), the environment does, as for `serve`.
    env = {WORKSPACE_ENV: str(workspace), TIMEOUT_ENV: str(int(timeout_hours * 3600))}
    for deployment in deployments:
        deployment.parameters.pop("workspace", None)  # bound below, not chosen per run
        # The pull step: `set_working_directory` to the workspace before the flow is imported.
        deployment.storage = LocalStorage(str(workspace))
        deployment.job_variables = {"env": dict(env)}
        deployment.work_pool_name = pool
        if name:
            deployment.name = name
    return deployments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="the DVC project the runs work in, on the worker's host (default: .)")
    parser.add_argument("--pool", required=True,
                        help="the process work pool (`prefect work-pool create NAME --type process`)")
    parser.add_argument("--name", help="deployment name (default: train-alexnet, check-new-data)")
    parser.add_argument("--cron", default=WEEKLY,
                        help=f"retraining schedule (default: {WEEKLY!r}, weekly)")
    parser.add_argument("--no-schedule", action="store_true", help="deploy without a schedule")
    parser.add_argument("--timeout-hours", type=float, default=24.0,
                        help="a run taking longer is cancelled (default: 24)")
    parser.add_argument("--check-every", type=float, default=CHECK_EVERY_MINUTES,
                        metavar="MINUTES", help="check-new-data interval (default: 10; 0: off)")
    args = parser.parse_args(argv)
    problem = check_api()
    if problem:
        sys.exit(f"flows.deploy_pool: {problem}")
    deployments = pool_deployments(args.workspace, args.pool, args.name,
                                   None if args.no_schedule else args.cron, args.timeout_hours,
                                   args.check_every)
    # build/push: nothing to build for a process pool (no image); ValueError if the pool is missing.
    try:
        ids = deploy(*deployments, work_pool_name=args.pool, build=False, push=False,
                     ignore_warnings=True)
    except ValueError as exc:
        sys.exit(f"flows.deploy_pool: {exc}")
    if len(ids) != len(deployments):  # `deploy` prints a failed one in its table, and goes on
        sys.exit("flows.deploy_pool: not every deployment was registered (see the table above)")


if __name__ == "__main__":
    main()
