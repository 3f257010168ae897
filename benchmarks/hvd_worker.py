"""Tiny Horovod worker for row 7: training images/s on a synthetic batch, per configuration.

    horovodrun -np 2 -H localhost:2 --gloo python -m benchmarks.hvd_worker \
        --threads 1 --batch 32 --size 227 --steps 4 --repeats 2 [--fp16]

--batch is the GLOBAL batch (each rank trains batch/size images per step), so every configuration
processes the same images per step. Rank 0 prints the result as a `BENCH_JSON` line.
"""

from __future__ import annotations

import argparse

import tensorflow as tf
import horovod.tensorflow.keras as hvd

from benchmarks.common import emit, median
from benchmarks.probes import StepTimer, _synthetic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=227)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fp16", action="store_true", help="hvd.Compression.fp16 on the allreduce")
    a = ap.parse_args()

    hvd.init()
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    from alexnet.model import build_alexnet

    tf.keras.utils.set_random_seed(0)
    local = a.batch // hvd.size()
    model = build_alexnet(2, a.size)
    opt = hvd.DistributedOptimizer(
        tf.keras.optimizers.SGD(0.01),
        compression=hvd.Compression.fp16 if a.fp16 else hvd.Compression.none)
    model.compile(optimizer=opt, loss=tf.keras.losses.SparseCategoricalCrossentropy())
    ds = _synthetic(local, a.size)
    cb = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, callbacks=cb)  # trace + warm up
    rates = []
    for _ in range(a.repeats):
        timer = StepTimer()
        model.fit(ds, steps_per_epoch=a.steps + 1, epochs=1, verbose=0, callbacks=[timer])
        rates.append(a.steps * a.batch / (timer.ends[-1] - timer.ends[0]))  # global images/s
    if hvd.rank() == 0:
        emit({"size": hvd.size(), "threads": a.threads, "fp16": a.fp16, "runs": rates,
              "median": median(rates)})


if __name__ == "__main__":
    main()
