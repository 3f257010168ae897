"""AlexNet as the reference builds it, plus the metadata saved beside every trained model.

    >>> build_alexnet(2).count_params()     # the reference's dogs-vs-cats model
    58289538
    >>> build_alexnet(1000).count_params()  # the ImageNet head
    62378344

The model takes uint8-valued RGB batches (N, size, size, 3) and rescales them to [0, 1] itself
(a parameter-free Rescaling layer), so training, evaluation and `alexnet predict` cannot disagree
on normalisation, and the cache and the input pipeline stay uint8 until the first layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import tensorflow as tf

from alexnet.errors import ModelError

MIN_IMAGE_SIZE = 67  # the smallest input whose third max-pool still has a 1x1 output
MODEL_FILE = "model.keras"
METADATA_FILE = "model.json"
# What Keras' zip format (.keras) holds; load_model loads nothing else.
KERAS_ZIP_FILES = frozenset({"config.json", "metadata.json", "model.weights.h5"})


def build_alexnet(num_classes: int, image_size: int = 227, dropout: float = 0.5,
                  seed: int | None = None) -> tf.keras.Model:
    """The reference AlexNet (Krizhevsky et al. 2012, single-tower, no LRN), as a Keras model.

    conv 96@11x11/4 - maxpool 3/2 - conv 256@5x5 - maxpool 3/2 - conv 384@3x3 - conv 384@3x3 -
    conv 256@3x3 - maxpool 3/2 - dense 4096 - dropout - dense 4096 - dropout - dense softmax.

    Args:
        num_classes: size of the softmax output.
        image_size: input side in pixels (227 as the reference; at least 67).
        dropout: dropout rate after each 4096-unit layer.
        seed: seeds the weight initialisers and dropout, for deterministic runs.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size} is below AlexNet's minimum of {MIN_IMAGE_SIZE}")
    if num_classes < 2:
        raise ValueError("num_classes must be at least 2")
    layers = tf.keras.layers
    init = tf.keras.initializers

    def glorot(i: int) -> tf.keras.initializers.Initializer:
        return init.GlorotUniform(seed=None if seed is None else seed + i)

    def conv(filters: int, kernel: int, i: int, strides: int = 1, padding: str = "same"):
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation="relu",
                             kernel_initializer=glorot(i), name=f"conv{i}")

    return tf.keras.Sequential([
        layers.Input(shape=(image_size, image_size, 3), name="image"),
        layers.Rescaling(1.0 / 255, name="rescale"),
        conv(96, 11, 1, strides=4, padding="valid"),
        layers.MaxPooling2D(3, strides=2, name="pool1"),
        conv(256, 5, 2),
        layers.MaxPooling2D(3, strides=2, name="pool2"),
        conv(384, 3, 3),
        conv(384, 3, 4),
        conv(256, 3, 5),
        layers.MaxPooling2D(3, strides=2, name="pool5"),
        layers.Flatten(name="flatten"),
        layers.Dense(4096, activation="relu", kernel_initializer=glorot(6), name="fc6"),
        layers.Dropout(dropout, seed=seed, name="drop6"),
        layers.Dense(4096, activation="relu", kernel_initializer=glorot(7), name="fc7"),
        layers.Dropout(dropout, seed=None if seed is None else seed + 1, name="drop7"),
        # float32 output even under a mixed-precision policy: softmax and loss stay accurate.
        layers.Dense(num_classes, activation="softmax", dtype="float32",
                     kernel_initializer=glorot(8), name="predictions"),
    ], name="alexnet")


def save_metadata(model_dir: str | Path, metadata: dict[str, Any]) -> None:
    """Write model.json beside model.keras (atomically)."""
    from alexnet.io import write_json

    write_json(Path(model_dir) / METADATA_FILE, metadata)


def save_model(model: tf.keras.Model, model_dir: str | Path,
               metadata: dict[str, Any]) -> dict[str, Any]:
    """Write model.keras (Keras' zip format) and model.json, which records its sha256.

    `model_dir` is the caller's (temporary, atomically renamed) output directory. `load_model`
    loads only a model whose bytes match this `model_sha256`.

    Returns:
        the metadata written, `model_sha256` included.
    """
    from alexnet.io import file_sha256

    model_path = Path(model_dir) / MODEL_FILE
    model.save(model_path)
    metadata = {**metadata, "model_sha256": file_sha256(model_path)}
    save_metadata(model_dir, metadata)
    return metadata


def load_model(model_dir: str | Path) -> tuple[tf.keras.Model, dict[str, Any]]:
    """Load a trained model and its metadata, refusing anything that could run code on load.

    Keras 2.15 applies safe_mode only to its zip format: an HDF5 file or a SavedModel folder named
    model.keras would be loaded by the legacy loaders, which revive Lambda layers and graph ops
    (e.g. tf.io.write_file). So model.keras must be a regular file that is a Keras zip archive
    (config.json, metadata.json, model.weights.h5) whose sha256 is model.json's `model_sha256`.
    The checked bytes are copied into a private temporary directory and loaded from there, with
    safe_mode=True, so what Keras reads is what was checked.

    Raises:
        FileNotFoundError: model.json is missing.
        ModelError (a ValueError; exit 78): metadata incomplete, or the model file refused.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / METADATA_FILE
    model_path = model_dir / MODEL_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: model metadata missing; refusing to load "
                                f"{model_path} without its class names and image size")
    metadata = json.loads(meta_path.read_text())
    for key in ("classes", "image_size", "model_sha256"):
        if key not in metadata:
            raise ModelError(f"{meta_path}: metadata has no {key!r}; refusing to load "
                             f"{model_path} (retrain, or save it with alexnet.model.save_model)")
    with tempfile.TemporaryDirectory(prefix="alexnet-model-") as tmp:
        checked = Path(tmp) / MODEL_FILE
        _copy_checked(model_path, checked, str(metadata["model_sha256"]))
        try:
            model = tf.keras.models.load_model(checked, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types; none of them makes it loadable
            raise ModelError(f"{model_path}: refused by Keras' safe mode or unreadable: "
                             f"{type(exc).__name__}: {exc}") from exc
    return model, metadata


def _copy_checked(src: Path, dst: Path, expected_sha256: str) -> None:
    """Copy `src` to `dst` if it is a regular file holding a Keras zip archive with the expected
    sha256 (hashed while copying: the bytes checked are the bytes copied); else ModelError."""
    try:  # a FIFO named model.keras must not block us: open without waiting, then fstat
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ModelError(f"{src}: cannot read the model file: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ModelError(f"{src}: not a regular file (a folder, e.g. a SavedModel, is refused): "
                         "only a Keras zip archive (.keras) is loaded")
    os.set_blocking(fd, True)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as fin:
        with open(dst, "wb") as fout:
            while block := fin.read(1 << 20):
                digest.update(block)
                fout.write(block)
    if digest.hexdigest() != expected_sha256:
        raise ModelError(f"{src}: sha256 {digest.hexdigest()} differs from model_sha256 "
                         f"{expected_sha256} in {METADATA_FILE}: the model file was changed or "
                         "replaced; refusing to load it")
    if not zipfile.is_zipfile(dst):
        raise ModelError(f"{src}: not a zip archive (an HDF5 or other file named {MODEL_FILE} "
                         "is refused): only Keras' zip format is loaded")
    with zipfile.ZipFile(dst) as zf:
        names = set(zf.namelist())
    missing = sorted(KERAS_ZIP_FILES - names)
    if missing:
        raise ModelError(f"{src}: zip archive lacks {', '.join(missing)}: not a Keras model")
