"""Rows that time the library's stages directly (no TensorFlow in this process): decode,
incremental, and the orchestration row's plain-Python side.

    python -m benchmarks.pipeline_rows plain WORKSPACE   # every dvc.yaml stage via alexnet.cli.main
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import gen_data, reference
from benchmarks.common import ROOT, alternate, env, median, prefect_server, timed


def _quiet() -> None:
    logging.getLogger("alexnet").setLevel(logging.WARNING)


def _ingest_validate(source: Path, out: Path) -> dict:
    from alexnet.ingest import ingest
    from alexnet.params import IngestParams, ValidateParams
    from alexnet.validate import validate

    ingest(source, out / "raw", out / "manifest.csv", out / "ingest.json",
           IngestParams(layout="kaggle_flat"))
    # The verdict memo is what `alexnet validate` keeps between runs (dvc.yaml: data/verdicts.csv).
    return validate(out / "raw", out / "manifest.csv", out / "validated.csv",
                    out / "quarantine.csv", out / "validation.json", ValidateParams(),
                    memo_path=out / "verdicts.csv")


def _timed_stages(source: Path, out: Path) -> dict[str, float]:
    """ingest -> validate -> split -> preprocess (227 px uint8 cache: the training-ready pixels;
    the model's first layer scales them), the seconds of each stage."""
    from alexnet.ingest import ingest
    from alexnet.params import IngestParams, PreprocessParams, SplitParams, ValidateParams
    from alexnet.preprocess import preprocess
    from alexnet.split import split
    from alexnet.validate import validate

    steps = {
        "ingest": lambda: ingest(source, out / "raw", out / "manifest.csv", out / "ingest.json",
                                 IngestParams(layout="kaggle_flat")),
        "validate": lambda: validate(out / "raw", out / "manifest.csv", out / "validated.csv",
                                     out / "quarantine.csv", out / "validation.json",
                                     ValidateParams(), memo_path=out / "verdicts.csv"),
        "split": lambda: split(out / "validated.csv", out / "splits.csv", out / "split.json",
                               SplitParams()),
        "preprocess": lambda: preprocess(out / "raw", out / "splits.csv", out / "cache",
                                         PreprocessParams()),
    }
    return {name: timed(fn) for name, fn in steps.items()}


def decode(source: Path, repeats: int, tmp: Path) -> dict:
    """Row 1: raw JPEG folder -> training-ready pixels. Ours: ingest, validate, split, preprocess
    (all cores) into a fresh directory, each stage timed; the reference: the notebook's cv2 loop
    and float32 scaling (one thread). Same images, alternated."""
    _quiet()
    paths = gen_data.image_paths(source)
    n = len(paths)
    stages: list[dict[str, float]] = []

    def ours() -> float:
        out = Path(tempfile.mkdtemp(dir=tmp, prefix="decode-"))
        try:
            stages.append(_timed_stages(source, out))
            from alexnet.cache import read_index

            cached = sum(s["count"] for s in read_index(out / "cache")["splits"].values())
            assert cached == n, (cached, n)  # every image made it into the cache
            return n / sum(stages[-1].values())
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def ref() -> float:
        seconds = timed(lambda: reference.load_images(paths))
        return n / seconds

    runs = alternate({"ours": ours, "reference": ref}, repeats)
    stage_median = {k: median([s[k] for s in stages]) for k in stages[0]}
    total = sum(stage_median.values())
    return {"runs": runs, "median": {k: median(v) for k, v in runs.items()}, "images": n,
            "stage_seconds": stages, "stage_median_s": stage_median,
            "stage_share": {k: v / total for k, v in stage_median.items()}}


def _stages_to_cache(source: Path, out: Path) -> None:
    from alexnet.params import PreprocessParams, SplitParams
    from alexnet.preprocess import preprocess
    from alexnet.split import split

    _ingest_validate(source, out)
    split(out / "validated.csv", out / "splits.csv", out / "split.json", SplitParams())
    preprocess(out / "raw", out / "splits.csv", out / "cache", PreprocessParams())


def build_cache(source: Path, out: Path) -> Path:
    """ingest -> validate -> split -> preprocess at 227 px; returns the cache directory."""
    _quiet()
    _stages_to_cache(source, out)
    return out / "cache"


def split_files(out: Path, source: Path, which: str = "train") -> list[str]:
    """The image files, in `source`, of one split of a `build_cache(source, out)` run (rows 3
    and 10: the reference reads the same images from a folder, as the notebook does; data/raw
    holds them in packs, byte for byte the same)."""
    from alexnet.io import read_csv

    return [str(source / r["path"]) for r in read_csv(out / "splits.csv")
            if r["split"] == which]


def incremental(base: Path, extra: Path, repeats: int, tmp: Path) -> dict:
    """Row 9, as users run it: `dvc repro preprocess` after adding 5% new images to an already
    processed source, vs a cold `dvc repro preprocess` on the same final set. Each in a fresh
    git + DVC workspace with this checkout's pipeline, DVC config and default params, sources as
    hard links to the generated images (benchmarks.scale, which runs the same at 25,000)."""
    from benchmarks.scale import dvc_workspace, link_tree, repro

    base_paths, extra_paths = gen_data.image_paths(base), gen_data.image_paths(extra)
    stages: dict[str, list] = {"full": [], "incremental": []}

    def full() -> float:
        ws = Path(tempfile.mkdtemp(dir=tmp, prefix="inc-full-")) / "ws"
        try:
            dvc_workspace(ws, base_paths + extra_paths)
            r = repro(ws)
            stages["full"].append(r["stages"])
            return r["seconds"]
        finally:
            shutil.rmtree(ws.parent, ignore_errors=True)

    def rerun() -> float:
        ws = Path(tempfile.mkdtemp(dir=tmp, prefix="inc-")) / "ws"
        try:
            dvc_workspace(ws, base_paths)
            repro(ws)  # yesterday's run (not timed)
            link_tree(extra_paths, ws / "src")  # today: 5% new images arrive
            r = repro(ws)
            stages["incremental"].append(r["stages"])
            return r["seconds"]
        finally:
            shutil.rmtree(ws.parent, ignore_errors=True)

    runs = alternate({"full_s": full, "incremental_s": rerun}, repeats)
    return {"runs": runs, "median": {k: median(v) for k, v in runs.items()},
            "stage_seconds": stages, "base_images": len(base_paths),
            "new_images": len(extra_paths)}


# --- orchestration ---------------------------------------------------------------------------

# A small but real training job (227 px), so the figure says what Prefect and DVC cost on a run
# that trains, decodes and hashes real files; the overhead is reported in seconds (median of the
# paired differences) and as the ratio it implies for a 10-minute training run.
ORCH_OVERRIDES = {"train.batch_size": 32, "train.optimizer": "adam",
                  "train.learning_rate": 0.0001, "train.warmup_epochs": 0,
                  "evaluate.batch_size": 64,
                  # A short run may miss the default gate; with no champion written, DVC fails
                  # the promote stage (its out models/champion is missing): see the final report.
                  "promote.min_accuracy": 0.0, "promote.min_improvement": -1.0}
# Beside the pipeline itself (read from dvc.yaml: flows.workspace.pipeline_files): the Prefect
# flow's code and DVC's settings.
COPY = ("flows", "tasks", ".dvcignore")
# The `Throughput` line the train stage logs for every epoch (alexnet/distributed.py).
EPOCH_LINE = re.compile(r"epoch (\d+): (\d+) images in ([0-9.]+) s, ([0-9.]+) images/s")


def make_workspace(ws: Path, source: Path, epochs: int = 1,
                   overrides: dict | None = None) -> None:
    """A throwaway git + DVC project holding copies of the repo's pipeline files and a small
    data set, with `overrides` (default: the orchestration row's small settings) written into
    its params.yaml."""
    from flows.workspace import pipeline_files, set_params

    ws.mkdir(parents=True)
    for name in (*pipeline_files(ROOT), *COPY):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, ws / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, ws / name)
    shutil.copytree(source / "train", ws / "src" / "train")
    e = env()
    chosen = ORCH_OVERRIDES if overrides is None else overrides
    set_params(ws, {**chosen, "train.epochs": epochs, "ingest.source": "src"})
    # DVCLive (in the train stage) needs a repository with at least one commit.
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit",
                 "-q", "-m", "benchmark workspace"],
                # The flow pushes its outputs at the end (tasks/record.py): a local remote.
                ["dvc", "remote", "add", "-q", "-d", "local", str(ws.parent / "dvcstore")]):
        subprocess.run(cmd, cwd=ws, env=e, check=True, capture_output=True)


