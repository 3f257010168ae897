"""The input pipeline: per-rank shards, deterministic epochs, and the fused augmentation."""

import numpy as np
import pytest

from alexnet.cache import SplitArrays
from alexnet.data import (Sharding, augment_batch, epoch_indices, eval_dataset, image_uniforms,
                          train_dataset)
from alexnet.params import AugmentParams

NONE = AugmentParams(rotation=0, width_shift=0, height_shift=0, horizontal_flip=False)


def arrays(n=20, size=8, shard_size=7):
    images = np.arange(n * size * size * 3, dtype=np.int64).reshape(n, size, size, 3) % 251
    images = images.astype(np.uint8)
    shards = [images[i:i + shard_size] for i in range(0, n, shard_size)]
    return SplitArrays(shards=shards, labels=np.arange(n, dtype=np.int32) % 2,
                       sha256=np.array([f"{i:064d}" for i in range(n)]),
                       paths=np.array([f"{i}.jpg" for i in range(n)]), shard_size=shard_size)


def test_take_gathers_across_shards():
    a = arrays()
    idx = np.array([0, 6, 7, 13, 19])
    full = np.concatenate(a.shards)
    assert np.array_equal(a.take(idx), full[idx])


def test_ranks_get_disjoint_shards_that_change_each_epoch():
    n = 103
    ranks = [epoch_indices(n, 0, 42, Sharding(r, 2, 10)) for r in range(2)]
    assert ranks[0].shape == ranks[1].shape == (10, 5)  # 103 // 10 steps of 5 per rank
    assert not set(ranks[0].ravel()) & set(ranks[1].ravel())
    assert not np.array_equal(ranks[0], epoch_indices(n, 1, 42, Sharding(0, 2, 10)))
    assert np.array_equal(ranks[0], epoch_indices(n, 0, 42, Sharding(0, 2, 10)))


