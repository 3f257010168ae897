"""README's "Reproduce a past run" in a second `git clone` of a workspace on the same machine,
with the default setup (no DVC remote, the push switch off): the commands of its clone block, as
README writes them, bring the recorded run back with the same metrics and the same model sha256.
Real Prefect engine (test harness), real dvc, real horovodrun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from alexnet.io import file_sha256
from flows.train_alexnet import train_alexnet
from tests.conftest import REPO, make_workspace, run, run_readme_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"train.workers": 1, "train.epochs": 1}
# The placeholders README's clone block uses for the recorded workspace and the run's name.
README_WORKSPACE, README_RUN = "/path/to/workspace", "amber-hyena"


def readme_clone_block() -> list[str]:
    """The command lines of the block in README's "Reproduce a past run" that starts `git clone`."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Reproduce a past run", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    block = next(b for b in blocks if b.startswith("git clone "))
    return [line for line in block.splitlines() if line.strip()]


def cache_files(ws: Path) -> dict[str, int]:
    return {str(p.relative_to(ws)): p.stat().st_size
            for p in (ws / ".dvc/cache/files").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_clone_reproduces_a_recorded_run_with_readme_commands(tmp_path, prefect_api):
    ws = make_workspace(tmp_path / "workspace", overrides=FAST)
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], ws)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], ws)
    state = train_alexnet(workspace=str(ws), return_state=True)
    assert state.is_completed(), state
    name = state.result()["experiment"]
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    model_sha = file_sha256(ws / "models/candidate/model.keras")

    # The default setup keeps the run in the workspace: nothing pushed to the git remote, no DVC
    # remote (so no second copy of the data in a folder of the workspace).
    assert run(["git", "ls-remote", str(tmp_path / "origin.git")], ws).stdout == ""
    assert run(["dvc", "remote", "list"], ws).stdout.strip() == ""
    assert not (ws / ".dvcstore").exists()

    recorded_cache = cache_files(ws)

    # A clone that is not told where the data is: one clear refusal naming the run, where it
    # looked, and the line to run; not DVC's list of md5s.
    bare = tmp_path / "bare-clone"
    run(["git", "clone", "-q", str(ws), str(bare)], tmp_path)
    refused = run(["python", "-m", "flows.reproduce", name], bare, check=False)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert f"run {name!r}" in refused.stderr
    assert "a DVC remote (none is configured)" in refused.stderr
    assert f"dvc remote add --local -d recorded {ws.resolve()}/.dvc/cache" in refused.stderr
    assert "md5" not in refused.stdout + refused.stderr

    # README's clone block, as written.
    clone = run_readme_lines(readme_clone_block(), tmp_path,
                             {README_WORKSPACE: str(ws), README_RUN: name})
    assert clone != tmp_path and (clone / ".git").is_dir()
    assert json.loads((clone / "reports/metrics.json").read_text()) == metrics
    assert file_sha256(clone / "models/candidate/model.keras") == model_sha
    assert cache_files(ws) == recorded_cache  # the recorded workspace is only read
