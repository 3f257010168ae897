"""Run the ratio benchmarks and write benchmarks/results.json and benchmarks/RESULTS.md.

    python -m benchmarks.run                 # full run (~12 min on 2 cores), what `make bench` does
    python -m benchmarks.run --quick         # smoke run (< ~3 min): tiny sizes, 1 repeat
    python -m benchmarks.run --rows 1,2      # only some rows (RESULTS.md then lists just those)

Every figure is a ratio of two things measured side by side in this run (alternating A/B, median
of the repeats); no absolute time is asserted except where a row's target is a rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import gen_data, pipeline_rows
from benchmarks.common import env, machine, probe, run_json

HERE = Path(__file__).resolve().parent
GFLOP = 6.8


def settings(quick: bool, images: int) -> dict[str, Any]:
    if quick:
        return dict(images=min(images, 160), repeats=1, loader_batches=6, ref_batches=2,
                    train_steps=1, train_repeats=1, mp_pairs=1, mp_steps=1, hvd_steps=1,
                    hvd_repeats=1, hvd_fp16=False, orch=False, inc_repeats=1, batch=32,
                    orch_images=0, orch_epochs=0)
    return dict(images=images, repeats=3, loader_batches=20, ref_batches=4, train_steps=4,
                train_repeats=3, mp_pairs=2, mp_steps=3, hvd_steps=3, hvd_repeats=2,
                hvd_fp16=True, orch=True, inc_repeats=2, batch=32, orch_images=600,
                orch_epochs=6)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.s = settings(args.quick, args.images)
        self.data = HERE / "data"
        self.tmp = Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
        self.results: dict[str, Any] = {"machine": machine(), "quick": args.quick,
                                        "settings": self.s, "rows": {}}
        self._cache: Path | None = None

    # -- data -----------------------------------------------------------------------------
    @property
    def source(self) -> Path:
        return self.data / f"kaggle-{self.s['images']}"

    def images(self) -> list[str]:
        return [str(p) for p in gen_data.image_paths(self.source)]

    def cache(self) -> Path:
        if self._cache is None:
            self._cache = pipeline_rows.build_cache(self.source, self.tmp / "base")
        return self._cache

    # -- rows -----------------------------------------------------------------------------
    def row1(self) -> dict:
        r = pipeline_rows.decode(self.source, self.s["repeats"], self.tmp)
        ours, ref = r["median"]["ours"], r["median"]["reference"]
        ratio = ours / ref
        return dict(r, figure=f"{ratio:.2f}x ({ours:.0f} vs {ref:.0f} img/s)", ratio=ratio,
                    passed=ratio >= 3 and ours >= 300, target=">= 3x and >= 300 img/s")

    def row2(self) -> dict:
        r = probe("loader", cache=str(self.cache()), images=self.images(), batch=self.s["batch"],
                  batches=self.s["loader_batches"], ref_batches=self.s["ref_batches"],
                  repeats=self.s["repeats"])
        m = r["median"]
        ratio = m["ours"] / m["reference"]
        return dict(r, ratio=ratio, ratio_vs_jpeg=m["ours"] / m["jpeg"], target=">= 5x reference",
                    passed=ratio >= 5,
                    figure=f"{ratio:.1f}x reference; {m['ours'] / m['jpeg']:.2f}x on-the-fly JPEG "
                           f"({m['ours']:.2f} / {m['jpeg']:.2f} / {m['reference']:.2f} batches/s)")

    def row3(self) -> dict:
        runs: dict[str, list] = {"ours": [], "reference": []}
        for i in range(max(1, self.s["repeats"] - 1)):
            for kind in (("ours", "reference") if i % 2 == 0 else ("reference", "ours")):
                runs[kind].append(probe("memory", kind=kind, cache=str(self.cache()),
                                        images=self.images(), batch=self.s["batch"]))

        def above(r: dict, key: str) -> int:
            return r["peak"][key] - r["baseline"][key]

        med = {k: sorted(above(r, "rss") for r in v)[len(v) // 2] for k, v in runs.items()}
        anon = {k: sorted(above(r, "anon") for r in v)[len(v) // 2] for k, v in runs.items()}
        ratio = med["ours"] / med["reference"]
        mib = lambda b: b / 2**20  # noqa: E731
        return dict(runs=runs, peak_above_baseline_bytes=med, anon_above_baseline_bytes=anon,
                    ratio=ratio, ratio_anon=anon["ours"] / anon["reference"], target="<= 0.25",
                    passed=ratio <= 0.25,
                    figure=f"{ratio:.2f} ({mib(med['ours']):.0f} vs {mib(med['reference']):.0f} MiB "
                           f"peak RSS above the TF baseline; anonymous only: "
                           f"{anon['ours'] / anon['reference']:.2f})")

    def _train(self) -> dict:
        if "_train" not in self.results:
            self.results["_train"] = probe("train", cache=str(self.cache()), batch=self.s["batch"],
                                           steps=self.s["train_steps"],
                                           repeats=self.s["train_repeats"])
        return self.results["_train"]

    def row4(self) -> dict:
        r = self._train()
        m = r["median"]
        ratio = m["pipeline"] / m["synthetic"]
        return dict(r, ratio=ratio, target=">= 0.95", passed=ratio >= 0.95,
                    figure=f"{ratio:.2f} ({m['pipeline']:.1f} vs {m['synthetic']:.1f} img/s)")

    def row5(self) -> dict:
        r = self._train()
        m = r["median"]
        achieved = m["pipeline"] * GFLOP
        ratio = achieved / m["matmul_gflops"]
        return dict(achieved_gflops=achieved, matmul_gflops=m["matmul_gflops"], ratio=ratio,
                    target=">= 0.5 (report)", passed=ratio >= 0.5,
                    figure=f"{ratio:.2f} ({achieved:.0f} of {m['matmul_gflops']:.0f} GFLOP/s)")

    def row6(self) -> dict:
        runs: dict[str, list] = {"fp32": [], "bf16": []}
        for i in range(self.s["mp_pairs"]):
            for pol in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
                runs[pol].append(probe("precision", policy=pol, batch=self.s["batch"], size=227,
                                       steps=self.s["mp_steps"], repeats=2)["median"])
        med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
        ratio = med["bf16"] / med["fp32"]
        return dict(runs=runs, median=med, ratio=ratio, target="> 1 (report)", passed=ratio > 1,
                    figure=f"{ratio:.2f}x ({med['bf16']:.1f} vs {med['fp32']:.1f} img/s)")

    def _hvd(self, np_: int, threads: int, fp16: bool) -> dict:
        cmd = [str(Path(sys.executable).parent / "horovodrun"), "-np", str(np_), "-H",
               f"localhost:{np_}", "--gloo", sys.executable, "-m", "benchmarks.hvd_worker",
               "--threads", str(threads), "--batch", str(self.s["batch"]), "--size", "227",
               "--steps", str(self.s["hvd_steps"]), "--repeats", str(self.s["hvd_repeats"])]
        return run_json(cmd + (["--fp16"] if fp16 else []), timeout=900)

    def row7(self) -> dict:
        configs = {"np1_t2": (1, 2, False), "np2_t1": (2, 1, False)}
        if self.s["hvd_fp16"]:
            configs["np2_t1_fp16"] = (2, 1, True)
        runs = {k: self._hvd(*v)["median"] for k, v in configs.items()}
        ratio = runs["np2_t1"] / runs["np1_t2"]
        fig = f"2 workers / 1 worker: {ratio:.2f}x ({runs['np2_t1']:.1f} vs {runs['np1_t2']:.1f} img/s)"
        out = dict(median=runs, ratio=ratio, target="report", passed=None)
        if "np2_t1_fp16" in runs:
            out["ratio_fp16"] = runs["np2_t1_fp16"] / runs["np2_t1"]
            fig += f"; fp16 compression on/off: {out['ratio_fp16']:.2f}x"
        return dict(out, figure=fig)

    def row8(self) -> dict:
        if not self.s["orch"]:
            return dict(figure="not measured", target="<= 1.10", passed=None,
                        why="skipped in --quick: two real training runs take ~8 minutes")
        n, epochs = self.s["orch_images"], self.s["orch_epochs"]
        src = self.data / f"orch-{n}"
        gen_data.generate(src, n, seed=1)
        r = pipeline_rows.orchestration(src, 1, self.tmp, epochs)
        m = r["median"]
        ratio = m["flow_s"] / m["plain_s"]
        return dict(r, ratio=ratio, target="<= 1.10", passed=ratio <= 1.10,
                    figure=f"{ratio:.2f} ({m['flow_s']:.0f} vs {m['plain_s']:.0f} s: "
                           f"{m['flow_s'] - m['plain_s']:.0f} s fixed); no-op `dvc repro` "
                           f"{r['noop_median_s']:.1f} s; a temporary server adds "
                           f"{r['temporary_server_s']:.1f} s ({r['temporary_server_first_s']:.0f} s "
                           "the first time)")

    def row9(self) -> dict:
        n = self.s["images"]
        extra = self.data / f"kaggle-extra-{n}"
        gen_data.generate(extra, max(1, math.ceil(0.05 * n)), start=n)
        r = pipeline_rows.incremental(self.source, extra, self.s["inc_repeats"], self.tmp)
        m = r["median"]
        ratio = m["incremental_s"] / m["full_s"]
        return dict(r, ratio=ratio, target="<= 0.15", passed=ratio <= 0.15,
                    figure=f"{ratio:.2f} ({m['incremental_s']:.1f} vs {m['full_s']:.1f} s)")

    # -- driver ---------------------------------------------------------------------------
    def run(self, rows: list[int]) -> None:
        t0 = time.perf_counter()
        self.results["data"] = gen_data.generate(self.source, self.s["images"])
        for i in rows:
            name = ROWS[i][0]
            print(f"[{time.perf_counter() - t0:6.0f}s] row {i}: {name} ...", flush=True)
            t = time.perf_counter()
            try:
                res = getattr(self, f"row{i}")()
            except Exception as exc:  # noqa: BLE001 - a failed row is reported, the rest still run
                traceback.print_exc()
                res = dict(figure="not measured", passed=None, target=TARGETS[i],
                           why=f"error: {type(exc).__name__}: {str(exc).splitlines()[-1][:300]}")
            res["seconds"] = round(time.perf_counter() - t, 1)
            self.results["rows"][str(i)] = {"name": name, **res}
            print(f"         -> {res['figure']}  [{res['seconds']} s]", flush=True)
            self.save()
        self.results.pop("_train", None)
        self.results["total_seconds"] = round(time.perf_counter() - t0, 1)
        self.save()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def save(self) -> None:
        out = Path(self.args.out)
        data = {k: v for k, v in self.results.items() if not k.startswith("_")}
        out.write_text(json.dumps(data, indent=2, default=str))
        (out.parent / "RESULTS.md").write_text(render(data))


ROWS: dict[int, tuple[str, str]] = {
    1: ("decode", "`alexnet.ingest.ingest` + `alexnet.validate.validate` (process pool, all cores) "
                  "on the generated folder into a temp dir, vs `reference.load_images` (one thread: "
                  "PIL open, convert RGB, resize 227, float32); images/s each, alternated"),
    2: ("loader", "augmented 227 px batches/s, batch 32, fresh iterator per repeat, 2 warm-up "
                  "batches: `alexnet.data.train_dataset` over the cache built by "
                  "`alexnet.preprocess.preprocess` vs tf.data `decode_jpeg`+resize+the same "
                  "OpenCV augmentation (`tf.numpy_function`) vs the reference (float32 in RAM + "
                  "`ImageDataGenerator.flow`); one process, OpenCV on one thread as in training, "
                  "alternated (`probes.loader`)"),
    3: ("memory", "peak RSS above the post-`import tensorflow` baseline, sampled every 20 ms from "
                  "/proc/self/status in a fresh process per side: one full epoch of "
                  "`train_dataset` over the memmap cache vs the reference's float32 load + 3 "
                  "`flow` batches (`probes.memory`)"),
    4: ("input-bound", "`model.fit` images/s on `train_dataset` vs on one in-memory synthetic "
                       "batch repeated; same fp32 model, batch 32, 227 px, same process, "
                       "alternated blocks, first step of each block excluded (`probes.train`)"),
    5: ("compute", "achieved GFLOP/s (row 4's pipeline images/s x 6.8 GFLOP) vs float32 "
                   "2048x2048 `tf.linalg.matmul` GFLOP/s measured between the same blocks"),
    6: ("mixed precision", "synthetic-batch training images/s under `mixed_bfloat16` vs float32, "
                           "each in its own fresh process, processes alternated (`probes.precision`)"),
    7: ("horovod", "`horovodrun -np 2 --gloo`, 1 intra-op thread each vs `-np 1` with 2 threads; "
                   "synthetic batch, global batch 32, `hvd.DistributedOptimizer` "
                   "(`hvd_worker.py`); and `hvd.Compression.fp16` on vs off at -np 2"),
    8: ("orchestration", "wall time of `python -m flows.train_alexnet` (Prefect + `dvc repro` "
                         "per stage + experiment record and push), reporting to a running "
                         "`prefect server` on 127.0.0.1 as deployments do, vs every dvc.yaml "
                         "stage via `alexnet.cli.main` in one plain process; fresh temp git+DVC "
                         "workspace each, 600 generated Kaggle-sized images, 227 px, 6 epochs, "
                         "batch 32, 1 worker; then a no-op `dvc repro` (median of 3), and a no-op "
                         "flow with a temporary server (no PREFECT_API_URL, as `make run`) vs the "
                         "running one (median of 3; first run in a new PREFECT_HOME apart)"),
    9: ("incremental", "`dvc repro preprocess` (ingest, validate, split, preprocess) after adding "
                       "5% new images to an already processed source vs a cold `dvc repro "
                       "preprocess` on the final set, fresh git+DVC workspace each; alternated"),
}
TARGETS = {1: ">= 3x and >= 300 img/s", 2: ">= 5x reference", 3: "<= 0.25", 4: ">= 0.95",
           5: ">= 0.5 (report)", 6: "> 1 (report)", 7: "report", 8: "<= 1.10", 9: "<= 0.15"}


def render(data: dict) -> str:
    m = data["machine"]
    s = data["settings"]
    lines = [
        "# Benchmark results",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}; {m['cpu_flags']}), {m['mem_gib']} GiB RAM, "
        f"{m['os']}; load average {m['load_avg_1min_at_start']} at start (shared machine)",
        f"- Date: {m['date']}; Python {m['python']}, " +
        ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- Command: `python -m benchmarks.run{' --quick' if data['quick'] else ''}"
        f"{'' if data['quick'] else ' --images ' + str(s['images'])}` "
        f"({s['images']} generated Kaggle-sized JPEGs, ~500x375, "
        f"{data.get('data', {}).get('mean_kb', '?')} KB mean; repeats {s['repeats']})"
        + (f"; total {data['total_seconds']} s" if "total_seconds" in data else ""),
        "- Every figure is a ratio of two things measured side by side in the same run "
        "(alternating order, median of the repeats). Raw numbers: benchmarks/results.json.",
        "",
        "| # | row | how it is measured | figure | target | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in data["rows"].items():
        verdict = {True: "pass", False: "**FAIL**", None: "report"}[row.get("passed")]
        if row.get("why"):
            verdict = row["why"]
        lines.append(f"| {key} | {row['name']} | {ROWS[int(key)][1]} | {row['figure']} | "
                     f"{row.get('target', TARGETS[int(key)])} | {verdict} |")
    lines += ["", "Rerun one row: `python -m benchmarks.run --rows N` (add `--quick` for tiny "
              "settings). See benchmarks/README.md for what each row means.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000,
                    help="generated Kaggle-sized JPEGs (default 3000: a few thousand)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 repeat")
    ap.add_argument("--rows", default=",".join(map(str, ROWS)), help="e.g. 1,2,4")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    os.environ.update({k: v for k, v in env().items() if k.startswith(("TF_", "DVC_", "PREFECT_"))})
    Bench(args).run(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
