"""Horovod training worker: one process per rank, started by `alexnet train` via horovodrun.

    horovodrun -np 2 -H localhost:2 --gloo python -m alexnet.distributed \
        --params params.yaml --cache data/cache --model-dir models/candidate \
        --checkpoint-dir models/checkpoints --live-dir dvclive

This is the only module that imports Horovod. It follows Horovod's tensorflow2_keras_mnist.py:
each line that exists because of data parallelism is marked "# Horovod:". Rank 0 alone writes
files (model, checkpoints, DVCLive logs); every rank reads the same memmap cache, its own slice of
each global batch. The world size is an implementation detail: `train.batch_size` is the global
batch, each step's global batch holds the same images whatever the number of workers (data.py),
gradients are averaged, and the learning rate is NOT rescaled, so N workers compute what one
would (up to float rounding), with two limits: dropout masks are drawn per rank, so with dropout
on the runs match in distribution, not bit for bit; and the validation metric is the mean of the
ranks' shares, which differs slightly from one worker's when the val split does not divide evenly.
A checkpoint is resumed only by the same params (train.workers and train.hosts included).
Before anything reads the cache, the ranks compare digests of the cache each opened (cache.py's
cache_digest): on several hosts each reads its own copy, and a host with other or no data stops
the stage (exit 65) with a message naming it.

Resume, as Horovod's keras_imagenet_resnet50.py does it: after every epoch rank 0 writes one
checkpoint folder (weights, optimizer state, best weights so far) and then the state file naming
it. A rerun with the same params and data: rank 0 alone reads the state and the checkpoint,
broadcasts the state (start epoch, early-stopping counters) and then the restored variables to
every rank, and training continues from the next epoch, seeing the batches, augmentation, dropout
masks and learning rate an uninterrupted run would have seen. Keras' own BackupAndRestore cannot
do this under Horovod: each rank would restore its own copy and write it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd_tf  # broadcast_object is not re-exported by the Keras module
import horovod.tensorflow.keras as hvd

from alexnet.cache import INDEX, cache_digest, open_split, read_index
from alexnet.data import Sharding, eval_dataset, train_dataset
from alexnet.errors import DataError, PipelineError, TrainingError
from alexnet.fingerprint import fingerprint as code_fingerprint
from alexnet.hardware import host_cpu_flags, precision_policy, resolve_precision
from alexnet.io import atomic_dir, claim_output_dir, link_or_copy, write_json
from alexnet.model import build_alexnet, save_model
from alexnet.params import TrainParams, load_params
from alexnet.versions import library_versions

_logger = logging.getLogger(__name__)
STATE_FILE = "state.json"
BEST_WEIGHTS = "best.weights.h5"  # in each epoch-NNNN folder: the best weights up to that epoch


def checkpoint_params(p: TrainParams, size: int, precision: str) -> TrainParams:
    """The params a checkpoint is valid for: `p` with what `auto` resolved to on this run (the
    world size and the precision), so that a checkpoint written in bfloat16 by `auto` on one
    host is not resumed in float32 by `auto` on another."""
    return dataclasses.replace(p, workers=size, mixed_precision=precision)


def fingerprint(p: TrainParams, cache_dir: Path) -> str:
    """What a checkpoint is valid for: the train params (resolved: checkpoint_params), the cached
    data (whose index holds the preprocess settings) and the training code
    (alexnet.fingerprint: this module's closure)."""
    return code_fingerprint("alexnet.distributed", p, {
        "index": (cache_dir / INDEX).read_text(),
        "train_sha": _sha_list(cache_dir, "train"), "val_sha": _sha_list(cache_dir, "val")})


def _sha_list(cache_dir: Path, split: str) -> str:
    sha = np.load(cache_dir / split / "sha256.npy", allow_pickle=False)
    return hashlib.sha256("\n".join(sha.tolist()).encode()).hexdigest()


def host_report(cache_dir: Path, rank: int) -> dict[str, Any]:
    """What this rank trains on: its host, the cache it opened and that cache's digest (or why
    there is none). The host is the name horovodrun was given (-H), which the user knows."""
    machine = socket.gethostname()
    report: dict[str, Any] = {"rank": rank, "host": os.environ.get("HOROVOD_HOSTNAME") or machine,
                              "machine": machine, "cache": str(Path(cache_dir).absolute()),
                              "digest": None, "problem": None}
    try:
        report["digest"] = cache_digest(Path(cache_dir).absolute())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report["problem"] = str(exc) if isinstance(exc, OSError) else f"unreadable cache ({exc!r})"
    return report


def _where(reports: list[dict[str, Any]]) -> str:
    """'host gpu2 (machine node7, ranks 4, 5)' for the reports of one host."""
    first = reports[0]
    machine = f"machine {first['machine']}, " if first["machine"] != first["host"] else ""
    ranks = [str(r["rank"]) for r in reports]
    return (f"host {first['host']} ({machine}rank{'s' if len(ranks) > 1 else ''} "
            f"{', '.join(ranks)})")


def cache_mismatch(reports: list[dict[str, Any]]) -> str | None:
    """None when every rank opened a cache equal to rank 0's; else one line naming each host
    whose cache is missing or differs (rank 0's is the reference: its model records it)."""
    by_rank = sorted(reports, key=lambda r: r["rank"])
    reference = by_rank[0]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in by_rank:
        if r["problem"] is not None:
            groups.setdefault((r["host"], r["machine"], "missing", r["problem"]), []).append(r)
        elif reference["digest"] is not None and r["digest"] != reference["digest"]:
            groups.setdefault((r["host"], r["machine"], "differs", r["digest"]), []).append(r)
    if not groups:
        return None
    problems = []
    for (_host, _machine, kind, detail), group in groups.items():
        if kind == "missing":
            problems.append(f"{_where(group)} has no usable cache: {detail}")
        else:
            problems.append(f"{_where(group)} has a different cache at {group[0]['cache']} "
                            f"(digest {detail[:12]}) from {_where([reference])}'s (digest "
                            f"{reference['digest'][:12]})")
    return ("the hosts do not train on the same data: " + "; ".join(problems) + ". Every host "
            "needs the same data/cache at the same path: a shared filesystem, or on each host a "
            "checkout of the same commit and `dvc pull data/cache` (a cache rebuilt there can "
            "differ: other Pillow/libjpeg)")


def allgather_json(obj: Any, name: str) -> list[Any]:
    """Every rank's `obj` in rank order, sent as JSON bytes (hvd.allgather_object would send
    pickles, which no rank should have to load)."""
    data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    sizes = hvd_tf.allgather(tf.constant([len(data)], tf.int64), name=f"{name}.sizes").numpy()
    blob = hvd_tf.allgather(tf.constant(data), name=name).numpy().tobytes()
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [json.loads(blob[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def check_caches(cache_dir: Path, rank: int) -> list[dict[str, Any]]:
    """Every rank: fail (DataError, exit 65) unless all hosts opened the same cache.

    Each rank reports its cache digest; every rank receives all reports and reaches the same
    verdict, so all of them stop with the same message before training starts (whichever
    rank horovodrun sees exit first, the message naming the host is in the log). Returns the
    reports.
    """
    # Horovod: ranks on other hosts read their own copy of data/cache; nothing else checks that
    # it is the same data (horovodrun only runs the same command on each host).
    reports = allgather_json(host_report(cache_dir, rank), name="cache_reports")
    problem = cache_mismatch(reports)
    if problem is not None:
        raise DataError(problem)
    if rank == 0:
        hosts = sorted({(r["host"], r["machine"]) for r in reports})
        _logger.info("all %d rank(s) on %d host(s) opened the same cache (%s): %s",
                     len(reports), len(hosts), reports[0]["digest"][:12],
                     "; ".join(_where([r for r in reports if (r["host"], r["machine"]) == h])
                               for h in hosts))
    return reports


def agreed_precision(reports: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The precision every rank trains in: rank 0's (the one its checkpoint fingerprint and
    model.json record), and None or a warning naming each host whose ranks resolved
    train.mixed_precision otherwise (`auto` resolves per host: ranks in different precisions
    would mix numerics, and float16 loss scaling on some ranks only can hang the allreduce)."""
    by_rank = sorted(reports, key=lambda r: r["rank"])
    chosen = by_rank[0]["precision"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in by_rank:
        if r["precision"] != chosen:
            groups.setdefault((r["host"], r["machine"], r["precision"]), []).append(r)
    if not groups:
        return chosen, None
    others = "; ".join(f"{precision} on {_where(group)}"
                       for (_host, _machine, precision), group in groups.items())
    return chosen, (f"train.mixed_precision resolved to {chosen} on {_where(by_rank[:1])} but to "
                    f"{others}: every rank trains in rank 0's {chosen}; set "
                    "train.mixed_precision to a precision's name to choose another")


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Keras's global dtype policy float32 inside the block, the previous one restored after."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


@tf.keras.utils.register_keras_serializable(package="alexnet")
class LinearWarmup(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` * min(1, (step + 1) / warmup_steps): a linear ramp, then constant.

    Driven by the optimizer's own step counter, which every checkpoint holds, so a resumed run
    continues the ramp exactly where the killed one was. The world size plays no part in it.
    (Registered because Horovod's DistributedOptimizer rebuilds the optimizer from its config.)
    """

    def __init__(self, learning_rate: float, warmup_steps: int) -> None:
        super().__init__()
        self.learning_rate, self.warmup_steps = float(learning_rate), max(1, int(warmup_steps))

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / self.warmup_steps)
        return self.learning_rate * ramp

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


def learning_rate(p: TrainParams, steps_per_epoch: int) -> float | LinearWarmup:
    """train.learning_rate as given (never scaled by the world size), with the optional warm-up."""
    if not p.warmup_epochs:
        return p.learning_rate
    return LinearWarmup(p.learning_rate, p.warmup_epochs * steps_per_epoch)


def make_optimizer(p: TrainParams, lr: float | LinearWarmup) -> tf.keras.optimizers.Optimizer:
    if p.optimizer == "sgd":
        return tf.keras.optimizers.SGD(learning_rate=lr, momentum=p.momentum)
    return tf.keras.optimizers.Adam(learning_rate=lr)


class NanGuard(tf.keras.callbacks.Callback):
    """Stop with an error on a NaN/inf loss. Keras' TerminateOnNaN only stops quietly, after which
    the stage would save a broken model as if training had finished."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingError(f"loss became {loss} at batch {batch}: training diverged "
                                "(try a lower train.learning_rate); no model was written")


class Throughput(tf.keras.callbacks.Callback):
    """Rank 0: log each epoch's training images/s (global batch x steps over the time from the
    epoch's start to its last training step; validation excluded). `make bench` reads it."""

    def __init__(self, global_batch: int) -> None:
        super().__init__()
        self.global_batch = global_batch
        self._start = self._last = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._last, self._steps = time.perf_counter(), self._steps + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = self._last - self._start
        if self._steps and seconds > 0:
            images = self._steps * self.global_batch
            _logger.info("epoch %d: %d images in %.2f s, %.1f images/s", epoch + 1, images,
                         seconds, images / seconds)


class DropoutSeeds(tf.keras.callbacks.Callback):
    """Reseed every dropout layer at the start of each epoch from (seed, epoch, rank).

    The masks then differ between ranks (each drops units for its own images) and a resumed
    epoch draws the masks the uninterrupted run drew. Needs Keras' tf.random.Generator-based
    dropout (configure_tensorflow enables it): the legacy stateful ops keep their state in the
    kernel, out of reach of a checkpoint.
    """

    def __init__(self, seed: int, rank: int) -> None:
        super().__init__()
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for i, layer in enumerate(self.model.layers):
            generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
            if generator is not None:
                key = np.random.SeedSequence([self.seed, epoch, self.rank, i]).generate_state(1)
                generator.reset_from_seed(int(key[0]))


class ResumedEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters continue the resumed run's instead of starting from zero.

    Its `best` and `wait` are exactly what the checkpoint state records: the best monitored
    value (same strict comparison as EpochCheckpoint) and the epochs completed since it.
    """

    def __init__(self, state: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resumed = dict(state)

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.resumed.get("best_epoch"):
            self.best = self.resumed["best"]
            self.best_epoch = self.resumed["best_epoch"] - 1
            self.wait = self.resumed["epoch"] - self.resumed["best_epoch"]


def _epoch_folder(directory: Path, checkpoint: str | None) -> Path | None:
    """The epoch-NNNN folder a state file's `checkpoint` names, if it is one of `directory`.

    The name comes from a file on disk: never follow it anywhere else.
    """
    if not checkpoint:
        return None
    folder = Path(checkpoint).parent
    if len(folder.parts) == 1 and folder.name.startswith("epoch-"):
        return directory / folder
    return None


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Rank 0: after each epoch, one folder epoch-NNNN with the weights + optimizer state (for
    resume) and the best weights so far, then the state file pointing at it.

    A kill at any moment leaves either the old or the new state, each naming a complete folder
    whose best weights match its `best_epoch`. Must come after EarlyStopping in the callback list,
    so that the state records whether training stopped early.
    """

    def __init__(self, directory: Path, checkpoint: tf.train.Checkpoint, monitor: str,
                 state: dict[str, Any]) -> None:
        super().__init__()
        self.directory, self.checkpoint, self.monitor, self.state = directory, checkpoint, monitor, state

    def _better(self, value: float) -> bool:
        best = self.state.get("best")
        if best is None:
            return True
        return value < best if self.monitor.endswith("loss") else value > best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        value = float(logs.get(self.monitor, float("nan")))
        name = f"epoch-{epoch + 1:04d}"
        folder = self.directory / name
        if folder.exists():  # left by a run killed before its state file named it
            shutil.rmtree(folder)
        prefix = self.checkpoint.write(str(folder / "ckpt"))
        old = _epoch_folder(self.directory, self.state.get("checkpoint"))
        if math.isfinite(value) and self._better(value):
            self.model.save_weights(folder / BEST_WEIGHTS)
            self.state.update(best=value, best_epoch=epoch + 1)
        elif old is not None and (old / BEST_WEIGHTS).is_file():
            link_or_copy(old / BEST_WEIGHTS, folder / BEST_WEIGHTS)  # a hard link: no copy
        self.state.update(epoch=epoch + 1, checkpoint=os.path.relpath(prefix, self.directory),
                          stopped_early=bool(self.model.stop_training),
                          history=self.state.get("history", []) + [
                              {k: float(v) for k, v in logs.items()}])
        write_json(self.directory / STATE_FILE, self.state)
        if old is not None and old != folder:
            shutil.rmtree(old, ignore_errors=True)


def read_state(checkpoint_dir: Path, expected: str) -> dict[str, Any] | None:
    """The resume state, if it exists and belongs to this exact configuration."""
    path = checkpoint_dir / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != expected:
        _logger.info("checkpoint in %s is for other params, data or code: starting over",
                     checkpoint_dir)
        return None
    return state


def resume_state(p: TrainParams, cache_dir: Path, checkpoint_dir: Path,
                 live_dir: Path) -> dict[str, Any]:
    """Rank 0: claim the output directories and read the state to resume from (or a fresh one).

    Raises:
        OutputError: a directory holds files this pipeline did not write (nothing is deleted).
    """
    claim_output_dir(checkpoint_dir)  # first: refuse before reading anything else
    claim_output_dir(live_dir)
    expected = fingerprint(p, cache_dir)
    state = read_state(checkpoint_dir, expected)
    if state is None and (checkpoint_dir / STATE_FILE).is_file():
        # Checkpoints of other params or data can never be resumed: drop them, so they do not
        # pile up run after run. claim_output_dir checked that the directory is ours.
        shutil.rmtree(checkpoint_dir)
        claim_output_dir(checkpoint_dir)
    return state or {"fingerprint": expected, "epoch": 0}


def gpu_capabilities(gpus: list) -> list[tuple[int, int]]:
    """Compute capability of each GPU ((0, 0) when TensorFlow cannot tell)."""
    return [tuple(tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0))
            for g in gpus]


def configure_tensorflow(p: TrainParams) -> str:
    """Threads, GPU pinning, seeds and the precision policy; returns the precision used
    (float32, bfloat16 or float16: what train.mixed_precision resolved to on rank 0's host,
    which every rank uses)."""
    # Horovod: pin one GPU per process (local rank), when there are GPUs.
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
    else:
        # Horovod: on CPU, share the host's cores between the local workers instead of having
        # each of them start one thread per core (2 workers x 2 threads thrash 2 cores).
        threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    # The augmentation's warp (alexnet/data.py) keeps up with training on one thread (`make
    # bench` rows 2 and 4); OpenCV's own pool of one thread per core would compete with the step.
    cv2.setNumThreads(1)
    # train.mixed_precision (auto: alexnet.hardware): bfloat16 only where the CPU computes it
    # natively, float16 only on GPUs with tensor cores; emulated, either trains slower.
    own = resolve_precision(p.mixed_precision, host_cpu_flags(), gpu_capabilities(gpus))
    # Horovod: each host resolves `auto` from its own hardware; every rank trains in rank 0's.
    # (After the threading settings above: the allgather starts TensorFlow's runtime.)
    machine = socket.gethostname()
    precision, warning = agreed_precision(allgather_json(
        {"rank": hvd.rank(), "host": os.environ.get("HOROVOD_HOSTNAME") or machine,
         "machine": machine, "precision": own}, name="precisions"))
    if warning is not None and (hvd.rank() == 0 or own != precision):
        _logger.warning("rank %d: %s", hvd.rank(), warning)
    tf.keras.mixed_precision.set_global_policy(precision_policy(precision))
    # Same initial weights everywhere (rank 0's are broadcast anyway).
    tf.keras.utils.set_random_seed(p.seed + hvd.rank())
    # Dropout through tf.random.Generator, whose state DropoutSeeds resets each epoch.
    tf.keras.backend.experimental.enable_tf_random_generator()
    if p.deterministic:
        tf.config.experimental.enable_op_determinism()
    return precision


def train(p: TrainParams, cache_dir: Path, model_dir: Path, checkpoint_dir: Path,
          live_dir: Path) -> tf.keras.Model:
    """Train on the cache's train split, select on val; rank 0 writes model_dir.

    Returns this rank's model as training left it (the saved model holds the best epoch's weights).
    """
    # Horovod: initialize Horovod.
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    precision = configure_tensorflow(p)
    if rank == 0:
        _logger.info("%d worker(s) (train.workers: %s), precision %s (train.mixed_precision: %s)",
                     size, p.workers, precision, p.mixed_precision)
        _logger.info("Horovod: %d rank(s), %d per host (local size), on %d host(s) (cross size)",
                     size, hvd.local_size(), hvd.cross_size())
    # Horovod: before anything reads the cache, every host must see the same one.
    check_caches(cache_dir, rank)

    # Horovod: rank 0 alone touches the checkpoint directory and decides where to start; the
    # other ranks receive its state (start epoch, early-stopping counters), so hosts without a
    # shared filesystem agree (Horovod's keras_imagenet_resnet50 broadcasts resume_from_epoch).
    state = (resume_state(checkpoint_params(p, size, precision), cache_dir, checkpoint_dir,
                          live_dir) if rank == 0 else None)
    state = hvd_tf.broadcast_object(state, root_rank=0, name="resume_state")
    index = read_index(cache_dir)
    classes, image_size = index["classes"], index["image_size"]
    train_arrays, val_arrays = open_split(cache_dir, "train"), open_split(cache_dir, "val")
    # A state at p.epochs (or stopped early) means training finished but the run died before
    # saving the model.
    start_epoch = p.epochs if state.get("stopped_early") else min(state["epoch"], p.epochs)

    shard = Sharding(rank, size, p.batch_size)
    train_ds, steps = train_dataset(train_arrays, shard, p.augment, p.seed, start_epoch, p.epochs)
    val_ds, _ = eval_dataset(val_arrays, shard.local_batch, rank, size)

    model = build_alexnet(len(classes), image_size, p.dropout, seed=p.seed)
    # Horovod: NO learning-rate scaling. train.batch_size is the global batch, whatever the
    # number of workers, so the single-worker learning rate is the right one.
    lr = learning_rate(p, steps)
    # Horovod: wrap the optimizer so gradients are averaged across workers with allreduce.
    optimizer = hvd.DistributedOptimizer(make_optimizer(p, lr))
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())
    optimizer.build(model.trainable_variables)  # its variables exist before the broadcast
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if start_epoch and rank == 0:
        checkpoint.read(str(checkpoint_dir / state["checkpoint"])).assert_existing_objects_matched()
        _logger.info("resuming from epoch %d of %d (%s)", start_epoch, p.epochs, checkpoint_dir)
    # Horovod: broadcast rank 0's (random or restored) weights and optimizer state before the
    # first step. BroadcastGlobalVariablesCallback does it only after the first batch, which
    # would average in a gradient computed from another rank's un-restored weights.
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    hvd_tf.broadcast_variables(list(optimizer.variables), root_rank=0)

    callbacks: list[tf.keras.callbacks.Callback] = [
        # Horovod: average metrics among workers at the end of every epoch; must come before
        # every metric-based callback (checkpoint selection, early stopping, logging).
        hvd.callbacks.MetricAverageCallback(),
        NanGuard(),
        DropoutSeeds(p.seed, rank),
    ]
    if p.patience:
        # On every rank: all ranks see the same averaged metric, so they stop together.
        callbacks.append(ResumedEarlyStopping(state, monitor=p.monitor, patience=p.patience))
    if rank == 0:
        # Horovod: checkpoints and logs on rank 0 only, to keep workers from corrupting them.
        callbacks.append(EpochCheckpoint(checkpoint_dir, checkpoint, p.monitor, state))
        callbacks.append(Throughput(p.batch_size))
        callbacks.append(_dvclive_callback(live_dir, resume=start_epoch > 0))
        # `tensorboard --logdir models/checkpoints/tensorboard`; a resumed run appends to it.
        callbacks.append(tf.keras.callbacks.TensorBoard(
            log_dir=str(checkpoint_dir / "tensorboard"), write_graph=False, profile_batch=0))

    if start_epoch < p.epochs:
        model.fit(train_ds, steps_per_epoch=steps, epochs=p.epochs, initial_epoch=start_epoch,
                  validation_data=val_ds, callbacks=callbacks,
                  # Horovod: progress output on rank 0 only.
                  verbose=2 if rank == 0 else 0)

    if rank == 0:
        _save_model(p, index, cache_dir, model_dir, checkpoint_dir, size, steps, model,
                    precision)
    # Horovod: every rank waits until rank 0 has written the model.
    hvd_tf.broadcast_object(rank, root_rank=0, name="model_saved")
    return model


def _dvclive_callback(live_dir: Path, resume: bool) -> tf.keras.callbacks.Callback:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    return DVCLiveCallback(live=Live(str(live_dir), resume=resume, save_dvc_exp=False,
                                     dvcyaml=None, report=None))


def _save_model(p: TrainParams, index: dict, cache_dir: Path, model_dir: Path,
                checkpoint_dir: Path, size: int, steps: int, last: tf.keras.Model,
                precision: str) -> dict[str, Any]:
    """Rank 0: write the best weights (by the val monitor) as a plain Keras model + metadata.

    The best weights are those of the checkpoint the state file names; `last` (the weights
    training ended with) stands in when no epoch had a finite monitored value.
    """
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    # Built in float32 (the weights are float32 in any policy): the saved model must not carry
    # the training host's mixed policy into evaluate/promote/predict, wherever it is loaded.
    with float32_policy():
        best = build_alexnet(len(index["classes"]), index["image_size"], p.dropout)
    folder = _epoch_folder(checkpoint_dir, state.get("checkpoint"))
    if folder is not None and (folder / BEST_WEIGHTS).is_file():
        best.load_weights(folder / BEST_WEIGHTS)
    else:
        best.set_weights(last.get_weights())
    metadata = {
        "classes": index["classes"],
        "image_size": index["image_size"],
        "resize": index["resize"],
        "params": {"train": dataclasses.asdict(p)},
        "world_size": size,
        # What `auto` (or any setting) of train.workers / train.mixed_precision became here.
        "resolved": {"workers": size, "mixed_precision": precision},
        # What the optimizer used: train.learning_rate itself (never scaled by the world size),
        # after a linear ramp over warmup_steps steps when train.warmup_epochs is set.
        "learning_rate": p.learning_rate,
        "warmup": {"epochs": p.warmup_epochs, "steps": p.warmup_epochs * steps,
                   "from": p.learning_rate / (p.warmup_epochs * steps)} if p.warmup_epochs else None,
        "global_batch_size": p.batch_size,
        "steps_per_epoch": steps,
        "epochs_completed": state["epoch"],
        "stopped_early": bool(state.get("stopped_early")),
        "best_epoch": state.get("best_epoch"),
        "monitor": {"name": p.monitor, "value": state.get("best")},
        "history": state.get("history", []),
        "data": {"cache_index_sha256": hashlib.sha256((cache_dir / INDEX).read_bytes()).hexdigest(),
                 "train_sha256": _sha_list(cache_dir, "train"),
                 "val_sha256": _sha_list(cache_dir, "val")},
        "versions": library_versions(),
    }
    with atomic_dir(model_dir) as tmp:
        metadata = save_model(best, tmp, metadata)  # records model_sha256 for load_model
    _logger.info("model written to %s (best epoch %s, %s=%s)", model_dir, state.get("best_epoch"),
                 p.monitor, state.get("best"))
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--live-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(load_params(args.params).train, args.cache, args.model_dir, args.checkpoint_dir,
              args.live_dir)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
