"""Stage tasks retry what a retry can fix (exit 75, a held DVC lock) and nothing else."""

import sys
import textwrap

import pytest
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from alexnet.errors import EXIT_DATA, EXIT_TRANSIENT
from tasks.stages import StageFailed, run_stage
from tests.conftest import run

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def flaky_workspace(tmp_path, first_exit_code):
    """A DVC project whose one stage fails with `first_exit_code` on its first run only."""
    ws, counter = tmp_path / "ws", tmp_path / "attempts"
    ws.mkdir()
    (ws / "flaky.py").write_text(textwrap.dedent(f"""
        import pathlib, sys
        counter = pathlib.Path({str(counter)!r})
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        if n == 1:
            sys.exit({first_exit_code})
        pathlib.Path("out.txt").write_text("ok")
    """))
    (ws / "dvc.yaml").write_text(f"stages:\n  flaky:\n    cmd: {sys.executable} flaky.py\n"
                                 "    deps: [flaky.py]\n    outs: [out.txt]\n")
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)
    return ws, counter


@flow
def one_stage(ws):
    return run_stage.with_options(retry_delay_seconds=0)("flaky", ws)


def test_transient_failure_is_retried(tmp_path, prefect_api):
    ws, counter = flaky_workspace(tmp_path, EXIT_TRANSIENT)
    result = one_stage(ws)
    assert result.ran and counter.read_text() == "2" and (ws / "out.txt").exists()


def test_bad_data_is_not_retried(tmp_path, prefect_api):
    ws, counter = flaky_workspace(tmp_path, EXIT_DATA)
    state = one_stage(ws, return_state=True)
    assert state.is_failed() and counter.read_text() == "1"
    with pytest.raises(StageFailed, match="exit code 65"):
        state.result()
