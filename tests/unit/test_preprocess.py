"""The cache is uint8, memory-mappable, sharded, and matches the splits."""

import json
import shutil

import numpy as np
import pytest

from alexnet.cache import open_split
from alexnet.errors import DataError
from alexnet.ingest import ingest
from alexnet.io import read_csv, write_csv
from alexnet.params import IngestParams, PreprocessParams
from alexnet.preprocess import preprocess

from tests.conftest import sample_splits
from tests.unit.corpus import damage_members, write_tree


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    return root, sample_splits(root, per_class=9, seed=3)


def test_cache_is_uint8_memmap_and_matches_splits(sample, tmp_path, force_pool):
    root, rows = sample
    index = preprocess(root / "raw", root / "splits.csv", tmp_path / "cache",
                       PreprocessParams(image_size=67, shard_size=4), workers=2)
    assert index["classes"] == ["disks", "stripes"] and index["image_size"] == 67
    assert json.loads((tmp_path / "cache/index.json").read_text()) == index
    for split in ("train", "val", "test"):
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["path"])
        arrays = open_split(tmp_path / "cache", split)
        assert len(arrays) == len(part) == 6 and len(arrays.shards) == 2
        assert all(isinstance(s, np.memmap) and s.dtype == np.uint8 for s in arrays.shards)
        assert arrays.image_shape == (67, 67, 3)
        assert list(arrays.paths) == [r["path"] for r in part]
        assert [index["classes"][i] for i in arrays.labels] == [r["label"] for r in part]
    assert not list(tmp_path.glob(".cache.tmp-*"))  # the temporary directory was renamed


@pytest.mark.parametrize("policy", ["squash", "crop", "pad"])
def test_resize_policies_are_deterministic(sample, tmp_path, policy, force_pool):
    # workers=1 decodes in-process, workers=2 in the pool: the pixels must not differ.
    root, _ = sample
    params = PreprocessParams(image_size=67, resize=policy, shard_size=100)
    preprocess(root / "raw", root / "splits.csv", tmp_path / "a", params, workers=1)
    preprocess(root / "raw", root / "splits.csv", tmp_path / "b", params, workers=2)
    a, b = open_split(tmp_path / "a", "test"), open_split(tmp_path / "b", "test")
    assert np.array_equal(a.shards[0], b.shards[0])


def test_undecodable_image_names_the_file(tmp_path):
    source = write_tree(tmp_path / "src", {"disks/broken.jpg": b"\xff\xd8\xff not really",
                                            "stripes/1.jpg": b"\xff\xd8\xff nor this"})
    ingest(source, tmp_path / "raw", tmp_path / "manifest.csv", tmp_path / "ingest.json",
           IngestParams())
    [row] = [r for r in read_csv(tmp_path / "manifest.csv") if r["label"] == "disks"]
    write_csv(tmp_path / "splits.csv", ["path", "label", "sha256", "split"],
              [{"path": row["path"], "label": "disks", "sha256": row["sha256"], "split": "train"}])
    with pytest.raises(DataError, match="broken.jpg.*: cannot be decoded"):
        preprocess(tmp_path / "raw", tmp_path / "splits.csv", tmp_path / "cache",
                   PreprocessParams(67), workers=1)
    assert not (tmp_path / "cache").exists()


def test_splits_of_another_ingest_run_are_refused(sample, tmp_path):
    root, rows = sample
    other = [{**r, "sha256": "0" * 64} if i == 0 else r for i, r in enumerate(rows)]
    with pytest.raises(DataError, match=f"{rows[0]['path']}: .* does not hold this image"):
        preprocess(root / "raw", _splits(root, other, tmp_path / "s.csv"), tmp_path / "cache",
                   PreprocessParams(67), workers=1)


def test_rerun_decodes_only_new_images(sample, tmp_path):
    root, rows = sample
    params = PreprocessParams(image_size=67, shard_size=4)
    preprocess(root / "raw", root / "splits.csv", tmp_path / "cache", params, workers=1)
    before = open_split(tmp_path / "cache", "train")
    first = before.take(np.arange(len(before)))
    # Overwrite one known image with garbage: if it were read again, preprocess would fail.
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw", raw)
    damage_members(raw, [rows[0]["path"]])
    preprocess(raw, root / "splits.csv", tmp_path / "cache", params, workers=1)
    after = open_split(tmp_path / "cache", "train")
    assert np.array_equal(after.take(np.arange(len(after))), first)

    # Other settings: nothing is reused, so the damaged file is decoded and named.
    with pytest.raises(DataError, match=rows[0]["path"]):
        preprocess(raw, root / "splits.csv", tmp_path / "cache",
                   PreprocessParams(image_size=70, shard_size=4), workers=1)
    assert open_split(tmp_path / "cache", "train").image_shape == (67, 67, 3)  # old cache intact


def test_small_jobs_skip_the_pool_and_large_ones_use_it():
    from alexnet.parallel import MIN_JOBS_FOR_POOL, use_pool

    assert not use_pool(MIN_JOBS_FOR_POOL - 1, workers=2)
    assert use_pool(MIN_JOBS_FOR_POOL, workers=2) and not use_pool(10_000, workers=1)


def _logical(cache, split):
    a = open_split(cache, split)
    return a.take(np.arange(len(a))), list(a.paths), list(a.labels), list(a.sha256)


def _splits(root, rows, path):
    write_csv(path, ["path", "label", "sha256", "split"], rows)
    return path


