"""Horovod across hosts, on this one machine, with the real launcher paths clusters use.

Two "hosts" without SSH: horovodrun runs a rank locally when the host name resolves to one of this
machine's interface addresses (horovod/runner/util/network.py: filter_local_addresses,
gloo_run._exec_command), so `-H localhost:1,127.0.0.1:1` is two hosts of one slot each (cross
size 2, local size 1), both started directly. 127.0.0.2 is on the loopback too but is no
interface's address, so horovodrun reaches it over SSH: the SSH tests start OpenSSH's sshd on
127.0.0.2 (own config, host key and authorized_keys in tmp; `make sshd` installs the server),
where a test needs it in a mount namespace of its own where another directory is bind-mounted
over the workspace's data/cache, so that the rank it starts really sees other files (skipped
where `unshare --mount` is not allowed: an unprivileged container).

The ssh client is the distribution's, run with a config file of the test's (port, key,
known_hosts in tmp) through a two-line `ssh` first on PATH, so root's ~/.ssh is neither read nor
written; on a cluster the same lines go into ~/.ssh/config.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from alexnet.errors import EXIT_DATA, EXIT_TRANSIENT
from flows.workspace import set_params
from tests.conftest import make_workspace, run, stop_tree, tool_env
from tests.distributed.test_horovod import _rank_process, _wait_for_epoch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

SSH_HOST = "127.0.0.2"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # OpenSSH's compiled-in privilege separation directory


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A workspace run up to the cache (real dvc): tiny images, few of them."""
    ws = make_workspace(tmp_path_factory.mktemp("hosts") / "ws", per_class=16,
                        overrides={"split.val_fraction": 0.3})
    run(["dvc", "repro", "preprocess"], ws)
    return ws


def fresh_copy(cached: Path, where: Path, overrides: dict) -> Path:
    ws = where / "ws"
    shutil.copytree(cached, ws, ignore=shutil.ignore_patterns("models", "dvclive"))
    set_params(ws, {"train.workers": 2, **overrides})
    return ws


def test_two_hosts_train_and_resume_after_a_kill(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, {"train.hosts": "localhost:1,127.0.0.1:1",
                                       "train.epochs": 3})
    state = ws / "models/checkpoints/state.json"
    first = subprocess.Popen(["alexnet", "train"], cwd=ws, env=tool_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        remote = _rank_process(first.pid, 1)  # a child of horovodrun: no SSH on the way
        env = remote.environ()
        assert (env["HOROVOD_HOSTNAME"], env["HOROVOD_CROSS_SIZE"],
                env["HOROVOD_LOCAL_SIZE"]) == ("127.0.0.1", "2", "1")
        _wait_for_epoch(state, 1, first)
        remote.send_signal(signal.SIGKILL)  # the host 127.0.0.1 dies mid-training
        output, _ = first.communicate(timeout=300)
    finally:
        stop_tree(first)  # on a failure: alexnet train, horovodrun and the ranks
    assert first.returncode == EXIT_TRANSIENT, output[-3000:]
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3

    second = run(["alexnet", "train"], ws, timeout=600)
    log = second.stdout + second.stderr
    assert f"resuming from epoch {done} of 3" in log
    assert "on 2 host(s) (cross size)" in log and "1 per host" in log
    assert "all 2 rank(s) on 2 host(s) opened the same cache" in log
    meta = json.loads((ws / "models/candidate/model.json").read_text())
    assert meta["world_size"] == 2 and meta["epochs_completed"] == 3


# --- a rank launched over SSH ----------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alexnet-test",
                    "-f", str(path)], check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def _stop(proc: subprocess.Popen) -> None:
    """sshd and whatever its sessions still run (e.g. a rank of a failed test), by pid."""
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = psutil.Process(proc.pid).children(recursive=True)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(tree, timeout=10)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@functools.cache
def _no_namespaces() -> str | None:
    """None when this process can make a mount namespace (it needs CAP_SYS_ADMIN, which an
    unprivileged container lacks even as root), else why not."""
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else \
        f"`unshare --mount` fails here (no CAP_SYS_ADMIN?): {probe.stderr.strip()}"


