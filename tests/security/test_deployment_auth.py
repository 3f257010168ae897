"""Callers of the Prefect API: the served deployment is bound to its workspace (a caller cannot
point a run at a folder with its own dvc.yaml), and with Prefect's API auth turned on, a client
without the auth string is refused. Against a real `prefect server start` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, VENV_BIN, make_workspace, run, tool_env
from tests.server.conftest import running_prefect_server, start, stop, wait_until

AUTH = "alexnet:correct horse battery staple"


@pytest.fixture
def auth_server(tmp_path):
    """A server that requires AUTH; yields the environment of a client that has it."""
    with running_prefect_server(tmp_path,
                                server_env={"PREFECT_SERVER_API_AUTH_STRING": AUTH}) as env:
        yield {**env, "PREFECT_API_AUTH_STRING": AUTH}


@contextlib.contextmanager
def client(env):
    """Prefect's sync client with the API URL and auth string of `env`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"],
                             PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}), \
            get_client(sync_client=True) as c:
        yield c


def hostile_workspace(path):
    """A DVC project of someone else's: its `ingest` stage runs `touch PWNED`."""
    path.mkdir()
    shutil.copy2(REPO / "params.yaml", path / "params.yaml")
    (path / "dvc.yaml").write_text("stages:\n  ingest:\n    cmd: touch PWNED\n")
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    return path


def deployment_run(env, ws, params):
    """`prefect deployment run train-alexnet/train-alexnet`; (exit code, output, run id)."""
    done = run([str(VENV_BIN / "prefect"), "deployment", "run", "train-alexnet/train-alexnet",
                "--params", params], ws, env=env, check=False, timeout=120)
    found = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)
    return done.returncode, done.stdout + done.stderr, found and found.group(1)


@pytest.mark.server
@pytest.mark.slow
def test_served_deployment_is_bound_to_its_workspace_and_needs_auth(tmp_path, auth_server):
    env = auth_server
    without_auth = {k: v for k, v in env.items() if k != "PREFECT_API_AUTH_STRING"}
    ws = make_workspace(tmp_path / "ws", {"train.workers": 1, "train.epochs": 1})
    evil = hostile_workspace(tmp_path / "evil")

    # Serving without the auth string is refused in one line, before anything is served.
    refused = run([sys.executable, "-m", "flows.deploy", "--workspace", str(ws)], ws,
                  env=without_auth, check=False, timeout=120)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "PREFECT_API_AUTH_STRING" in refused.stderr, refused.stderr

    log = tmp_path / "serve.log"
    served = start([sys.executable, "-m", "flows.deploy", "--workspace", str(ws),
                    "--no-schedule", "--check-every", "0"], env, log)
    try:
        inspect = [str(VENV_BIN / "prefect"), "deployment", "inspect", "train-alexnet/train-alexnet"]
        wait_until(lambda: subprocess.run(inspect, env=env, capture_output=True).returncode == 0,
                   120, "deployment", served, log)
        with client(env) as api:
            for name in ("train-alexnet/train-alexnet", "check-new-data/check-new-data"):
                deployment = api.read_deployment_by_name(name)
                assert "workspace" not in deployment.parameter_openapi_schema["properties"]
                assert "workspace" not in deployment.parameters

        # A client without the auth string is refused by the server.
        code, output, _ = deployment_run(without_auth, ws, "{}")
        assert code != 0 and ("401" in output or "Unauthorized" in output), output

        # A caller cannot choose the workspace: the served flow has no such parameter, so the
        # run is refused (or fails before its first line); nothing runs in the other folder.
        with client(env) as api:
            deployment = api.read_deployment_by_name("train-alexnet/train-alexnet")
            try:
                evil_run = api.create_flow_run_from_deployment(
                    deployment.id, parameters={"workspace": str(evil)})
            except Exception as refused:  # the server checks the parameter schema
                assert "workspace" in str(refused), refused
                evil_run = None
        if evil_run is not None:
            def evil_done():
                with client(env) as api:
                    state = api.read_flow_run(evil_run.id).state
                return state if state.is_final() else None
            state = wait_until(evil_done, 300, "the run with a workspace", served, log, every=2)
            assert not state.is_completed(), state
        assert not (evil / "PWNED").exists() and not (evil / "data").exists()

        # The right auth string: the run completes, in the workspace bound when serving.
        code, output, run_id = deployment_run(env, ws, '{"overrides": {"train.epochs": 1}}')
        assert code == 0 and run_id, output

        def done():
            with client(env) as api:
                state = api.read_flow_run(run_id).state
            return state if state.is_final() else None
        state = wait_until(done, 900, "the flow run", served, log, every=3)
        assert state.is_completed(), (state, log.read_text()[-3000:])
        assert (ws / "reports/report.html").is_file()
    finally:
        stop(served)


@pytest.mark.server
def test_serve_without_an_api_url_says_what_to_run_first(tmp_path):
    """Not a temporary server on a random port whose deployments vanish when it stops."""
    env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "serve.log"
    served = start([sys.executable, "-m", "flows.deploy", "--workspace", str(REPO)], env, log)
    try:
        code = served.wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None  # still serving
    finally:
        stop(served)  # it and any temporary server it started, by process group
    output = log.read_text()
    assert code not in (0, None) and "Traceback" not in output, output[-2000:]
    assert "prefect server start" in output and "export PREFECT_API_URL=" in output, output[-2000:]
