"""The reference notebook's input handling, reproduced as a BASELINE to measure against.

THIS IS A BASELINE, NOT PART OF THE PIPELINE. It copies what "Alexnet and image classification"
(Keras, 2021) does, so the benchmarks can show what alexnet/ improves on: every image opened with
PIL, converted to RGB and resized to 227x227 one at a time in a single thread, all of them held in
RAM as one float32 array (~4.9 GB for 8,000 images), then augmented on the fly by
keras' ImageDataGenerator(rotation_range=5, width_shift_range=0.1, height_shift_range=0.1,
horizontal_flip=True).flow(). It skips nothing and checks nothing. Do not import it from alexnet/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

SIZE = 227


def label_of(path: Path) -> int:
    """Kaggle flat naming: cat.N.jpg -> 0, dog.N.jpg -> 1."""
    return 0 if Path(path).name.startswith("cat") else 1


def decode_one(path: Path, size: int = SIZE) -> np.ndarray:
    """One file as the reference loads it: open, convert RGB, resize, float32."""
    img = Image.open(path).convert("RGB").resize((size, size))
    return np.asarray(img, dtype=np.float32)


def load_images(paths: Sequence[Path], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The reference's loading loop: single-threaded, everything into one float32 array."""
    x = np.stack([decode_one(p, size) for p in paths])
    y = np.array([label_of(p) for p in paths], dtype=np.int32)
    return x, y


def augmented_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
    """ImageDataGenerator.flow with the reference's augmentation settings (an endless iterator)."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    gen = ImageDataGenerator(rotation_range=5, width_shift_range=0.1, height_shift_range=0.1,
                             horizontal_flip=True)
    return gen.flow(x, y, batch_size=batch_size, shuffle=True, seed=seed)