def _start_sshd(tmp: Path, address: str, authorized: Path, bind: tuple[Path, Path] | None,
                log) -> tuple[subprocess.Popen, str]:
    """sshd -D for `address` on a free port; with `bind` (source, target), in a mount namespace
    of its own where source is mounted on target. Returns it and its ssh_config block."""
    port = _free_port(address)
    host_key = _keygen(tmp / f"host_key-{address}")
    conf = tmp / f"sshd_config-{address}"
    conf.write_text(
        f"ListenAddress {address}\nPort {port}\nHostKey {tmp / f'host_key-{address}'}\n"
        f"AuthorizedKeysFile {authorized}\nPidFile none\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPrintMotd no\nLogLevel VERBOSE\n")
    with open(tmp / "known_hosts", "a") as known:
        known.write(f"[{address}]:{port} {host_key}\n")
    serve = [SSHD, "-D", "-e", "-f", str(conf)]
    if bind is not None:
        serve = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", *map(str, bind), *serve]
    sshd = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if sshd.poll() is not None:
            raise AssertionError(f"sshd for {address} exited {sshd.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), 1):
            break
        if time.monotonic() > deadline:
            _stop(sshd)
            raise AssertionError(f"sshd for {address} never listened")
        time.sleep(0.1)
    block = (f"Host {address}\n  Port {port}\n  User root\n  IdentityFile {tmp / 'id_ed25519'}\n"
             f"  IdentitiesOnly yes\n  UserKnownHostsFile {tmp / 'known_hosts'}\n"
             "  BatchMode yes\n")
    return sshd, block


@contextlib.contextmanager
def ssh_hosts(tmp: Path, workspace: Path, caches: dict[str, Path | None]):
    """One sshd per address in `caches`; the sessions of an address mapped to a directory see
    that directory at workspace/data/cache. Yields the environment whose `ssh` reaches them
    (log in tmp/sshd.log); stops them and what their sessions run, by pid."""
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd logs in as root")
    if not os.access(SSHD, os.X_OK):
        pytest.skip("OpenSSH's sshd is not installed: run `make sshd` as root "
                    "(apt-get install openssh-server)")
    if any(cache is not None for cache in caches.values()) and _no_namespaces():
        pytest.skip(f"needs a mount namespace per host for its own data/cache: {_no_namespaces()}")
    tmp.mkdir()
    (tmp / "authorized_keys").write_text(_keygen(tmp / "id_ed25519") + "\n")
    (tmp / "bin").mkdir()
    wrapper = tmp / "bin/ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {tmp / 'ssh_config'} \"$@\"\n")
    wrapper.chmod(0o755)
    created = not PRIVSEP_DIR.exists()
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    servers: list[subprocess.Popen] = []
    with open(tmp / "sshd.log", "w") as log:
        try:
            blocks = []
            for address, cache in caches.items():
                bind = None if cache is None else (cache, workspace / "data/cache")
                sshd, block = _start_sshd(tmp, address, tmp / "authorized_keys", bind, log)
                servers.append(sshd)
                blocks.append(block)
            (tmp / "ssh_config").write_text("".join(blocks))
            yield tool_env(PATH=f"{tmp / 'bin'}{os.pathsep}{tool_env()['PATH']}")
        finally:
            for sshd in servers:
                _stop(sshd)
            if created:
                PRIVSEP_DIR.rmdir()


def test_rank_launched_over_ssh_trains(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, {"train.hosts": f"localhost:1,{SSH_HOST}:1",
                                       "train.epochs": 1})
    with ssh_hosts(tmp_path / "ssh", ws, {SSH_HOST: None}) as env:
        proc = run(["alexnet", "train"], ws, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert f"host {SSH_HOST} (machine {socket.gethostname()}, rank 1)" in log
    assert "on 2 host(s) (cross size)" in log
    assert "Accepted publickey for root" in (tmp_path / "ssh/sshd.log").read_text()
    assert json.loads((ws / "models/candidate/model.json").read_text())["world_size"] == 2


def test_hosts_with_another_cache_are_refused_before_training(cached, tmp_path):
    """Two hosts reached over SSH: one whose data/cache was built with other preprocess
    settings, one that never pulled it. The stage fails with exit 65 naming both, before
    anything is trained or written."""
    different, missing = "127.0.0.2", "127.0.0.3"
    ws = fresh_copy(cached, tmp_path, {"train.hosts": f"localhost:1,{different}:1,{missing}:1",
                                       "train.workers": 3, "train.batch_size": 15,
                                       "train.epochs": 1})
    params = tmp_path / "crop.yaml"
    params.write_text((ws / "params.yaml").read_text().replace("resize: squash", "resize: crop"))
    assert "resize: crop" in params.read_text()
    run(["alexnet", "preprocess", "--params", str(params), "--raw", "data/raw",
         "--splits", "data/splits.csv", "--out", str(tmp_path / "crop-cache")], ws)
    (tmp_path / "empty").mkdir()
    with ssh_hosts(tmp_path / "ssh", ws, {different: tmp_path / "crop-cache",
                                          missing: tmp_path / "empty"}) as env:
        proc = run(["dvc", "repro", "train"], ws, env=env, check=False, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    machine = socket.gethostname()
    assert (f"host {different} (machine {machine}, rank 1) has a different cache at "
            f"{ws / 'data/cache'} (digest ") in log, log[-3000:]
    assert (f"host {missing} (machine {machine}, rank 2) has no usable cache: "
            f"{ws / 'data/cache/index.json'}: no cache index") in log
    assert "rank 0) has" not in log  # rank 0's host is the reference
    assert f"exited with {EXIT_DATA}" in log  # dvc reports the stage's exit code
    assert not (ws / "models/candidate").exists()
    assert not (ws / "models/checkpoints/state.json").exists()
