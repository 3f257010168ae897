"""The flows as `python -m flows.deploy` serves them: bound to one workspace when serving starts.

Whoever can call the Prefect API chooses a run's parameters. A `workspace` parameter would let a
caller point a run at any folder with its own dvc.yaml, whose commands `dvc repro` runs; so the
served flows take none. The workspace is fixed by `python -m flows.deploy --workspace DIR`, which
sets ALEXNET_WORKSPACE in the serving process; each flow run is a subprocess of it and inherits
it. A run requested with a `workspace` parameter fails before it starts (Prefect refuses
parameters the flow does not take).
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from flows.check_new_data import check_new_data
from flows.train_alexnet import train_alexnet

WORKSPACE_ENV = "ALEXNET_WORKSPACE"
# The timeout of served runs (`python -m flows.deploy --timeout-hours`). Prefect's runner starts
# each served run in a new process that imports this module again, so a timeout set with
# `with_options` in the serving process never reaches the run; this variable, which that
# process inherits, does.
TIMEOUT_ENV = "ALEXNET_FLOW_TIMEOUT_SECONDS"


def served_timeout() -> float | None:
    value = os.environ.get(TIMEOUT_ENV)
    return float(value) if value else None


def bound_workspace() -> str:
    """The workspace this process serves (set by flows/deploy.py before serving)."""
    workspace = os.environ.get(WORKSPACE_ENV)
    if not workspace:
        raise RuntimeError(f"{WORKSPACE_ENV} is not set: serve the flows with "
                           "`python -m flows.deploy --workspace DIR`")
    return workspace


@flow(name="train-alexnet", log_prints=True, timeout_seconds=served_timeout())
def train_alexnet_served(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """train-alexnet in the workspace bound when serving; see flows/train_alexnet.py.

    Args:
        overrides: params.yaml keys to set first, e.g. {"train.epochs": 3}.
    """
    return train_alexnet.fn(overrides=overrides, workspace=bound_workspace())


@flow(name="check-new-data")
def check_new_data_served() -> dict[str, Any]:
    """check-new-data in the workspace bound when serving; see flows/check_new_data.py."""
    return check_new_data.fn(workspace=bound_workspace())
