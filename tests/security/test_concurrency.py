"""Two runs in one workspace: they never interleave, and a lock DVC holds is waited for."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from tasks.stages import run_stage
from tests.conftest import dvc_up_to_date, make_workspace, run, tool_env
from tests.server.conftest import prefect_server  # noqa: F401  (a real server, for two runs)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def two_stage_project(ws):
    """Stage `a` writes a.txt (from a.in) once the file `release` exists (at most 300 s: not a
    fixed time, which a loaded machine could outlast); stage `b` reads a.txt."""
    ws.mkdir()
    (ws / "slow.py").write_text(
        "import pathlib, time\n"
        "t = time.monotonic()\n"
        "while not pathlib.Path('release').exists() and time.monotonic() - t < 300:\n"
        "    time.sleep(0.2)\n"
        "pathlib.Path('a.txt').write_text(pathlib.Path('a.in').read_text())\n")
    copy = "import pathlib; pathlib.Path('b.txt').write_text(pathlib.Path('a.txt').read_text())"
    stages = {"a": {"cmd": f"{sys.executable} slow.py", "deps": ["a.in"], "outs": ["a.txt"]},
              "b": {"cmd": f'{sys.executable} -c "{copy}"', "deps": ["a.txt"], "outs": ["b.txt"]}}
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (ws / "a.in").write_text("1")
    (ws / "a.txt").write_text("1")
    run(["git", "init", "-q"], ws)
    run(["dvc", "init", "-q"], ws)


@flow
def stage_b(ws):
    return run_stage.with_options(retries=4, retry_delay_seconds=8)("b", ws)


def test_a_dvc_output_busy_in_another_run_is_retried(tmp_path, prefect_api, caplog):
    ws = tmp_path / "ws"
    two_stage_project(ws)
    (ws / "a.in").write_text("2")
    writer = subprocess.Popen(["dvc", "repro", "--single-item", "a"], cwd=ws, env=tool_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rwlock = ws / ".dvc/tmp/rwlock"
        deadline = time.monotonic() + 120
        while not (rwlock.is_file() and "a.txt" in json.loads(rwlock.read_text() or "{}")
                   .get("write", {}).__repr__()):
            assert time.monotonic() < deadline and writer.poll() is None, writer.stdout.read()
            time.sleep(0.2)
        # `a` finishes once b's first try has found a.txt busy (or when the test ends).
        released = threading.Event()

        def release_when_busy():
            while not released.wait(0.2):
                if "is busy, it is being blocked by" in caplog.text:
                    break
            (ws / "release").touch()
        releaser = threading.Thread(target=release_when_busy, daemon=True)
        releaser.start()
        try:
            result = stage_b(ws)  # a.txt is being written: b's first try finds it busy
        finally:
            released.set()
            releaser.join()
        out, _ = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, out
    assert "is busy, it is being blocked by" in caplog.text
    assert result.ran and (ws / "b.txt").read_text() == "2"  # b read a's finished output


def start_flow(ws, env, log, *sets):
    cmd = [sys.executable, "-m", "flows.train_alexnet", "--workspace", str(ws)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=ws, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_group(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_two_flow_runs_12s_apart_each_get_what_they_asked_for(tmp_path, prefect_server):
    """Issue 18, item 3: `train.epochs=2`, then `=3` 12 s later. Before the workspace lock the
    model trained 2 epochs while dvc.lock and the experiment recorded 3."""
    ws = make_workspace(tmp_path / "ws", {"train.workers": 1})
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = start_flow(ws, prefect_server, logs[0], "train.epochs=2")
    second = None
    try:
        time.sleep(12)
        second = start_flow(ws, prefect_server, logs[1], "train.epochs=3")
        for proc in (first, second):
            proc.wait(timeout=1500)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_group(proc)
    outputs = [log.read_text() for log in logs]
    assert first.returncode == 0, outputs[0][-4000:]
    assert second.returncode == 0, outputs[1][-4000:]
    # One of them waited for the other, and said whose run it was waiting for.
    waited = [i for i, out in enumerate(outputs)
              if f"pid {(first, second)[1 - i].pid}" in out and "waiting" in out]
    assert len(waited) == 1, outputs
    # Each says that its --set stays in params.yaml (issue 18, item 8).
    assert all("Note: params.yaml keeps this run's settings (train.epochs)" in out
               for out in outputs)

    # The workspace agrees with the run that went last ...
    last = 3 if waited == [1] else 2
    assert yaml.safe_load((ws / "params.yaml").read_text())["train"]["epochs"] == last
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["train"]
    assert lock["params"]["params.yaml"]["train"]["epochs"] == last
    model = json.loads((ws / "models/candidate/model.json").read_text())
    assert model["epochs_completed"] == model["params"]["train"]["epochs"] == last
    assert dvc_up_to_date(ws)
    # ... and each recorded experiment holds the params, lock and model its own run asked for.
    for out, epochs in zip(outputs, (2, 3)):
        name = re.search(r"Recorded: DVC experiment (\S+)", out).group(1)
        run(["dvc", "exp", "apply", name], ws)
        assert yaml.safe_load((ws / "params.yaml").read_text())["train"]["epochs"] == epochs
        lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["train"]
        assert lock["params"]["params.yaml"]["train"]["epochs"] == epochs
        model = json.loads((ws / "models/candidate/model.json").read_text())
        assert model["epochs_completed"] == model["params"]["train"]["epochs"] == epochs, name


HOLD_LOCK = """
import sys
from pathlib import Path
from flows.workspace import workspace_lock
with workspace_lock(Path(sys.argv[1]), "flow run 'first'"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_workspace_lock_waits_for_the_holder_and_names_it(tmp_path):
    from flows.workspace import workspace_lock

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], env=tool_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        messages = []

        def release_soon(message):
            messages.append(message)
            holder.stdin.write("go\n")
            holder.stdin.flush()
        with workspace_lock(tmp_path, "flow run 'second'", on_wait=release_soon, poll_seconds=0.1):
            assert holder.wait(timeout=60) == 0  # we got it only once the holder was done
            assert "second" in (tmp_path / ".alexnet/flow.lock").read_text()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert len(messages) == 1 and f"flow run 'first' (pid {holder.pid}" in messages[0]
    assert "waiting" in messages[0]
