"""Faults of the service: a Prefect server that is not there ends `python -m flows.deploy` with
one line naming the URL, not a traceback."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, run, tool_env
from tests.server.conftest import free_port

pytestmark = [pytest.mark.server]


def test_deploy_without_a_server_says_so_in_one_line():
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = run([sys.executable, "-m", "flows.deploy", "--workspace", str(REPO)], REPO,
               env=tool_env(PREFECT_API_URL=url), timeout=120, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "unreachable" in lines[0], done.stderr
