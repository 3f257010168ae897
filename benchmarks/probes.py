"""Measurements that need a fresh process (TensorFlow threads, peak RSS, precision policy).

    python -m benchmarks.probes NAME '{"json": "kwargs"}'   # prints one `BENCH_JSON {...}` line
    python -m benchmarks.probes NAME - < kwargs.json        # the same, kwargs on stdin

Each probe times both sides of its ratio inside the same process, alternating, so load on the
shared machine hits both sides alike.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import alternate, emit, median

GFLOP_PER_TRAIN_IMAGE = 6.8  # forward + backward of AlexNet at 227x227 (~3x the 2.27 GFLOP fwd)


# --- helpers ---------------------------------------------------------------------------------

def _jpeg_dataset(paths: list[str], batch: int, size: int, augment) -> "tf.data.Dataset":
    """The naive tf.data alternative: decode every JPEG every epoch, resize, same augmentation."""
    import tensorflow as tf

    from alexnet.data import augment_batch, image_uniforms

    labels = [0 if Path(p).name.startswith("cat") else 1 for p in paths]

    def load(path, label):
        img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.image.resize(img, [size, size]), tf.uint8), label

    def warp(x, y, step):
        x = tf.numpy_function(
            lambda a, s: augment_batch(a, image_uniforms(0, int(s), np.arange(len(a))), augment),
            [x, step], tf.uint8, stateful=False)
        return tf.ensure_shape(x, [batch, size, size, 3]), y

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=0).repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
        lambda xy, step: warp(xy[0], xy[1], step), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _our_dataset(cache: str, batch: int, epochs: int = 1000):
    from alexnet.cache import open_split
    from alexnet.data import Sharding, train_dataset
    from alexnet.params import AugmentParams

    arrays = open_split(cache, "train")
    ds, steps = train_dataset(arrays, Sharding(0, 1, batch), AugmentParams(), 42, 0, epochs)
    return ds, steps, arrays


def _rate(it, batches: int, warmup: int = 2, max_seconds: float | None = None) -> float:
    """Batches/s over `batches` batches of `it`, after `warmup` untimed ones."""
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    n = 0
    while n < batches:
        x = next(it)
        n += 1
        if max_seconds is not None and time.perf_counter() - t > max_seconds and n >= 2:
            break
    del x
    return n / (time.perf_counter() - t)


class _RssSampler:
    """Peak RSS, and peak anonymous / file-backed RSS, sampled from /proc/self/status."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, {"rss": 0, "anon": 0, "file": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
        return {"rss": out.get("VmRSS", 0), "anon": out.get("RssAnon", 0),
                "file": out.get("RssFile", 0) + out.get("RssShmem", 0)}

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in self.now().items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(self.interval)

    def __enter__(self) -> "_RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        for k, v in self.now().items():
            self.peak[k] = max(self.peak[k], v)


# --- probes ----------------------------------------------------------------------------------

def loader(cache: str, images: list[str], batch: int, batches: int, ref_batches: int,
           repeats: int) -> dict:
    """Augmented 227 px batches/s: cache pipeline vs JPEG-decoding tf.data vs the reference.

    OpenCV warps on one thread, as in a training worker (alexnet/distributed.py)."""
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(1)

    from alexnet.params import AugmentParams
    from benchmarks import reference

    t = time.perf_counter()
    x, y = reference.load_images([Path(p) for p in images])
    ref_load_s = time.perf_counter() - t
    ours, _, _ = _our_dataset(cache, batch)
    size = x.shape[1]
    jpeg = _jpeg_dataset(images, batch, size, AugmentParams())

    def ours_rate() -> float:
        return _rate(iter(ours), batches)

    def jpeg_rate() -> float:
        return _rate(iter(jpeg), batches)

    def ref_rate() -> float:
        return _rate(reference.augmented_batches(x, y, batch), ref_batches, warmup=1)

    runs = alternate({"ours": ours_rate, "jpeg": jpeg_rate, "reference": ref_rate}, repeats)
    return {"runs": runs, "median": {k: median(v) for k, v in runs.items()},
            "reference_load_s": ref_load_s, "images": len(images), "batch": batch,
            "opencv_threads": cv2.getNumThreads(),
            "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                           tf.config.threading.get_inter_op_parallelism_threads()]}


def memory(kind: str, cache: str = "", images: list[str] | None = None, batch: int = 32,
           ref_batches: int = 3) -> dict:
    """Peak RSS of holding + iterating the training input. Baseline = right after importing TF."""
    import tensorflow as tf  # noqa: F401 - both sides pay for TF; the baseline includes it

    from benchmarks import reference

    base = _RssSampler.now()
    n = 0
    with _RssSampler() as s:
        if kind == "ours":
            ds, steps, arrays = _our_dataset(cache, batch, epochs=1)
            for xb, _ in ds:  # one full epoch: every cached image is read once
                n += int(xb.shape[0])
        elif kind == "reference":
            x, y = reference.load_images([Path(p) for p in images or []])
            it = reference.augmented_batches(x, y, batch)
            for _ in range(ref_batches):
                n += len(next(it)[0])
    return {"kind": kind, "baseline": base, "peak": s.peak, "images_seen": n,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _model(size: int, precision: str, threads: int | None = None):
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if precision == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from alexnet.model import build_alexnet

    tf.keras.utils.set_random_seed(0)
    model = build_alexnet(2, size)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())
    return model


class StepTimer:
    """Keras callback: wall time from the end of the first batch of a fit() to the end of the
    last, so each timed block excludes iterator start-up and the first (possibly slow) step."""

    def __new__(cls):
        import tensorflow as tf

        class _T(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())

        return _T()


def _synthetic(batch: int, size: int):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (batch, size, size, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 2, batch).astype(np.int32))
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def _fit_rate(model, ds, steps: int, batch: int) -> float:
    timer = StepTimer()
    model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
    return steps * batch / (timer.ends[-1] - timer.ends[0])