def epoch_rates(log: str) -> dict[int, float]:
    """{epoch: training images/s} from the train stage's log."""
    return {int(m.group(1)): float(m.group(4)) for m in EPOCH_LINE.finditer(log)}


def repro(ws: Path, target: str, log: Path) -> tuple[float, str]:
    """`dvc repro TARGET` in ws (its output kept in `log`); returns (seconds, output)."""
    t = time.perf_counter()
    proc = subprocess.run(["dvc", "repro", target], cwd=ws, env=env(), capture_output=True,
                          text=True, timeout=3600)
    dt = time.perf_counter() - t
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"dvc repro {target} failed ({proc.returncode}): "
                           + " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:]))
    return dt, proc.stdout + proc.stderr


def train_throughput(source: Path, tmp: Path, epochs: int) -> dict:
    """Row 10 (our side): `dvc repro train` with the repo's default params except train.epochs,
    227 px; images/s of each epoch from the stage's own log. Returns the train split's files
    too, for the reference's model.fit on the same images."""
    ws = Path(tempfile.mkdtemp(dir=tmp, prefix="e2e-")) / "ws"
    make_workspace(ws, source, epochs, overrides={})
    seconds, out = repro(ws, "train", ws.parent / "repro.log")
    rates = epoch_rates(out)
    assert sorted(rates) == list(range(1, epochs + 1)), out[-2000:]
    meta = json.loads((ws / "models/candidate/model.json").read_text())
    files = split_files(ws / "data", ws / "src", "train")
    params = meta["params"]["train"]
    return {"epoch_images_per_s": rates, "repro_s": seconds, "train_images": len(files),
            "files": files, "resolved": meta["resolved"], "batch_size": params["batch_size"],
            "steps_per_epoch": meta["steps_per_epoch"], "workspace": str(ws)}


