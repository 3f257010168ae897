"""The scale bench: the motivating data set's size (Kaggle dogs-vs-cats, 25,000 images) through
`dvc repro`, as a user runs it. Not part of `make bench`: `make bench-scale` (tens of minutes,
~5 GB of disk while it runs).

    python -m benchmarks.scale [--n 25000] [--no-evaluate] [--before OLD/scale.json]

Generates n Kaggle-sized JPEGs once (benchmarks/data/scale/, git-ignored, reused when present)
plus 5% more, builds a throwaway git + DVC workspace with this checkout's pipeline, DVC config
and default params, and reports:

- `dvc repro preprocess` seconds: cold, nothing changed, after adding 5% new images (the ratio
  to cold is issue 15's target, <= 0.15), with each stage's share read from DVC's own output;
- disk per folder, each inode counted once (hard links into DVC's cache cost nothing), and the
  workspace total against raw + uint8 cache (target <= 1.1x);
- peak memory of `alexnet evaluate` on the test split (an untrained AlexNet: the figure is about
  memory, not accuracy): anonymous memory (heap: what the batch costs) and file-backed memory
  (memory-mapped cache pages, which the kernel drops under pressure) separately.

Writes benchmarks/SCALE.md and benchmarks/scale.json; the workspace is removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import gen_data
from benchmarks.common import ROOT, env, machine

DATA = ROOT / "benchmarks" / "data" / "scale"
# Workspace files besides the pipeline's own (flows.workspace.pipeline_files).
SETTINGS = (".dvc/config", ".dvc/.gitignore", ".dvcignore")
# Folders whose disk use is reported, relative to the workspace.
FOLDERS = ("data/raw", "data/cache", ".dvc/cache", "data/.raw.kept", "data/.cache.kept")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def link_tree(paths: list[Path], dst: Path) -> None:
    """Put `paths` into dst/train as hard links (a source folder that costs no disk)."""
    (dst / "train").mkdir(parents=True, exist_ok=True)
    for p in paths:
        target = dst / "train" / p.name
        if not target.exists():
            os.link(p, target)


def dvc_workspace(ws: Path, images: list[Path], params: dict | None = None) -> Path:
    """A git + DVC project with this checkout's pipeline, DVC config and params (default, but
    for `params`), whose ingest.source `src` holds `images` as hard links."""
    from flows.workspace import pipeline_files, set_params

    ws.mkdir(parents=True)
    for name in (*pipeline_files(ROOT), *SETTINGS):
        src, dst = ROOT / name, ws / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    link_tree(images, ws / "src")
    set_params(ws, {"ingest.source": "src", **(params or {})})
    (ws / ".gitignore").write_text("/src/\n/data/\n")
    for cmd in (GIT + ["init", "-q"], GIT + ["add", "-A"], GIT + ["commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=ws, env=env(), check=True, capture_output=True)
    return ws


def repro(ws: Path, target: str = "preprocess") -> dict:
    """Run `dvc repro TARGET` in `ws`; its wall time and, from DVC's output lines as they come,
    each stage's seconds from 'Running stage' to its lock update (command + DVC hashing and
    caching its outs), or to the next stage's line when it updated nothing. Raises with the output's tail if it fails."""
    proc = subprocess.Popen(["dvc", "repro", target], cwd=ws, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0, lines = time.perf_counter(), []
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip()))
    code = proc.wait()
    total = time.perf_counter() - t0
    if code:
        raise RuntimeError(f"dvc repro {target} exited {code}:\n"
                           + "\n".join(ln for _, ln in lines[-20:]))
    # A stage runs from its "Running stage" line to its lock update, or, when its outputs did
    # not change (ingest, which always runs, finding nothing new), to the next stage's line.
    stages, current = {}, None
    for t, line in [*lines, (total, "Running stage '(end)'")]:
        m = re.match(r"Running stage '([^']+)'", line)
        if current and (m or line.startswith(("Updating lock file", "Stage '"))):
            stages[current[0]] = round(t - current[1], 1)
            current = None
        if m:
            current = (m.group(1), t)
    skipped = [m.group(1) for _, ln in lines
               if (m := re.match(r"Stage '([^']+)' didn't change", ln))]
    return {"seconds": round(total, 1), "stages": stages, "skipped": skipped}


def disk(ws: Path, folders: tuple[str, ...] = FOLDERS) -> dict:
    """MB on disk per folder (blocks of its files, each inode once), the workspace total (each
    inode once across all of it, the source folder `src` aside) and the ratio to raw + cache."""
    seen: set[int] = set()
    per: dict[str, float] = {}
    for folder in folders:
        own: set[int] = set()
        size = 0
        for dirpath, _dirs, files in os.walk(ws / folder):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino not in own:
                    own.add(st.st_ino)
                    size += st.st_blocks * 512
        per[folder] = round(size / 1e6, 1)
        seen |= own
    total = 0
    counted: set[int] = set()
    for dirpath, dirs, files in os.walk(ws):
        if Path(dirpath) == ws:
            dirs[:] = [d for d in dirs if d != "src"]
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in counted:
                counted.add(st.st_ino)
                total += st.st_blocks * 512
    base = per["data/raw"] + per["data/cache"]
    return {"mb": per, "total_mb": round(total / 1e6, 1),
            "ratio_to_raw_plus_cache": round(total / 1e6 / base, 3) if base else None}


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def peak_memory(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd`; its peak resident memory (VmHWM) and the peaks of its anonymous and
    file-backed parts, sampled from /proc every 0.1 s, in MB."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}

    def sample() -> None:
        while proc.poll() is None:
            for key, kb in _status_kb(proc.pid).items():
                peaks[key] = max(peaks.get(key, 0), kb)
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[:2]} exited {proc.returncode}:\n{err[-2000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1),
            **{f"{k}_mb": round(v / 1024) for k, v in peaks.items()}}


def evaluate_memory(ws: Path) -> dict:
    """Peak memory of `alexnet evaluate` on the workspace's test split, with an untrained
    AlexNet saved as training saves one (memory does not depend on the weights)."""
    from alexnet.cache import read_index

    index = read_index(ws / "data/cache")
    model_dir = ws / "bench-model"
    code = ("import sys; from alexnet.model import build_alexnet, save_model; "
            "save_model(build_alexnet(int(sys.argv[1]), int(sys.argv[2]), seed=0), sys.argv[3], "
            "{'classes': sys.argv[4].split(','), 'image_size': int(sys.argv[2]), "
            "'resize': sys.argv[5]})")
    model_dir.mkdir()
    subprocess.run([sys.executable, "-c", code, str(len(index["classes"])),
                    str(index["image_size"]), str(model_dir), ",".join(index["classes"]),
                    index["resize"]], cwd=ws, env=env(), check=True, capture_output=True)
    out = ws / "bench-eval"
    n, size = index["splits"]["test"]["count"], index["image_size"]
    mem = peak_memory(["alexnet", "evaluate", "--model-dir", str(model_dir), "--cache",
                       "data/cache", "--metrics", f"{out}/metrics.json", "--predictions",
                       f"{out}/predictions.csv", "--roc", f"{out}/roc.csv", "--figures",
                       f"{out}/figures"], ws)
    return {**mem, "test_images": n,
            "test_split_uint8_mb": round(n * size * size * 3 / 1e6),
            "test_split_float32_mb": round(n * size * size * 3 * 4 / 1e6)}


@contextlib.contextmanager
def scratch_workspace(data: Path) -> Iterator[Path]:
    """A path for the bench's workspace inside a new folder of `data`, removed afterwards with
    everything in it: only what this run created (`--data` may be a folder of the user's)."""
    data.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".scale-ws-", dir=data))
    try:
        yield scratch / "ws"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(n: int, with_evaluate: bool = True, data: Path = DATA) -> dict:
    extra_n = max(1, n // 20)
    t = time.perf_counter()
    gen_data.generate(data / "kaggle", n)
    gen_data.generate(data / "extra", extra_n, start=n)
    generated_s = time.perf_counter() - t
    base, extra = gen_data.image_paths(data / "kaggle"), gen_data.image_paths(data / "extra")
    result = {"machine": machine(), "images": n, "new_images": extra_n,
              "generate_s": round(generated_s, 1),
              "source_mb": round(sum(p.stat().st_size for p in base) / 1e6, 1)}
    with scratch_workspace(data) as ws:
        dvc_workspace(ws, base)
        result["cold"] = repro(ws)
        result["disk_after_cold"] = disk(ws)
        result["noop"] = repro(ws)
        link_tree(extra, ws / "src")
        result["incremental"] = repro(ws)
        result["disk"] = disk(ws)
        result["incremental_ratio"] = round(result["incremental"]["seconds"]
                                            / result["cold"]["seconds"], 3)
        if with_evaluate:
            result["evaluate"] = evaluate_memory(ws)
        result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def report(r: dict) -> str:
    """benchmarks/SCALE.md from a result of `run`."""
    m = r["machine"]
    lines = [
        "# Scale bench (`make bench-scale`)",
        "",
        f"{r['images']:,} generated Kaggle-sized JPEGs ({r['source_mb']:.0f} MB), default params "
        f"(227 px), this checkout's dvc.yaml and .dvc/config, `dvc repro preprocess` as a user "
        f"runs it. {m['date']}, {m['nproc']} cores ({m['cpu']}), load average "
        f"{m['load_avg_1min_at_start']:.2f} at the start, {r.get('load_avg_at_end')} at the end "
        "(wall seconds; the load averages show what else ran, and the ratio to cold depends "
        "on it: cold uses both cores, an incremental run mostly one).",
        "",
        "| `dvc repro preprocess` | seconds | stages run (seconds each, command + DVC caching its outs) |",
        "| --- | --- | --- |",
    ]
    for key, label in (("cold", "cold"), ("noop", "nothing changed"),
                       ("incremental", f"after adding {r['new_images']:,} images (5%)")):
        s = r[key]
        stages = ", ".join(f"{k} {v}" for k, v in s["stages"].items()) or "none"
        lines.append(f"| {label} | {s['seconds']} | {stages} |")
    lines += ["", f"Incremental / cold: **{r['incremental_ratio']:.2f}** (target <= 0.15).", "",
              "| folder | MB on disk (each inode once) |", "| --- | --- |"]
    for folder, mb in r["disk"]["mb"].items():
        lines.append(f"| `{folder}` | {mb:,.0f} |")
    d = r["disk"]
    lines += [f"| workspace total (source folder aside) | {d['total_mb']:,.0f} |", "",
              f"Workspace / (raw + uint8 cache): **{d['ratio_to_raw_plus_cache']:.2f}x** "
              "(target <= 1.1x): `.dvc/cache` and the kept twins are hard links to the same files.",
              ""]
    if "evaluate" in r:
        e = r["evaluate"]
        lines += [f"`alexnet evaluate` on the {e['test_images']:,}-image test split "
                  f"(uint8 {e['test_split_uint8_mb']:,} MB, float32 "
                  f"{e['test_split_float32_mb']:,} MB), batch 256, {e['seconds']} s: peak RSS "
                  f"{e.get('VmHWM_mb')} MB, of which anonymous (heap) at most "
                  f"{e.get('RssAnon_mb')} MB and memory-mapped cache pages at most "
                  f"{e.get('RssFile_mb')} MB (page cache, dropped under memory pressure).", ""]
    if "before" in r:
        lines += _before(r["before"])
    return "\n".join(lines)


def _before(b: dict) -> list[str]:
    """The same figures from an earlier run (`--before its scale.json`), e.g. of the code
    before a change, run just before this one on the same images."""
    m = b["machine"]
    lines = ["## Before", "",
             f"`--before`: {b.get('label') or 'an earlier run'}, {m['date']}, load average "
             f"{m['load_avg_1min_at_start']:.2f} at the start, {b.get('load_avg_at_end')} at the "
             "end.", "",
             "| `dvc repro preprocess` | seconds | stages run |", "| --- | --- | --- |"]
    for key, label in (("cold", "cold"), ("noop", "nothing changed"),
                       ("incremental", f"after adding {b['new_images']:,} images (5%)")):
        stages = ", ".join(f"{k} {v}" for k, v in b[key]["stages"].items()) or "none"
        lines.append(f"| {label} | {b[key]['seconds']} | {stages} |")
    d = b["disk"]
    lines += ["", f"Incremental / cold: {b['incremental_ratio']:.2f}; workspace / (raw + uint8 "
              f"cache): {d['ratio_to_raw_plus_cache']:.2f}x ({d['total_mb']:,.0f} MB).", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=25000)
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--data", type=Path, default=DATA, help="where the images are generated")
    ap.add_argument("--before", type=Path, metavar="SCALE_JSON",
                    help="an earlier run's scale.json, reported beside this one")
    ap.add_argument("--before-label", default="", help="what the earlier run ran, e.g. a commit")
    a = ap.parse_args()
    before = json.loads(a.before.read_text()) if a.before else None
    r = run(a.n, with_evaluate=not a.no_evaluate, data=a.data)
    if before:
        r["before"] = {**before, "label": a.before_label or before.get("label", "")}
        r["before"].pop("before", None)
    (ROOT / "benchmarks/scale.json").write_text(json.dumps(r, indent=2) + "\n")
    (ROOT / "benchmarks/SCALE.md").write_text(report(r) + "\n")
    print(report(r))


if __name__ == "__main__":
    main()