@pytest.mark.parametrize("size", [2, 4, 8])
def test_each_step_holds_the_single_worker_batch_whatever_the_world_size(size):
    n, batch = 203, 24
    one = epoch_indices(n, 3, 42, Sharding(0, 1, batch))
    ranks = [epoch_indices(n, 3, 42, Sharding(r, size, batch)) for r in range(size)]
    assert one.shape == (8, 24) and all(r.shape == (8, 24 // size) for r in ranks)
    for step in range(len(one)):
        union = np.concatenate([r[step] for r in ranks])
        assert len(set(union)) == batch
        assert np.array_equal(np.sort(union), np.sort(one[step]))


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the world size"):
        Sharding(0, 3, 16)


def test_split_smaller_than_one_global_batch_still_trains():
    idx = epoch_indices(3, 0, 0, Sharding(0, 2, 128))
    assert idx.shape == (1, 1)
    one = epoch_indices(5, 0, 0, Sharding(0, 1, 128))
    assert one.shape == (1, 5)


def test_no_augmentation_is_the_identity():
    x = arrays().shards[0]
    assert np.array_equal(augment_batch(x, image_uniforms(1, 2, np.arange(len(x))), NONE), x)


def test_flip_only_mirrors_some_images_exactly():
    x = np.random.default_rng(0).integers(0, 255, (64, 8, 8, 3), dtype=np.uint8)
    flip = AugmentParams(rotation=0, width_shift=0, height_shift=0, horizontal_flip=True)
    out = augment_batch(x, image_uniforms(3, 4, np.arange(64)), flip)
    mirrored = [np.array_equal(o, s[:, ::-1]) for o, s in zip(out, x)]
    same = [np.array_equal(o, s) for o, s in zip(out, x)]
    assert all(m or s for m, s in zip(mirrored, same))
    assert 10 < sum(mirrored) < 54  # about half


def test_shift_moves_pixels_and_repeats_the_edge():
    # A whole-pixel shift: the output is the input moved, edges filled from the nearest pixel
    # (ImageDataGenerator's fill_mode="nearest"), not zeros.
    x = np.random.default_rng(1).integers(1, 255, (1, 8, 8, 3), dtype=np.uint8)
    matrix = np.array([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])  # output (x, y) samples (x+2, y)
    import cv2

    out = np.empty_like(x)
    cv2.warpAffine(x[0], matrix[0], (8, 8), dst=out[0],
                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    assert np.array_equal(out[0, :, :6], x[0, :, 2:])
    assert np.array_equal(out[0, :, 6], x[0, :, 7]) and np.array_equal(out[0, :, 7], x[0, :, 7])


def test_augmentation_matches_the_reference_interpolation_closely():
    # keras' ImageDataGenerator warps with scipy.ndimage.affine_transform (bilinear, float,
    # mode="nearest"): sampled at the same matrices, the warp differs from it only by OpenCV's
    # fixed-point interpolation and rounding to uint8.
    from scipy import ndimage

    from alexnet.data import augment_matrices

    rng = np.random.default_rng(2)
    x = np.stack([np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((4, 4, 1)))] * 4)
    x = x.astype(np.uint8)  # smooth 32x32 images
    uniforms = image_uniforms(7, 0, np.arange(4))
    matrices = augment_matrices(uniforms, 32, 32, AugmentParams())
    ours = augment_batch(x, uniforms, AugmentParams()).astype(np.float32)
    for image, (a, b), mine in zip(x.astype(np.float32), matrices, ours):
        # Output (y, x) samples input (row, col) = (b0 x + b1 y + b2, a0 x + a1 y + a2).
        ref = np.stack([ndimage.affine_transform(image[..., c], [[b[1], b[0]], [a[1], a[0]]],
                                                 offset=[b[2], a[2]], order=1, mode="nearest")
                        for c in range(3)], axis=-1)
        assert np.abs(mine - ref).mean() < 1.0 and np.abs(mine - ref).max() <= 12


def test_augmentation_is_deterministic_per_seed_and_bounded():
    x = arrays(n=16, size=32).shards[0]
    ref = AugmentParams()
    idx = np.arange(len(x))
    a = augment_batch(x, image_uniforms(5, 6, idx), ref)
    b = augment_batch(x, image_uniforms(5, 6, idx), ref)
    c = augment_batch(x, image_uniforms(5, 7, idx), ref)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == x.shape


def _augmented_by_image(a, shard, epochs=2):
    """{(epoch, image index): augmented pixels} over the batches train_dataset yields."""
    ds, steps = train_dataset(a, shard, AugmentParams(), seed=9, start_epoch=0, epochs=epochs)
    out = {}
    for i, (x, _) in enumerate(ds.as_numpy_iterator()):
        epoch = i // steps
        idx = np.sort(epoch_indices(len(a), epoch, 9, shard)[i % steps])
        out.update({(epoch, int(j)): image for j, image in zip(idx, x)})
    return out


def test_an_image_is_augmented_the_same_on_any_rank_and_world_size():
    a = arrays(n=24, size=32, shard_size=5)
    one = _augmented_by_image(a, Sharding(0, 1, 8))
    two = {**_augmented_by_image(a, Sharding(0, 2, 8)), **_augmented_by_image(a, Sharding(1, 2, 8))}
    assert len(one) == 2 * 24 and one.keys() == two.keys()
    assert all(np.array_equal(one[k], two[k]) for k in one)
    pixels = np.concatenate(a.shards)
    assert sum(not np.array_equal(one[(e, i)], pixels[i]) for e, i in one) > 24  # really warped


def test_train_dataset_yields_every_epoch_in_order():
    a = arrays(n=20)
    ds, steps = train_dataset(a, Sharding(0, 1, 4), AugmentParams(), seed=1, start_epoch=1, epochs=3)
    batches = list(ds.as_numpy_iterator())
    assert steps == 5 and len(batches) == 2 * steps
    x, y = batches[0]
    assert x.shape == (4, 8, 8, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    # A resumed run (start_epoch=2) sees exactly the last epoch of this one.
    resumed = list(train_dataset(a, Sharding(0, 1, 4), AugmentParams(), 1, 2, 3)[0].as_numpy_iterator())
    assert len(resumed) == steps
    for p, q in zip(resumed, batches[steps:]):
        assert np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1])
    assert not np.array_equal(resumed[0][0], batches[0][0])  # epochs differ: not a constant


@pytest.mark.parametrize("rank", [0, 1])
def test_eval_dataset_covers_each_rank_share_once(rank):
    a = arrays(n=11)
    ds, steps = eval_dataset(a, batch=4, rank=rank, size=2)
    labels = np.concatenate([y for _, y in ds.as_numpy_iterator()])
    assert len(labels) == len(range(rank, 11, 2)) and steps == -(-len(labels) // 4)