# Parity: the flow's settings for small data (flows.train_alexnet.DEMO_OVERRIDES), which train to
# well above chance in a few epochs, so equal accuracy means something.
PARITY_OVERRIDES = {"preprocess.image_size": 96, "train.batch_size": 16,
                    "train.optimizer": "adam", "train.learning_rate": 0.0002,
                    "train.deterministic": True}


def sample_source(out: Path, per_class: int) -> Path:
    """`out/train/<class>/` of the project's synthetic sample (alexnet.sample_data, disks vs
    stripes, seed 0), generated once and reused: a set a small AlexNet learns in a few epochs."""
    from alexnet.sample_data import generate_sample_data

    stamp = out / "generated.json"
    want = {"per_class": per_class, "seed": 0, "version": 1}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == want):
        shutil.rmtree(out / "train", ignore_errors=True)
        generate_sample_data(out / "train", per_class=per_class, seed=0)
        stamp.write_text(json.dumps(want))
    return out


def precision_parity(source: Path, tmp: Path, epochs: int, seeds: list[int]) -> dict:
    """Row 6 (accuracy): `dvc repro evaluate` with train.mixed_precision float32 and bfloat16,
    once per train.seed in `seeds`, precisions alternated (fp32 first for even seeds' index);
    same images, split and params otherwise. One workspace: DVC runs ingest to preprocess once and
    then only train and evaluate, whose params changed. Per run: test accuracy and training
    images/s (median of epochs 2+); per precision: the runs in order of `seeds`."""
    ws = Path(tempfile.mkdtemp(dir=tmp, prefix="parity-")) / "ws"
    make_workspace(ws, source, epochs, overrides={**PARITY_OVERRIDES,
                                                   "train.mixed_precision": "float32"})
    from flows.workspace import set_params

    out: dict[str, list] = {"float32": [], "bfloat16": []}
    try:
        for i, seed in enumerate(seeds):
            for precision in (("float32", "bfloat16") if i % 2 == 0 else ("bfloat16", "float32")):
                set_params(ws, {"train.seed": seed, "train.mixed_precision": precision})
                seconds, log = repro(ws, "evaluate", ws.parent / f"repro-{precision}-{seed}.log")
                rates = epoch_rates(log)
                metrics = json.loads((ws / "reports/metrics.json").read_text())
                meta = json.loads((ws / "models/candidate/model.json").read_text())
                assert meta["resolved"]["mixed_precision"] == precision, meta["resolved"]
                assert meta["params"]["train"]["seed"] == seed, meta["params"]["train"]
                out[precision].append({
                    "seed": seed, "test_accuracy": metrics["accuracy"],
                    "test_images": metrics["n_test"], "epoch_images_per_s": rates,
                    "images_per_s": median([v for k, v in rates.items() if k > 1]),
                    "repro_s": seconds})
    finally:
        shutil.rmtree(ws.parent, ignore_errors=True)
    return out


def stage_argvs(ws: Path) -> dict[str, list[str]]:
    """The argv after `alexnet` of every dvc.yaml stage, in order, as DVC resolves them."""
    from flows.workspace import pipeline_stages

    argvs = {name: shlex.split(stage.cmd) for name, stage in pipeline_stages(ws).items()}
    assert all(argv[0] == "alexnet" for argv in argvs.values()), argvs
    return {name: argv[1:] for name, argv in argvs.items()}


