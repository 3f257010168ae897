"""A caller of the Prefect API chooses a served run's overrides, never the places it reaches:
`ingest.source` (a folder to read and copy into data/raw) and `train.hosts` (hosts horovodrun
reaches over SSH with the serving user's keys) are refused before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alexnet.params import ParamsError
from flows.served import WORKSPACE_ENV, caller_overrides, train_alexnet_served

REPO = Path(__file__).resolve().parents[2]

HOSTILE = [
    {"ingest.source": "/"},
    {"ingest": {"source": "/home"}},  # a whole block
    {"train.hosts": "attacker.example:2"},
    {"train": {"hosts": "attacker.example:2", "epochs": 1}},
]


@pytest.mark.parametrize("overrides", HOSTILE, ids=["source", "ingest-block", "hosts",
                                                    "train-block"])
def test_a_caller_cannot_point_a_served_run_elsewhere(tmp_path, monkeypatch, overrides):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_bytes()
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path))
    with pytest.raises(ParamsError, match="cannot be set by a caller"):
        train_alexnet_served.fn(overrides=overrides)
    assert (tmp_path / "params.yaml").read_bytes() == before


def test_other_overrides_pass():
    ok = {"train.epochs": 3, "train.workers": 1, "ingest.layout": "auto", "preprocess": {}}
    assert caller_overrides(ok) == ok
