"""`python -m flows.train_alexnet` (what `make run` calls): a params mistake is one line and
exit code 78, before any flow run starts; a run that leaves overrides in params.yaml says so."""

import shutil
import sys

import pytest

from alexnet.errors import EXIT_CONFIG
from tests.conftest import REPO, run


@pytest.mark.parametrize("how", ["override", "params.yaml"])
def test_a_params_typo_is_one_line_and_exit_78(tmp_path, how):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    cmd = [sys.executable, "-m", "flows.train_alexnet", "--workspace", str(tmp_path)]
    if how == "override":
        cmd += ["--set", "train.epoks=1"]
    else:
        text = (tmp_path / "params.yaml").read_text().replace("\ntrain:", "\ntrian:")
        (tmp_path / "params.yaml").write_text(text)
    before = (tmp_path / "params.yaml").read_text()
    done = run(cmd, tmp_path, check=False, timeout=300)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == EXIT_CONFIG, lines
    assert len(lines) == 1 and ("train.epoks" in lines[0] or "trian" in lines[0]), lines
    assert (tmp_path / "params.yaml").read_text() == before
    assert not (tmp_path / "data").exists()