def run_plain(ws: Path) -> None:
    """Every stage of dvc.yaml, in order, in this one process: no DVC, no Prefect."""
    from alexnet.cli import main

    os.chdir(ws)
    for stage, argv in stage_argvs(ws).items():
        code = main(argv)
        if code:
            raise SystemExit(f"stage {stage} exited {code}")


def orchestration(source: Path, repeats: int, tmp: Path, epochs: int,
                  noop_repeats: int = 3) -> dict:
    """Row 8: wall time of `python -m flows.train_alexnet` vs `python -m benchmarks.pipeline_rows
    plain` (same stages, one process), each in a fresh workspace, the flow reporting to a running
    Prefect server as deployments do; then a no-op `dvc repro`, and what a temporary server (no
    PREFECT_API_URL, e.g. `make run`) adds to a flow run."""
    logs = tmp / "orch-logs"
    logs.mkdir(exist_ok=True)
    last_flow_ws: list[Path] = []
    quiet = {"PREFECT_LOGGING_LEVEL": "WARNING"}

    def run(kind: str, server: dict[str, str]) -> float:
        ws = Path(tempfile.mkdtemp(dir=tmp, prefix=f"orch-{kind}-")) / "ws"
        make_workspace(ws, source, epochs)
        cmd = ([sys.executable, "-m", "flows.train_alexnet", "--workspace", str(ws)]
               if kind == "flow" else [sys.executable, "-m", "benchmarks.pipeline_rows", "plain",
                                       str(ws)])
        e = env(**quiet, **server)
        e["PYTHONPATH"] = f"{ws}{os.pathsep}{e['PYTHONPATH']}"
        with open(logs / f"{kind}-{ws.parent.name}.log", "w") as log:
            t = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ws, env=e, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=1800)
            dt = time.perf_counter() - t
        if proc.returncode:
            tail = Path(log.name).read_text().strip().splitlines()[-6:]
            raise RuntimeError(f"{kind} run failed ({proc.returncode}): " + " | ".join(tail))
        if kind == "flow":
            last_flow_ws.append(ws)
        else:
            shutil.rmtree(ws.parent, ignore_errors=True)
        return dt

    def noop_flow(server: dict[str, str]) -> float:
        return timed(lambda: subprocess.run(
            [sys.executable, "-m", "benchmarks.pipeline_rows", "noop-flow"], cwd=tmp, check=True,
            env=env(**quiet, **server), capture_output=True, timeout=300))

    with prefect_server(tmp / "prefect-home", logs / "server.log") as server:
        runs = alternate({"flow_s": lambda: run("flow", server),
                          "plain_s": lambda: run("plain", server)}, repeats)
        # A temporary server: the first run in a new PREFECT_HOME also creates its database.
        temporary = {"PREFECT_HOME": str(tmp / "prefect-temporary"), "PREFECT_API_URL": ""}
        cold = noop_flow(temporary)
        start = alternate({"temporary_s": lambda: noop_flow(temporary),
                           "server_s": lambda: noop_flow(server)}, 3)
    ws = last_flow_ws[-1]
    noop = []
    for _ in range(noop_repeats):
        t = time.perf_counter()
        out = subprocess.run(["dvc", "repro"], cwd=ws, env=env(), capture_output=True, text=True,
                             timeout=600)
        noop.append(time.perf_counter() - t)
        if out.returncode:
            raise RuntimeError(f"no-op dvc repro failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    ran = [ln for ln in out.stdout.splitlines() if ln.startswith("Running stage")]
    median_start = {k: median(v) for k, v in start.items()}
    # Each repeat is one flow run and one plain run side by side: their difference is what
    # orchestration added to that pair.
    overhead = [f - p for f, p in zip(runs["flow_s"], runs["plain_s"])]
    return {"runs": runs, "median": {k: median(v) for k, v in runs.items()},
            "overhead_s": overhead, "overhead_median_s": median(overhead),
            "noop_dvc_repro_s": noop, "noop_median_s": median(noop), "noop_stages_run": ran,
            "noop_flow_runs": start, "temporary_server_s": median_start["temporary_s"]
            - median_start["server_s"], "temporary_server_first_s": cold - median_start["server_s"],
            "overrides": {**ORCH_OVERRIDES, "train.epochs": epochs},
            "images": len(gen_data.image_paths(source))}


def _noop_flow() -> None:
    from prefect import flow

    @flow(name="bench-noop")
    def noop() -> None:
        return None

    noop()


if __name__ == "__main__":
    if sys.argv[1] == "plain":
        logging.basicConfig(level=logging.WARNING)
        run_plain(Path(sys.argv[2]).resolve())
    elif sys.argv[1] == "noop-flow":
        _noop_flow()
