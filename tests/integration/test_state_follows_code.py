"""Stored state follows the code through `dvc repro`: after a change to a module a stage runs,
DVC reruns the stage and the stage does not reuse what the old code produced (kept cache shards,
a finished training's checkpoint). The workspace holds its own copy of alexnet/, and dvc runs
with PYTHONPATH=<workspace> so that the edited copy is the code that runs."""

from __future__ import annotations

import re

import pytest

from alexnet.io import read_csv
from tests.conftest import make_workspace, run, tool_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def edit(path) -> None:
    """Change the code of a module (add a function; what it computes stays the same)."""
    path.write_text(path.read_text() + "\n\ndef _added_by_test():\n    return 1\n")


def repro(ws, *targets):
    out = run(["dvc", "repro", *targets], ws, env=tool_env(PYTHONPATH=str(ws)))
    return out.stdout + out.stderr


def test_a_change_to_images_py_decodes_the_pixels_again(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    repro(ws, "preprocess")
    images = len(read_csv(ws / "data/splits.csv"))
    edit(ws / "alexnet/images.py")
    log = repro(ws, "preprocess")
    assert "Running stage 'preprocess'" in log
    assert f"{images} image(s) decoded, 0 copied from the previous cache, 0 kept" in log


def test_a_change_to_model_py_retrains_a_finished_training(tmp_path):
    ws = make_workspace(tmp_path / "ws", overrides={"train.workers": 1})
    first = repro(ws, "train")
    assert re.search(r"Epoch 2/2", first)
    edit(ws / "alexnet/model.py")
    log = repro(ws, "train")
    assert "Running stage 'train'" in log
    assert "starting over" in log and re.search(r"Epoch 1/2", log)  # trained, not re-saved
