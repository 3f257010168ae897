"""`dvc repro` runs the whole pipeline; a second run does nothing; a param change reruns only
the stages that read it."""

import re

import pytest
import yaml

from alexnet.cache import open_split
from tests.conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def test_repro_then_noop_then_one_param(workspace):
    first = run(["dvc", "repro"], workspace)
    assert ran(first.stdout) == ["ingest", "validate", "split", "preprocess", "train",
                                 "evaluate", "promote", "report"]
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            assert (workspace / out).exists(), out
    assert open_split(workspace / "data/cache", "train").shards[0].dtype == "uint8"
    assert (workspace / "models/champion/model.keras").is_file()

    second = run(["dvc", "repro"], workspace)
    assert ran(second.stdout) == [] and "Data and pipelines are up to date" in second.stdout

    # The documented way to change a param (README, "Overrides").
    third = run(["dvc", "exp", "run", "-S", "evaluate.batch_size=64"], workspace)
    assert ran(third.stdout)[0] == "evaluate"
    assert not {"ingest", "validate", "split", "preprocess", "train"} & set(ran(third.stdout))
    assert "up to date" in run(["dvc", "status"], workspace).stdout


def test_raw_source_is_never_modified(workspace):
    source = workspace / "data/sample"
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    run(["dvc", "repro", "split"], workspace)
    after = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert before == after
