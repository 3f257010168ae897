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

import json
from pathlib import Path
from typing import Any

import tensorflow as tf

MIN_IMAGE_SIZE = 67  # the smallest input whose third max-pool still has a 1x1 output
MODEL_FILE = "model.keras"
METADATA_FILE = "model.json"


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


def load_model(model_dir: str | Path) -> tuple[tf.keras.Model, dict[str, Any]]:
    """Load a trained model and its metadata; refuses a model without metadata.

    Keras' safe_mode=True refuses models that would run arbitrary code (lambda layers) on load.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / METADATA_FILE
    model_path = model_dir / MODEL_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: model metadata missing; refusing to load "
                                f"{model_path} without its class names and image size")
    metadata = json.loads(meta_path.read_text())
    for key in ("classes", "image_size"):
        if key not in metadata:
            raise ValueError(f"{meta_path}: metadata has no {key!r}")
    model = tf.keras.models.load_model(model_path, compile=False, safe_mode=True)
    return model, metadata
