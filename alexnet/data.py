"""tf.data input pipeline from the uint8 memmap cache.

Per epoch, one global permutation (seeded by seed and epoch, the same on every rank) is dealt
out across ranks: rank r takes positions r, r+size, ... so each worker reads its own shard, and the
shards change every epoch. Batches are read from the memmap (uint8, sorted indices for sequential
page-cache reads), augmented on the batch with ONE projective transform (rotation, shift and
flip composed into a single matrix per image: the reference's ImageDataGenerator settings at a
fraction of the cost of three separate layers), and prefetched. Pixels stay 0..255; the model's
first layer scales them to [0, 1].

Because the permutation and the augmentation are pure functions of (seed, epoch, step, rank),
a resumed run at epoch k sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import tensorflow as tf

from alexnet.cache import SplitArrays
from alexnet.params import AugmentParams


@dataclass(frozen=True)
class Sharding:
    """How one rank sees a split: its rank, the world size and the global batch size."""

    rank: int = 0
    size: int = 1
    global_batch: int = 128

    @property
    def local_batch(self) -> int:
        return max(1, self.global_batch // self.size)

    def steps(self, n: int) -> int:
        """Steps per epoch, equal on every rank (allreduce needs it); at least one."""
        return max(1, n // (self.local_batch * self.size))

    def batch_for(self, n: int) -> int:
        """Local batch, shrunk when the split is smaller than one global batch."""
        return max(1, min(self.local_batch, n // self.size))


def epoch_indices(n: int, epoch: int, seed: int, shard: Sharding) -> np.ndarray:
    """This rank's indices for one epoch, as (steps, batch), permuted by (seed, epoch)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    mine = perm[shard.rank::shard.size]
    steps, batch = shard.steps(n), shard.batch_for(n)
    return mine[: steps * batch].reshape(steps, batch)


def augment_transforms(seeds: tf.Tensor, batch: int, height: int, width: int,
                       params: AugmentParams) -> tf.Tensor:
    """Per-image projective transforms [batch, 8] composing flip, rotation and shift.

    Each row maps an output pixel (x, y) to the input pixel it samples: rotate about the centre
    by theta, shift by (tx, ty), mirror x when flipped (as ImageDataGenerator does, uniform ranges).
    """
    s = tf.unstack(seeds)
    theta = tf.random.stateless_uniform([batch], [s[0], s[1]], -1.0, 1.0) * (
        params.rotation * math.pi / 180.0)
    tx = tf.random.stateless_uniform([batch], [s[0], s[1] + 1], -1.0, 1.0) * (
        params.width_shift * width)
    ty = tf.random.stateless_uniform([batch], [s[0], s[1] + 2], -1.0, 1.0) * (
        params.height_shift * height)
    if params.horizontal_flip:
        coin = tf.random.stateless_uniform([batch], [s[0], s[1] + 3])
        flip = tf.where(coin < 0.5, -1.0, 1.0)
    else:
        flip = tf.ones([batch])
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    a0, a1 = flip * cos, -sin
    b0, b1 = flip * sin, cos
    a2 = cx - tx - a0 * cx - a1 * cy
    b2 = cy - ty - b0 * cx - b1 * cy
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, seeds: tf.Tensor, params: AugmentParams) -> tf.Tensor:
    """Apply the fused random transform to a uint8 batch; returns float32 in [0, 255]."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    transforms = augment_transforms(seeds, batch, tf.cast(height, tf.float32),
                                    tf.cast(width, tf.float32), params)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms,
        output_shape=tf.stack([height, width]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST")


def train_dataset(arrays: SplitArrays, shard: Sharding, augment: AugmentParams, seed: int,
                  start_epoch: int, epochs: int) -> tuple[tf.data.Dataset, int]:
    """Batches for epochs [start_epoch, epochs) in order; returns (dataset, steps_per_epoch)."""
    n = len(arrays)
    steps = shard.steps(n)
    size = arrays.image_shape[0]

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for epoch in range(start_epoch, epochs):
            for step, idx in enumerate(epoch_indices(n, epoch, seed, shard)):
                idx = np.sort(idx)
                yield (arrays.take(idx), arrays.labels[idx],
                       np.array([seed, (epoch * 1_000_003 + step) * 64 + shard.rank], np.int64))

    ds = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([None, size, size, 3], tf.uint8),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([2], tf.int64)))
    ds = ds.map(lambda x, y, s: (augment_batch(x, s, augment), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
