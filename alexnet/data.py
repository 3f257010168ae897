"""tf.data input pipeline from the uint8 memmap cache.

`train.batch_size` is the global batch, and each step's global batch holds the same images
whatever the number of workers: per epoch, one global permutation (seeded by seed and epoch, the
same on every rank) is cut into global batches, and rank r takes the r-th contiguous slice of
each. With gradients averaged by allreduce, N workers then compute what one worker would (up to
float rounding). Batches are read from the memmap (uint8, sorted indices for sequential
page-cache reads), augmented with ONE affine warp per image (rotation, shift and flip composed
into a single matrix: the reference's ImageDataGenerator settings, bilinear, edges repeated as
its fill_mode="nearest" does), and prefetched while the model trains. The warp is OpenCV's
warpAffine on the uint8 pixels rather than TensorFlow's ImageProjectiveTransformV3, whose kernel
interpolates each channel of each pixel separately, in float32: that matters once a GPU, not the
CPU, sets the pace (`make bench`, row 2, measures this loader against the reference's and against
decoding the JPEGs every epoch). Pixels stay uint8 0..255 all the way to the model, whose first
layer scales them to [0, 1].

The permutation is a pure function of (seed, epoch) and each image's warp a pure function of
(seed, epoch, image index), so a resumed run at epoch k sees exactly the batches an
uninterrupted run would have seen, and an image is warped the same way on any rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import tensorflow as tf

from alexnet.cache import SplitArrays
from alexnet.params import AugmentParams


@dataclass(frozen=True)
class Sharding:
    """How one rank sees a split: its rank, the world size and the global batch size.

    The global batch must be a multiple of the world size (alexnet.params checks it), so every
    rank's slice of a global batch has the same size and their averaged gradients are the
    gradient of the whole batch.
    """

    rank: int = 0
    size: int = 1
    global_batch: int = 128

    def __post_init__(self) -> None:
        if self.global_batch % self.size:
            raise ValueError(f"global batch {self.global_batch} is not a multiple of the "
                             f"world size {self.size}")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.size

    def batch_for(self, n: int) -> int:
        """Global batch used on a split of n images: shrunk (to a multiple of the world size)
        when the split is smaller than one global batch, so that it still trains."""
        if n >= self.global_batch:
            return self.global_batch
        return max(1, n // self.size) * self.size

    def steps(self, n: int) -> int:
        """Steps per epoch, equal on every rank (allreduce needs it); at least one."""
        return max(1, n // self.batch_for(n))


def epoch_indices(n: int, epoch: int, seed: int, shard: Sharding) -> np.ndarray:
    """This rank's indices for one epoch, as (steps, local batch).

    The permutation of (seed, epoch) is cut into global batches; this rank takes its contiguous
    slice of each, so the union of the ranks' slices of a step is the batch one worker draws.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps, batch = shard.steps(n), shard.batch_for(n)
    if n < batch:  # fewer images than workers: repeat the permutation to fill the one step
        perm = np.resize(perm, batch)
    local = batch // shard.size
    global_batches = perm[: steps * batch].reshape(steps, batch)
    return global_batches[:, shard.rank * local:(shard.rank + 1) * local]


def image_uniforms(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """Four uniform draws in [0, 1) per image [n, 4], a pure function of (seed, epoch, index).

    Seeded per image, not per batch or rank: an image is augmented the same way whichever rank
    reads it and wherever it lands in a batch (~30 us per image, a tenth of its warp).
    """
    return np.array([np.random.default_rng([seed, epoch, int(i)]).random(4) for i in indices],
                    dtype=np.float64).reshape(len(indices), 4)


def augment_matrices(uniforms: np.ndarray, height: int, width: int,
                     params: AugmentParams) -> np.ndarray:
    """Per-image affine maps [n, 2, 3] composing flip, rotation and shift.

    `uniforms` [n, 4] holds each image's draws in [0, 1) (`image_uniforms`). Each map sends an
    output pixel (x, y) to the input pixel it samples: rotate about the centre by theta, shift
    by (tx, ty), mirror x when flipped (ImageDataGenerator's uniform ranges).
    """
    u = np.asarray(uniforms, dtype=np.float64)
    n = len(u)
    theta = (2 * u[:, 0] - 1) * np.deg2rad(params.rotation)
    tx = (2 * u[:, 1] - 1) * params.width_shift * width
    ty = (2 * u[:, 2] - 1) * params.height_shift * height
    flip = np.where(u[:, 3] < 0.5, -1.0, 1.0) if params.horizontal_flip else np.ones(n)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = np.cos(theta), np.sin(theta)
    a0, a1, b0, b1 = flip * cos, -sin, flip * sin, cos
    a2 = cx - tx - a0 * cx - a1 * cy
    b2 = cy - ty - b0 * cx - b1 * cy
    return np.stack([np.stack([a0, a1, a2], 1), np.stack([b0, b1, b2], 1)], 1)


def augment_batch(images: np.ndarray, uniforms: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The random warp of a uint8 batch [n, h, w, 3], a pure function of (images, uniforms)."""
    n, height, width = images.shape[:3]
    matrices = augment_matrices(uniforms, height, width, params)
    out = np.empty_like(images)
    for image, matrix, dst in zip(images, matrices, out):
        cv2.warpAffine(image, matrix, (width, height), dst=dst,
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    return out


def train_dataset(arrays: SplitArrays, shard: Sharding, augment: AugmentParams, seed: int,
                  start_epoch: int, epochs: int) -> tuple[tf.data.Dataset, int]:
    """Batches for epochs [start_epoch, epochs) in order; returns (dataset, steps_per_epoch)."""
    n = len(arrays)
    steps = shard.steps(n)
    size = arrays.image_shape[0]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for epoch in range(start_epoch, epochs):
            for idx in epoch_indices(n, epoch, seed, shard):
                idx = np.sort(idx)
                yield (augment_batch(arrays.take(idx), image_uniforms(seed, epoch, idx), augment),
                       arrays.labels[idx])

    # OpenCV releases the GIL while it warps, so this generator runs beside the training step.
    ds = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([None, size, size, 3], tf.uint8),
        tf.TensorSpec([None], tf.int32)))
    return ds.prefetch(tf.data.AUTOTUNE), steps


def eval_dataset(arrays: SplitArrays, batch: int, rank: int = 0,
                 size: int = 1) -> tuple[tf.data.Dataset, int]:
    """This rank's share (every size-th image) of a split, in order, unaugmented."""
    mine = np.arange(rank, len(arrays), size)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(mine), batch):
            idx = mine[start:start + batch]
            yield arrays.take(idx), arrays.labels[idx]

    s = arrays.image_shape[0]
    ds = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([None, s, s, 3], tf.uint8), tf.TensorSpec([None], tf.int32)))
    return ds.prefetch(tf.data.AUTOTUNE), max(1, math.ceil(len(mine) / batch))
