"""Faults of the service: a Prefect server that is not there ends `python -m flows.deploy` with
one line naming the URL, not a traceback."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.conftest import REPO, run, tool_env

pytestmark = [pytest.mark.server]


def test_deploy_without_a_server_says_so_in_one_line(tmp_path):
    # The port stays bound, never listening, for the whole test: connections to it are refused,
    # and no server of another test file (another pytest worker) can take it meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}/api"  # nothing listens there
        done = run([sys.executable, "-m", "flows.deploy", "--workspace", str(REPO)], REPO,
                   env=tool_env(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "prefect-home")),
                   timeout=120, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "unreachable" in lines[0], done.stderr