def _matmul_gflops(n: int = 2048, iters: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.uniform([n, n], seed=1)
    tf.linalg.matmul(a, a).numpy()
    t = time.perf_counter()
    for _ in range(iters):
        c = tf.linalg.matmul(a, a)
    c.numpy()
    return iters * 2 * n**3 / (time.perf_counter() - t) / 1e9


def train(cache: str, batch: int, steps: int, repeats: int) -> dict:
    """Rows 4 and 5: real-pipeline vs synthetic images/s (same model, same process), and the
    achieved GFLOP/s vs a 2048^2 float32 matmul measured between the blocks."""
    ours, _, arrays = _our_dataset(cache, batch)
    size = arrays.image_shape[0]
    model = _model(size, "fp32")
    synth = _synthetic(batch, size)
    model.fit(synth, steps_per_epoch=2, epochs=1, verbose=0)  # trace + warm up
    runs = alternate({"pipeline": lambda: _fit_rate(model, ours, steps, batch),
                      "synthetic": lambda: _fit_rate(model, synth, steps, batch),
                      "matmul_gflops": _matmul_gflops}, repeats)
    med = {k: median(v) for k, v in runs.items()}
    # Block i of each side ran back to back: their ratio, repeat by repeat, is the spread.
    ratios = [p / q for p, q in zip(runs["pipeline"], runs["synthetic"])]
    block_s = [steps * batch / r for r in runs["pipeline"] + runs["synthetic"]]
    return {"runs": runs, "median": med, "batch": batch, "image_size": size, "steps": steps,
            "ratios": ratios, "block_seconds": block_s}


def precision(policy: str, batch: int, size: int, steps: int, repeats: int) -> dict:
    """Row 6 (one side): synthetic-batch training images/s under a precision policy."""
    model = _model(size, policy)
    synth = _synthetic(batch, size)
    model.fit(synth, steps_per_epoch=2, epochs=1, verbose=0)
    runs = [_fit_rate(model, synth, steps, batch) for _ in range(repeats)]
    return {"policy": policy, "runs": runs, "median": median(runs)}


class EpochTimer:
    """Keras callback: each epoch's training images/s, timed as alexnet.distributed.Throughput
    times ours (epoch start to its last training step; no validation)."""

    def __new__(cls, batch: int):
        import tensorflow as tf

        class _E(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.rates = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start, self.steps = time.perf_counter(), 0

            def on_train_batch_end(self, b, logs=None):
                self.last, self.steps = time.perf_counter(), self.steps + 1

            def on_epoch_end(self, epoch, logs=None):
                self.rates.append(self.steps * batch / (self.last - self.start))

        return _E()


def reference_fit(images: list[str], epochs: int, batch: int) -> dict:
    """Row 10 (reference side): the notebook's load + `model.fit` on ImageDataGenerator.flow,
    float32, SGD 0.1, `epochs` epochs; images/s of each epoch (training steps only)."""
    import tensorflow as tf

    from benchmarks import reference

    t = time.perf_counter()
    x, y = reference.load_images([Path(p) for p in images])
    load_s = time.perf_counter() - t
    tf.keras.utils.set_random_seed(0)
    model = reference.alexnet(2, x.shape[1])
    assert model.count_params() == reference.PARAMS_2_CLASSES
    timer = EpochTimer(batch)
    model.fit(reference.augmented_batches(x, y, batch), steps_per_epoch=len(x) // batch,
              epochs=epochs, verbose=0, callbacks=[timer])
    return {"epoch_images_per_s": {i + 1: r for i, r in enumerate(timer.rates)},
            "load_s": load_s, "images": len(x), "skipped": len(images) - len(x)}


if __name__ == "__main__":
    name, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    kwargs = json.loads(sys.stdin.read() if arg == "-" else arg)
    emit(globals()[name](**kwargs))
