"""A real `prefect server start` on 127.0.0.1 per test, and helpers to start and stop processes
by their process group (never by name) with bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from tests.conftest import VENV_BIN, tool_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    # Own process group, so stopping it also stops the subprocesses it started.
    with sigint_at_default_in_children():
        return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def _swallow(signum, frame) -> None:
    """SIGINT meanwhile in this process: ignored, as it was."""


@contextlib.contextmanager
def sigint_at_default_in_children():
    """Processes started meanwhile get SIGINT at its default even if this process ignores it.

    A non-interactive shell's `cmd &` (CI, scripts) starts pytest with SIGINT ignored, and an
    ignored signal stays ignored through fork and exec. Prefect's worker turns SIGTERM into a
    SIGINT to itself, whose handler puts back the disposition it found (ignored) and sends it
    again (prefect.utilities.processutils.setup_signal_handlers_worker): the worker ignored
    `stop`'s SIGTERM and was SIGKILLed 30 s later, its flow runs left behind. A caught
    signal is reset to its default by exec: a handler that does nothing is installed meanwhile.
    The children have a session of their own, out of reach of a terminal's Ctrl-C, which is
    what the shell's ignoring protects against."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _swallow)  # only in the main thread, as fixtures run
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone by now
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen, log: Path,
               every: float = 1.0):
    """Poll `check()` until it returns a truthy value (returned); fail if `proc` dies or time
    runs out, with the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited {proc.returncode}\n{log.read_text()[-3000:]}")
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(every)
    raise AssertionError(f"{what}: not ready after {timeout}s\n{log.read_text()[-3000:]}")


def sync_client(api_url: str):
    """A context manager: Prefect's sync client talking to `api_url`."""
    import contextlib

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextlib.contextmanager
    def client():
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as c:
            yield c
    return client()


def listens(proc: subprocess.Popen, port: int) -> bool:
    """Whether `proc` or a process it started listens on `port`: the server answering there is
    ours, not one another test file (another pytest worker) started on a port it also found free."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for p in tree:
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in p.net_connections("inet")):
                return True
    return False


@contextlib.contextmanager
def running_prefect_server(tmp_path: Path, server_env: dict | None = None,
                           **extra: str) -> Iterator[dict]:
    """`prefect server start` on 127.0.0.1 and a free port (settings in `extra`, e.g. its
    database URL; `server_env` only for the server, e.g. its auth string); yields the
    environment that talks to it; stopped afterwards. The port is picked free, then bound by the
    server tens of seconds later: if another process took it meanwhile, a new port is tried."""
    for attempt in range(3):
        port = free_port()
        env = tool_env(PREFECT_HOME=str(tmp_path / "prefect-home"),
                       PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                       PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
                       **extra)
        log = tmp_path / "server.log"
        server = start([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                        "--port", str(port)], {**env, **(server_env or {})}, log)
        try:
            url = f"http://127.0.0.1:{port}/api/health"  # the health check needs no auth
            wait_until(lambda: listens(server, port)
                       and urllib.request.urlopen(url, timeout=5).status == 200, 180,
                       "prefect server", server, log)
        except BaseException as exc:
            stop(server)
            # Prefect's own check ("Port N is already in use") or uvicorn's bind ("address
            # already in use").
            if isinstance(exc, AssertionError) and attempt < 2 and \
                    "already in use" in log.read_text().lower():
                continue
            raise
        try:
            yield env
        finally:
            stop(server)
        return


@pytest.fixture
def prefect_server(tmp_path):
    """Environment (PREFECT_API_URL, PREFECT_HOME, ...) of a fresh server on SQLite."""
    with running_prefect_server(tmp_path) as env:
        yield env
