"""No user-controlled string reaches a shell: DVC runs each stage's `cmd` with `$SHELL -c`, so a
params value interpolated into it (`${ingest.source}`) would be parsed by the shell."""

import shutil
from pathlib import Path

import pytest
import yaml

from flows.workspace import set_params
from tests.conftest import REPO, make_workspace, run

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_no_stage_command_interpolates_a_value(stage):
    # Every value a stage needs comes from params.yaml, read by the stage itself.
    assert "${" not in STAGES[stage]["cmd"]


HOSTILE = ["data/my images", "data/it's \"quoted\"", "data/x$(touch PWNED)",
           "data/x`touch PWNED`; touch PWNED", "-x $(touch PWNED)", "--source=-x"]


@pytest.mark.integration
@pytest.mark.parametrize("source", HOSTILE)
def test_dvc_repro_ingest_with_a_hostile_folder_name(tmp_path, source):
    ws = make_workspace(tmp_path / "ws", per_class=6)
    shutil.move(ws / "data/sample", ws / source)
    set_params(ws, {"ingest.source": source})
    proc = run(["dvc", "repro", "ingest"], ws, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not list(tmp_path.rglob("PWNED"))
    manifest = (ws / "data/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 12  # 6 images of each of the 2 classes
    # ingest reads the folder itself on every `dvc repro` (dvc.yaml: always_changed): a new
    # image in it is found.
    first = sorted((ws / source).rglob("*.jpg"))[0]
    shutil.copyfile(first, first.with_name("new.jpg"))
    run(["dvc", "repro", "ingest"], ws)
    assert len((ws / "data/manifest.csv").read_text().splitlines()) == 1 + 13