def test_adding_images_keeps_old_shards_and_matches_a_fresh_build(sample, tmp_path):
    root, rows = sample
    params = PreprocessParams(image_size=67, shard_size=4)
    first = [r for i, r in enumerate(rows) if i % 6]  # 15 of 18: later, 3 new train images
    cache = tmp_path / "cache"
    preprocess(root / "raw", _splits(root, first, tmp_path / "a.csv"), cache, params, workers=1)
    old_shards = json.loads((cache / "index.json").read_text())["splits"]["train"]["shards"]
    inodes = {name: (cache / name).stat().st_ino for name in old_shards}

    everything = _splits(root, rows, tmp_path / "b.csv")
    preprocess(root / "raw", everything, cache, params, workers=1)
    index = json.loads((cache / "index.json").read_text())
    train = index["splits"]["train"]["shards"]
    assert train[:len(old_shards)] == old_shards  # kept, and new images went to a new shard
    assert len(train) == len(old_shards) + 1
    assert {n: (cache / n).stat().st_ino for n in old_shards} == inodes  # not rewritten

    fresh = tmp_path / "fresh"
    preprocess(root / "raw", everything, fresh, params, workers=1)
    for split in ("train", "val", "test"):
        a, b = _logical(cache, split), _logical(fresh, split)
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_moved_images_are_copied_and_mostly_removed_splits_are_compacted(sample, tmp_path):
    root, rows = sample
    params = PreprocessParams(image_size=67, shard_size=4)
    cache = tmp_path / "cache"
    preprocess(root / "raw", _splits(root, rows, tmp_path / "a.csv"), cache, params, workers=1)
    # Damage every image: anything read again would fail, so all pixels must be reused.
    raw = tmp_path / "raw"
    shutil.copytree(root / "raw", raw)
    damage_members(raw, [r["path"] for r in rows])
    # Keep 1 of the 6 train images and move every val image to train: 3 of the 4 rows of the
    # old shard train would keep are gone, so train is rewritten compactly from the old pixels.
    train = [r for r in rows if r["split"] == "train"][:1]
    moved = [{**r, "split": "train"} for r in rows if r["split"] == "val"]
    test = [r for r in rows if r["split"] == "test"]
    preprocess(raw, _splits(root, train + moved + test, tmp_path / "b.csv"), cache, params,
               workers=1)
    arrays = open_split(cache, "train")
    assert len(arrays) == 7 and sum(len(s) for s in arrays.shards) == 7  # no unused rows
    assert np.array_equal(arrays.location[:, 0], np.arange(7) // 4)  # contiguous again

    fresh = tmp_path / "fresh"
    preprocess(root / "raw", tmp_path / "b.csv", fresh, params, workers=1)
    for split in ("train", "test"):
        a, b = _logical(cache, split), _logical(fresh, split)
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_cache_that_does_not_hold_its_images_is_refused(sample, tmp_path):
    root, rows = sample
    cache = tmp_path / "cache"
    preprocess(root / "raw", root / "splits.csv", cache, PreprocessParams(67, shard_size=4),
               workers=1)
    location = np.load(cache / "train/location.npy")
    location[0] = (0, 99)  # a row past the end of its shard
    np.save(cache / "train/location.npy", location)
    with pytest.raises(ValueError, match="do not hold"):
        open_split(cache, "train")


def test_a_shard_whose_images_are_all_gone_is_dropped(sample, tmp_path):
    root, rows = sample
    params = PreprocessParams(image_size=67, shard_size=4)
    cache = tmp_path / "cache"
    preprocess(root / "raw", _splits(root, rows, tmp_path / "a.csv"), cache, params, workers=1)
    train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["path"])
    others = [r for r in rows if r["split"] != "train"]
    later = _splits(root, train[4:] + others, tmp_path / "b.csv")  # only shard 1's images left
    preprocess(root / "raw", later, cache, params, workers=1)
    index = json.loads((cache / "index.json").read_text())
    assert index["splits"]["train"]["shards"] == ["train/images-00001.npy"]
    fresh = tmp_path / "fresh"
    preprocess(root / "raw", later, fresh, params, workers=1)
    a, b = _logical(cache, "train"), _logical(fresh, "train")
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def test_shards_are_kept_from_the_twin_after_dvc_removed_the_cache(sample, tmp_path):
    """`dvc repro` deletes data/cache before preprocess runs (not a `persist` out); the last
    cache survives as hard links in data/.cache.kept, and its shards are kept, not decoded."""
    root, rows = sample
    params = PreprocessParams(image_size=67, shard_size=4)
    first = [r for i, r in enumerate(rows) if i % 6]
    cache = tmp_path / "cache"
    preprocess(root / "raw", _splits(root, first, tmp_path / "a.csv"), cache, params, workers=1)
    old_shards = json.loads((cache / "index.json").read_text())["splits"]["train"]["shards"]
    inodes = {name: (cache / name).stat().st_ino for name in old_shards}
    shutil.rmtree(cache)  # what `dvc repro` does to a stage's outs before running it

    preprocess(root / "raw", _splits(root, rows, tmp_path / "b.csv"), cache, params, workers=1)
    assert {n: (cache / n).stat().st_ino for n in old_shards} == inodes  # kept, not rewritten
    kept = {p.relative_to(tmp_path / ".cache.kept") for p in (tmp_path / ".cache.kept").rglob("*")}
    assert kept == {p.relative_to(cache) for p in cache.rglob("*")}
