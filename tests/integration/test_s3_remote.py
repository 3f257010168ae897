"""README's "On S3 or another S3-compatible store", as written there, against moto's S3 server
(the S3-compatible endpoint DVC's own tests use), started here on 127.0.0.1 and stopped by pid.

The recording workspace configures the remote with README's commands (keys in
.dvc/config.local, never committed) and runs the flow with the push switch on: the run's data,
cache and model land in the bucket. A fresh clone of the git remote, with its own DVC cache and
no way to the recording workspace's, gets the run back from the bucket alone with README's
commands: same metrics, same model sha256. Without the keys, `flows.reproduce` says which run,
which remote and what to configure. Real Prefect engine (test harness), real dvc (dvc-s3), real
horovodrun, no network beyond 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from alexnet.io import file_sha256
from flows.train_alexnet import train_alexnet
from tests.conftest import REPO, make_workspace, run, run_readme_lines, stop_tree, tool_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"train.workers": 1, "train.epochs": 1}
# README's placeholders; the bucket is created under README's own name, the keys are README's
# (moto takes any), so only the endpoint, the git URL and the run's name are substituted.
BUCKET, PREFIX, REMOTE = "my-bucket", "alexnet", "store"
KEY_ID, SECRET = "AKIAEXAMPLE", "SECRETEXAMPLE"
README_ENDPOINT, README_GIT, README_RUN = ("https://s3.example.com",
                                           "https://git.example.com/you/alexnet.git",
                                           "amber-hyena")
SUBSECTION = "### On S3 or another S3-compatible store"


def readme_s3_blocks() -> tuple[list[str], list[str]]:
    """The command lines of README's S3 subsection: (the workspace's block, the clone's block)."""
    text = (REPO / "README.md").read_text()
    section = text.split(SUBSECTION, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = [[ln for ln in b.splitlines() if ln.strip()]
              for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]
    workspace = next(b for b in blocks if b[0].startswith("dvc remote add -d "))
    clone = next(b for b in blocks if b[0].startswith("git clone "))
    return workspace, clone


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(log: Path, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """`python -m moto.server` on 127.0.0.1 on a free port; returns (process, endpoint URL)."""
    for _ in range(3):  # the port may be taken between free_port() and the server's bind
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env=tool_env(), start_new_session=True)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                return proc, endpoint
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        stop_tree(proc, grace=10)
    raise AssertionError(f"moto's S3 server did not start:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield endpoint
    finally:
        stop_tree(proc, grace=10)


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def no_ambient_aws(monkeypatch, tmp_path):
    """Only the keys README configures: none from this machine's environment or ~/.aws, and no
    EC2 metadata lookup (the one network call boto3 would make beyond 127.0.0.1)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def bucket_keys(endpoint: str) -> set[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                      aws_secret_access_key=SECRET, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def cache_objects(ws: Path) -> set[str]:
    """The DVC cache's objects as remote keys: files/md5/ab/cdef..."""
    root = ws / ".dvc/cache"
    return {str(p.relative_to(root)) for p in (root / "files").rglob("*") if p.is_file()}


def locked_md5(ws: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


def remote_key(md5: str) -> str:
    return f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}"


def test_run_pushed_to_s3_comes_back_in_a_fresh_clone(tmp_path, s3_endpoint, prefect_api,
                                                       no_ambient_aws):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    origin = tmp_path / "origin.git"
    ws = make_workspace(tmp_path / "workspace", overrides=FAST)
    run(["git", "init", "-q", "--bare", str(origin)], ws)
    run(["git", "remote", "add", "origin", str(origin)], ws)

    # README's workspace block, as written: the remote committed, the keys only in config.local.
    ws_block, clone_block = readme_s3_blocks()
    run_readme_lines(ws_block, ws, {README_ENDPOINT: s3_endpoint})
    assert run(["git", "status", "--porcelain"], ws).stdout == ""
    assert ".dvc/config.local" not in run(["git", "ls-files"], ws).stdout.split()
    run(["git", "check-ignore", "-q", ".dvc/config.local"], ws)  # exit 0: ignored
    assert SECRET in (ws / ".dvc/config.local").read_text()
    committed = run(["git", "show", "HEAD:.dvc/config"], ws).stdout
    assert f"s3://{BUCKET}/{PREFIX}" in committed and s3_endpoint in committed
    assert KEY_ID not in committed and SECRET not in committed
    assert run(["git", "ls-remote", "--heads", str(origin)], ws).stdout  # the branch is there

    state = train_alexnet(workspace=str(ws), return_state=True)
    assert state.is_completed(), state
    name = state.result()["experiment"]
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    model_sha = file_sha256(ws / "models/candidate/model.keras")

    # Pushed: every object of the run's DVC cache, among them the .dir objects of its raw data,
    # its cache and its model, is in the bucket; the experiment's ref is on the git remote.
    keys = bucket_keys(s3_endpoint)
    assert {f"{PREFIX}/{obj}" for obj in cache_objects(ws)} <= keys
    for stage, path in (("ingest", "data/raw"), ("preprocess", "data/cache"),
                        ("train", "models/candidate")):
        assert remote_key(locked_md5(ws, stage, path)) in keys, path
    assert f"/{name}" in run(["git", "ls-remote", str(origin), "refs/exps/*"], ws).stdout

    # The clone must not reach the recording workspace's cache: it is moved away meanwhile.
    away = ws / ".dvc/cache-away"
    (ws / ".dvc/cache").rename(away)
    try:
        clone_dir = tmp_path / "elsewhere"
        clone_dir.mkdir()
        lines = [ln.replace(README_GIT, str(origin)).replace(README_RUN, name)
                 for ln in clone_block]
        git_clone, keys_lines = lines[0], [ln for ln in lines if "--local" in ln]
        rest = [ln for ln in lines[1:] if ln not in keys_lines]
        clone = run_readme_lines([git_clone], clone_dir, {})
        assert clone.parent == clone_dir and (clone / ".git").is_dir()
        assert run(["dvc", "cache", "dir"], clone).stdout.strip() == str(clone / ".dvc/cache")
        assert run(["dvc", "remote", "list"], clone).stdout.split() == [
            REMOTE, f"s3://{BUCKET}/{PREFIX}", "(default)"]
        assert not (clone / ".dvc/config.local").exists()

        # Without the keys: one refusal that names the run, the remote and what to configure.
        refused = run([sys.executable, "-m", "flows.reproduce", name], clone, check=False)
        out = refused.stdout + refused.stderr
        assert refused.returncode == 78, out
        assert f"run {name!r}" in refused.stderr
        assert f"DVC remote {REMOTE!r} (s3://{BUCKET}/{PREFIX})" in refused.stderr
        assert f"dvc remote modify --local {REMOTE} access_key_id" in refused.stderr
        assert not re.search(r"[0-9a-f]{32}", out)  # no list of md5s

        # README's keys, then the rest of its clone block, as written: the run back from the
        # bucket alone. (A bucket that does not hold the run: tests/unit/test_reproduce.py.)
        run_readme_lines(keys_lines, clone, {})
        run_readme_lines(rest, clone, {})
        assert json.loads((clone / "reports/metrics.json").read_text()) == metrics
        assert file_sha256(clone / "models/candidate/model.keras") == model_sha
        assert cache_objects(clone)  # pulled into the clone's own cache
    finally:
        away.rename(ws / ".dvc/cache")
