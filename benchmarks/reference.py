"""The reference notebook's input handling and training, reproduced as a BASELINE to measure against.

THIS IS A BASELINE, NOT PART OF THE PIPELINE. It copies what "Alexnet and image classification"
(Keras, 2021) does, so the benchmarks can show what alexnet/ improves on. Loading: every file
read with `cv2.imread` and resized to 227x227 with `cv2.resize`, one at a time in a single Python
loop (OpenCV's own defaults: BGR channel order, bilinear), inside `try/except` so that a file
cv2 cannot read (imread returns None, resize raises) is skipped silently, without a record;
then the whole list becomes one float32 array scaled to [0, 1] (~4.9 GB for 8,000 images). (The
notebook one-hot encodes the labels; integer labels with the sparse loss compute the same.) Training: the notebook's AlexNet (58,289,538 parameters for 2 classes), SGD
lr 0.1, batch 128, augmented on the fly by keras' ImageDataGenerator(rotation_range=5,
width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True).flow(). Do not import it
from alexnet/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

SIZE = 227
PARAMS_2_CLASSES = 58_289_538  # the notebook's model summary


def label_of(path: Path) -> int:
    """Kaggle flat naming: cat.N.jpg -> 0, dog.N.jpg -> 1."""
    return 0 if Path(path).name.startswith("cat") else 1


def load_images(paths: Sequence[Path], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's loading loop and preprocessing: training-ready float32 pixels in [0, 1]
    and integer labels. Unreadable files are skipped without a word, as in the notebook."""
    images, labels = [], []
    for path in paths:
        try:
            img = cv2.imread(str(path))
            img = cv2.resize(img, (size, size))
        except Exception:  # noqa: BLE001 - the notebook's bare `except: pass`
            continue
        images.append(img)
        labels.append(label_of(path))
    x = np.array(images).astype("float32") / 255.0
    return x, np.array(labels, dtype=np.int32)


def augmented_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
    """ImageDataGenerator.flow with the reference's augmentation settings (an endless iterator)."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    gen = ImageDataGenerator(rotation_range=5, width_shift_range=0.1, height_shift_range=0.1,
                             horizontal_flip=True)
    return gen.flow(x, y, batch_size=batch_size, shuffle=True, seed=seed)


def alexnet(num_classes: int = 2, size: int = SIZE):
    """The notebook's Sequential AlexNet, compiled as it was (SGD lr 0.1)."""
    import tensorflow as tf
    from tensorflow.keras import layers

    model = tf.keras.Sequential([
        layers.Conv2D(96, 11, strides=4, activation="relu", input_shape=(size, size, 3)),
        layers.MaxPooling2D(3, strides=2),
        layers.Conv2D(256, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(3, strides=2),
        layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(256, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(3, strides=2),
        layers.Flatten(),
        layers.Dense(4096, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(4096, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy())
    return model
