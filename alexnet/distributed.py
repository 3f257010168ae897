"""Horovod training worker: one process per rank, started by `alexnet train` via horovodrun.

    horovodrun -np 2 -H localhost:2 --gloo python -m alexnet.distributed \
        --params params.yaml --cache data/cache --model-dir models/candidate \
        --checkpoint-dir models/checkpoints --live-dir dvclive

This is the only module that imports Horovod. It follows Horovod's tensorflow2_keras_mnist.py:
each line that exists because of data parallelism is marked "# Horovod:". Rank 0 alone writes
files (model, checkpoints, DVCLive logs); every rank reads the same memmap cache, its own shard.

Resume: after every epoch rank 0 writes a checkpoint (weights + optimizer state) and a state file.
A rerun with the same params and data restores it on every rank and continues from the next epoch,
seeing the same batches an uninterrupted run would have seen (see data.py). Keras' own
BackupAndRestore cannot do this under Horovod: each rank would restore its own copy and write it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd_tf  # broadcast_object is not re-exported by the Keras module
import horovod.tensorflow.keras as hvd

from alexnet.cache import INDEX, open_split, read_index
from alexnet.data import Sharding, eval_dataset, train_dataset
from alexnet.errors import PipelineError, TrainingError
from alexnet.fingerprint import fingerprint as code_fingerprint
from alexnet.io import atomic_dir, write_json
from alexnet.model import build_alexnet, save_model
from alexnet.params import TrainParams, load_params
from alexnet.versions import library_versions

_logger = logging.getLogger(__name__)
STATE_FILE = "state.json"


def fingerprint(p: TrainParams, cache_dir: Path) -> str:
    """What a checkpoint is valid for: the train params, the cached data (whose index holds the
    preprocess settings) and the training code (alexnet.fingerprint: this module's closure)."""
    return code_fingerprint("alexnet.distributed", p, {
        "index": (cache_dir / INDEX).read_text(),
        "train_sha": _sha_list(cache_dir, "train"), "val_sha": _sha_list(cache_dir, "val")})


def _sha_list(cache_dir: Path, split: str) -> str:
    sha = np.load(cache_dir / split / "sha256.npy", allow_pickle=False)
    return hashlib.sha256("\n".join(sha.tolist()).encode()).hexdigest()


def make_optimizer(p: TrainParams, lr: float) -> tf.keras.optimizers.Optimizer:
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


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Rank 0: after each epoch, save weights+optimizer (for resume) and the best weights so far."""

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
        if math.isfinite(value) and self._better(value):
            self.state.update(best=value, best_epoch=epoch + 1)
            # The suffix picks the format, so the temporary name must end in .h5 too.
            tmp = self.directory / ".best.tmp.weights.h5"
            self.model.save_weights(tmp)
            os.replace(tmp, self.directory / "best.weights.h5")
        # Write the new checkpoint under a new prefix, then point the state file at it: a kill at
        # any moment leaves either the old or the new state, both complete.
        prefix = self.checkpoint.write(str(self.directory / f"epoch-{epoch + 1:04d}" / "ckpt"))
        old = self.state.get("checkpoint")
        self.state.update(epoch=epoch + 1, checkpoint=os.path.relpath(prefix, self.directory),
                          history=self.state.get("history", []) + [
                              {k: float(v) for k, v in logs.items()}])
        write_json(self.directory / STATE_FILE, self.state)
        if old and old != self.state["checkpoint"]:
            # `old` comes from a file on disk: delete only an epoch-NNNN folder of this
            # directory, never a path the state file might name elsewhere.
            folder = Path(old).parent
            if len(folder.parts) == 1 and folder.name.startswith("epoch-"):
                shutil.rmtree(self.directory / folder, ignore_errors=True)


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


def configure_tensorflow(p: TrainParams) -> None:
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
    # The augmentation's warp (alexnet/data.py) keeps up with training on one thread (~3,000
    # images/s at 227 px); OpenCV's own pool of one thread per core would compete with the step.
    cv2.setNumThreads(1)
    if p.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    # Same initial weights everywhere (rank 0's are broadcast anyway); per-rank dropout masks.
    tf.keras.utils.set_random_seed(p.seed + hvd.rank())
    if p.deterministic:
        tf.config.experimental.enable_op_determinism()


def train(p: TrainParams, cache_dir: Path, model_dir: Path, checkpoint_dir: Path,
          live_dir: Path) -> tf.keras.Model:
    """Train on the cache's train split, select on val; rank 0 writes model_dir.

    Returns this rank's model as training left it (the saved model holds the best epoch's weights).
    """
    # Horovod: initialize Horovod.
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    configure_tensorflow(p)

    index = read_index(cache_dir)
    classes, image_size = index["classes"], index["image_size"]
    train_arrays, val_arrays = open_split(cache_dir, "train"), open_split(cache_dir, "val")
    expected = fingerprint(p, cache_dir)
    state = read_state(checkpoint_dir, expected)
    # A state at p.epochs means training finished but the run died before saving the model.
    start_epoch = min(state["epoch"], p.epochs) if state else 0
    if state is None and rank == 0 and (checkpoint_dir / STATE_FILE).is_file():
        # Checkpoints of other params or data can never be resumed: drop them, so they do not
        # pile up run after run. Only a directory holding our state file: the path is an
        # argument, and a mistyped one must not delete anything else.
        shutil.rmtree(checkpoint_dir)
    state = state or {"fingerprint": expected, "epoch": 0}

    model = build_alexnet(len(classes), image_size, p.dropout, seed=p.seed)
    # Horovod: scale the learning rate by the number of workers (the global batch grows with it).
    scaled_lr = p.learning_rate * size
    # Horovod: wrap the optimizer so gradients are averaged across workers with allreduce.
    optimizer = hvd.DistributedOptimizer(make_optimizer(p, scaled_lr))
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    if start_epoch:
        optimizer.build(model.trainable_variables)
        checkpoint.read(str(checkpoint_dir / state["checkpoint"])).assert_existing_objects_matched()
        if rank == 0:
            _logger.info("resuming from epoch %d of %d (%s)", start_epoch, p.epochs, checkpoint_dir)

    shard = Sharding(rank, size, p.batch_size)
    train_ds, steps = train_dataset(train_arrays, shard, p.augment, p.seed, start_epoch, p.epochs)
    val_ds, _ = eval_dataset(val_arrays, shard.local_batch, rank, size)

    callbacks: list[tf.keras.callbacks.Callback] = [
        # Horovod: broadcast initial variable states from rank 0 to all other processes, so all
        # start from the same (random or restored) weights.
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        # Horovod: average metrics among workers at the end of every epoch; must come before
        # every metric-based callback (checkpoint selection, early stopping, logging).
        hvd.callbacks.MetricAverageCallback(),
        NanGuard(),
    ]
    if p.warmup_epochs and size > 1:
        # Horovod: ramp lr from lr to lr*size over the first epochs (Goyal et al. 2017).
        # momentum_correction assumes the legacy optimizers' momentum *variable*; Keras 2.11+
        # optimizers hold a float there and the callback crashes on it, so it is off.
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=scaled_lr, warmup_epochs=p.warmup_epochs, steps_per_epoch=steps,
            momentum_correction=False, verbose=0))
    if p.patience:
        # On every rank: all ranks see the same averaged metric, so they stop together.
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor=p.monitor, patience=p.patience))
    if rank == 0:
        # Horovod: checkpoints and logs on rank 0 only, to keep workers from corrupting them.
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(EpochCheckpoint(checkpoint_dir, checkpoint, p.monitor, state))
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
        _save_model(p, index, cache_dir, model_dir, checkpoint_dir, size, scaled_lr)
    # Horovod: every rank waits until rank 0 has written the model.
    hvd_tf.broadcast_object(rank, root_rank=0, name="model_saved")
    return model


def _dvclive_callback(live_dir: Path, resume: bool) -> tf.keras.callbacks.Callback:
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    return DVCLiveCallback(live=Live(str(live_dir), resume=resume, save_dvc_exp=False,
                                     dvcyaml=None, report=None))


def _save_model(p: TrainParams, index: dict, cache_dir: Path, model_dir: Path,
                checkpoint_dir: Path, size: int, scaled_lr: float) -> dict[str, Any]:
    """Rank 0: write the best weights (by the val monitor) as a plain Keras model + metadata."""
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    best = build_alexnet(len(index["classes"]), index["image_size"], p.dropout)
    best.load_weights(checkpoint_dir / "best.weights.h5")
    metadata = {
        "classes": index["classes"],
        "image_size": index["image_size"],
        "resize": index["resize"],
        "params": {"train": dataclasses.asdict(p)},
        "world_size": size,
        "effective_learning_rate": scaled_lr,
        "global_batch_size": p.batch_size,
        "epochs_completed": state["epoch"],
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
