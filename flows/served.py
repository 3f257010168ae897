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

from alexnet.params import ParamsError
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


# Keys that name places rather than settings: the folder ingest reads and copies into data/raw,
# and the hosts horovodrun reaches over SSH with the serving user's keys. They are set in the
# workspace's params.yaml by whoever runs the server, never by a caller of the API.
BOUND_KEYS = ("ingest.source", "train.hosts")


def caller_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`overrides` as given, if none of them sets a BOUND_KEYS key (dotted, or inside a block).

    Raises:
        ParamsError: one of them does (exit 78; nothing has been written).
    """
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        for bound in BOUND_KEYS:
            block, _, leaf = bound.partition(".")
            if key == bound or key.startswith(bound + ".") or (
                    key == block and isinstance(value, dict) and leaf in value):
                raise ParamsError(f"override {key}: {bound} cannot be set by a caller of a "
                                  "served deployment; set it in the workspace's params.yaml")
    return overrides


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
        overrides: params.yaml keys to set first, e.g. {"train.epochs": 3}; never one of
            BOUND_KEYS (refused: they name a folder to read and hosts to reach).
    """
    return train_alexnet.fn(overrides=caller_overrides(overrides), workspace=bound_workspace())


@flow(name="check-new-data")
def check_new_data_served() -> dict[str, Any]:
    """check-new-data in the workspace bound when serving; see flows/check_new_data.py."""
    return check_new_data.fn(workspace=bound_workspace())
