"""Shared helpers: A/B alternation, medians, fresh-subprocess probes, machine description."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MARK = "BENCH_JSON "
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def alternate(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each fn once per repeat, in A/B(/C) order, flipping the order every other repeat so
    neither side always runs first (warm caches, thermal state). Returns {name: [values]}."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(fns[name]())
    return out


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def env(**extra: str) -> dict[str, str]:
    e = {**os.environ, **QUIET_ENV, **extra}
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def probe(name: str, timeout: float = 900, extra_env: dict[str, str] | None = None,
          **kwargs: Any) -> dict[str, Any]:
    """Run benchmarks.probes.<name>(**kwargs) in a fresh Python process; return its JSON result.

    The kwargs go through stdin: a few thousand image paths exceed the argument-size limit."""
    cmd = [sys.executable, "-m", "benchmarks.probes", name, "-"]
    return run_json(cmd, timeout, extra_env, stdin=json.dumps(kwargs))


def run_json(cmd: list[str], timeout: float = 900, extra_env: dict[str, str] | None = None,
             stdin: str | None = None) -> dict[str, Any]:
    """Run `cmd`, return the last `BENCH_JSON {...}` line it prints (raise with its tail if none)."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env(**(extra_env or {})), capture_output=True,
                          text=True, timeout=timeout, input=stdin)
    found = [ln[ln.index(MARK) + len(MARK):] for ln in proc.stdout.splitlines() if MARK in ln]
    if proc.returncode != 0 or not found:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}:\n" + "\n".join(tail))
    return json.loads(found[-1])


def emit(result: dict[str, Any]) -> None:
    """What a probe prints as its result (read by run_json)."""
    print(MARK + json.dumps(result), flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(sorted({f for f in text.split() if f in ("avx2", "avx512f", "avx512_bf16",
                                                                     "amx_bf16", "fma")}))
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow-cpu", "horovod", "numpy", "pillow", "dvc", "prefect"):
        try:  # metadata only: importing TensorFlow here would start its threads before forks
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "cpu_flags": flags, "mem_gib": mem_gib,
            "python": platform.python_version(), "os": platform.platform(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load_avg_1min_at_start": load, "versions": versions}


@contextlib.contextmanager
def prefect_server(home: Path, log: Path, timeout: float = 120) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME; yields the
    environment variables that point clients at it. Stopped by process group id afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    extra = {"PREFECT_HOME": str(home), "PREFECT_API_URL": url,
             "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start"], env=env(**extra),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited {proc.returncode}: "
                                   f"{log.read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy after {timeout} s")
            time.sleep(0.5)
        yield extra
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
