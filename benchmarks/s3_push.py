"""What `dvc push` of a many-file `data/raw` costs on an S3 remote: files/s.

    python -m benchmarks.s3_push --n 3000 --jobs 8 32 2

Generates N Kaggle-sized JPEGs (benchmarks.gen_data) as `data/raw` of a scratch DVC workspace,
`dvc add`s it, starts moto's S3 server (what tests/integration/test_s3_remote.py uses) on
127.0.0.1, and times a full `dvc push` into an empty prefix of a bucket for each `--jobs` value
(DVC's default is 4 x cores), then a second, no-op push (the remote is only queried). Prints
JSON. moto is an in-memory Python server on the same cores as DVC, without network latency:
the figures say what DVC's per-file work costs, not what a real S3 endpoint would give (there,
latency per request dominates and more `--jobs` pay). Not part of `make bench` (kept out of its
time budget); README, "On S3 or another S3-compatible store", quotes the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.common import env as common_env
from benchmarks.gen_data import generate

KEY_ID, SECRET, BUCKET = "AKIAEXAMPLE", "SECRETEXAMPLE", "bench"


def _env() -> dict[str, str]:
    """benchmarks.common's environment (this venv's dvc first on PATH), without the caller's
    AWS settings: the remote's keys are moto's, in .dvc/config.local."""
    env = {k: v for k, v in common_env().items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", NO_PROXY="127.0.0.1")
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], cwd: Path) -> float:
    """Run a command (argument list, no shell); returns its wall time in seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), text=True, capture_output=True)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {output}")
    return time.perf_counter() - start


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=_env(), start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return proc, endpoint
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"moto's server did not start: {log.read_text()[-2000:]}")


def measure(n: int, jobs: list[int], data: Path) -> dict:
    import boto3
    import psutil

    generate(data, n)
    files = sum(1 for p in data.rglob("*.jpg"))
    mib = sum(p.stat().st_size for p in data.rglob("*.jpg")) / 2**20
    with tempfile.TemporaryDirectory(prefix="s3push-") as tmp:
        ws = Path(tmp) / "ws"
        shutil.copytree(data, ws / "data/raw", ignore=shutil.ignore_patterns("*.json"))
        moto, endpoint = start_moto(Path(tmp) / "moto.log")
        try:
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                         aws_secret_access_key=SECRET,
                         region_name="us-east-1").create_bucket(Bucket=BUCKET)
            _run(["git", "init", "-q"], ws)
            _run(["dvc", "init", "-q"], ws)
            add_s = _run(["dvc", "add", "-q", "data/raw"], ws)
            _run(["dvc", "remote", "add", "-d", "store", f"s3://{BUCKET}/j0"], ws)
            _run(["dvc", "remote", "modify", "store", "endpointurl", endpoint], ws)
            _run(["dvc", "remote", "modify", "--local", "store", "access_key_id", KEY_ID], ws)
            _run(["dvc", "remote", "modify", "--local", "store", "secret_access_key", SECRET], ws)
            pushes = []
            server = psutil.Process(moto.pid)
            for i, j in enumerate(jobs):  # each into an empty prefix: a full push
                _run(["dvc", "remote", "modify", "store", "url", f"s3://{BUCKET}/{i}-jobs{j}"],
                     ws)
                # CPU seconds of the push (a child, reaped) and of moto's server (not yet).
                dvc_cpu, server_cpu = _children_cpu(), sum(server.cpu_times()[:2])
                full = _run(["dvc", "push", "--jobs", str(j)], ws)
                dvc_cpu, server_cpu = (_children_cpu() - dvc_cpu,
                                       sum(server.cpu_times()[:2]) - server_cpu)
                again = _run(["dvc", "push", "--jobs", str(j)], ws)
                pushes.append({"jobs": j, "push_s": round(full, 1),
                               "files_per_s": round(files / full, 1),
                               "mib_per_s": round(mib / full, 1),
                               "dvc_cpu_s": round(dvc_cpu, 1),
                               "server_cpu_s": round(server_cpu, 1),
                               "noop_push_s": round(again, 1)})
        finally:
            moto.terminate()
            try:
                moto.wait(timeout=30)
            except subprocess.TimeoutExpired:
                moto.kill()
                moto.wait()
    return {"files": files, "mib": round(mib, 1), "cpus": os.cpu_count(),
            "dvc_add_s": round(add_s, 1), "dvc_add_files_per_s": round(files / add_s, 1),
            "pushes": pushes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="images (default 3000)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[4 * (os.cpu_count() or 1)],
                        help="`dvc push --jobs` values to time (default DVC's: 4 x cores)")
    parser.add_argument("--data", type=Path, default=Path("benchmarks/data/s3push"),
                        help="where the generated images are kept between runs")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.n, args.jobs, args.data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
