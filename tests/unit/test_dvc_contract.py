"""dvc.yaml and the CLI agree: each stage writes exactly its outs and reads only its deps.

A path hard-coded in a stage but missing from dvc.yaml silently escapes DVC's cache and lock
(CONVENTIONS.md #2); this test parses each stage's command with the real CLI parser instead.
"""

import shlex
from pathlib import Path

import pytest
import yaml

from alexnet.cli import build_parser
from alexnet.params import Params

REPO = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGES = DVC["stages"]


def names(entries):
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


def parsed(stage):
    argv = shlex.split(STAGES[stage]["cmd"])
    assert argv[0] == "alexnet" and argv[1] == stage
    return build_parser().parse_args(argv[1:])


def test_stages_are_the_pipeline_in_order():
    assert list(STAGES) == ["ingest", "validate", "split", "preprocess", "train", "evaluate",
                            "promote", "report"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_command_writes_exactly_the_declared_outs(stage):
    ns = parsed(stage)
    written = {str(getattr(ns, dest)) for dest in ns.outputs}
    declared = names(STAGES[stage].get("outs")) | names(STAGES[stage].get("metrics"))
    assert written == declared


@pytest.mark.parametrize("stage", list(STAGES))
def test_command_reads_only_declared_deps(stage):
    ns = parsed(stage)
    # An input left out of the command (ingest's source) is read from the stage's params block.
    read = {str(getattr(ns, dest) or PARAMS[stage][dest]) for dest in ns.inputs}
    deps = {d.replace("${ingest.source}", PARAMS["ingest"]["source"])
            for d in STAGES[stage]["deps"]}
    assert read <= deps, read - deps
    assert f"alexnet/{stage}.py" in deps  # code changes rerun the stage


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_depends_on_its_own_params_block_only(stage):
    declared = STAGES[stage].get("params", [])
    blocks = set(Params.__dataclass_fields__)
    assert declared == ([stage] if stage in blocks else [])
    assert set(PARAMS) == blocks  # params.yaml has one block per stage that has params
