"""Every Horovod host must train on the same cache: the digest each rank computes and the verdict
rank 0's message gives (the real multi-host runs are in tests/distributed/test_hosts.py)."""

import shutil
import socket

import numpy as np
import pytest

from alexnet.cache import cache_digest, open_split, read_index
from alexnet.distributed import cache_mismatch, host_report
from alexnet.io import read_csv, write_csv
from alexnet.params import PreprocessParams
from alexnet.preprocess import preprocess
from alexnet.train import rank_errors

from tests.conftest import sample_splits


SQUASH = PreprocessParams(image_size=67, resize="squash", shard_size=3)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """Two real caches of the same images: resized by squashing, and by cropping."""
    root = tmp_path_factory.mktemp("caches")
    sample_splits(root, per_class=6, seed=1)
    for policy in ("squash", "crop"):
        preprocess(root / "raw", root / "splits.csv", root / policy,
                   PreprocessParams(image_size=67, resize=policy, shard_size=3), workers=1)
    return root


def test_copies_agree_and_other_data_differs(caches, tmp_path):
    squash = cache_digest(caches / "squash")
    shutil.copytree(caches / "squash", tmp_path / "copy")  # e.g. `dvc pull` on another host
    assert cache_digest(tmp_path / "copy") == squash
    assert cache_digest(caches / "crop") != squash  # other preprocess settings

    labels = tmp_path / "copy/train/labels.npy"
    np.save(labels, 1 - np.load(labels))  # other labels for the same images
    assert cache_digest(tmp_path / "copy") != squash

    shutil.rmtree(tmp_path / "copy")
    shutil.copytree(caches / "squash", tmp_path / "copy")
    shard = tmp_path / "copy/val/images-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-100])  # an interrupted copy
    with pytest.raises(ValueError):
        cache_digest(tmp_path / "copy")
    shard.unlink()
    with pytest.raises(FileNotFoundError):
        cache_digest(tmp_path / "copy")
    with pytest.raises(FileNotFoundError, match="no cache index"):
        cache_digest(tmp_path / "nowhere")


def test_the_same_images_in_other_shards_have_the_same_digest(caches, tmp_path):
    """Other shard sizes, or a cache grown by a rerun (`dvc repro preprocess` after new images),
    hold the same images, labels and order as one built from scratch: same digest."""
    rows = read_csv(caches / "splits.csv")
    write_csv(tmp_path / "part.csv", ["path", "label", "sha256", "split"], rows[::2])
    grown = tmp_path / "grown"
    for splits in (tmp_path / "part.csv", caches / "splits.csv"):
        preprocess(caches / "raw", splits, grown, SQUASH, workers=1)
    wide = tmp_path / "wide"
    preprocess(caches / "raw", caches / "splits.csv", wide,
               PreprocessParams(image_size=67, resize="squash", shard_size=5), workers=1)
    location = [np.load(c / "train/location.npy") for c in (grown, caches / "squash", wide)]
    assert str(location[0].tolist()) != str(location[1].tolist()) != str(location[2].tolist())
    assert read_index(caches / "squash")["shard_size"] != read_index(wide)["shard_size"]
    assert cache_digest(grown) == cache_digest(caches / "squash") == cache_digest(wide)


def test_other_order_of_the_same_images_has_another_digest(caches, tmp_path):
    shutil.copytree(caches / "squash", tmp_path / "copy")
    split = tmp_path / "copy/train"
    for name in ("labels", "sha256", "paths", "location"):  # the same images, in reverse order
        np.save(split / f"{name}.npy", np.load(split / f"{name}.npy")[::-1])
    assert open_split(tmp_path / "copy", "train").take(np.arange(2)).shape[0] == 2  # readable
    assert cache_digest(tmp_path / "copy") != cache_digest(caches / "squash")


def test_test_split_is_not_part_of_what_training_compares(caches, tmp_path):
    shutil.copytree(caches / "squash", tmp_path / "copy")
    (tmp_path / "copy/test/paths.npy").unlink()  # training never opens the test split
    assert cache_digest(tmp_path / "copy") == cache_digest(caches / "squash")


def reports(monkeypatch, caches_by_rank):
    out = []
    for rank, (host, cache) in enumerate(caches_by_rank):
        monkeypatch.setenv("HOROVOD_HOSTNAME", host)
        out.append(host_report(cache, rank))
    return out


def test_same_cache_on_every_host_passes(caches, monkeypatch):
    same = [("gpu1", caches / "squash")] * 2 + [("gpu2", caches / "squash")] * 2
    assert cache_mismatch(reports(monkeypatch, same)) is None


def test_the_host_whose_cache_differs_or_is_missing_is_named(caches, monkeypatch, tmp_path):
    machine = socket.gethostname()
    got = cache_mismatch(reports(monkeypatch, [
        ("gpu1", caches / "squash"), ("gpu1", caches / "squash"),
        ("gpu2", caches / "crop"), ("gpu2", caches / "crop"),
        ("gpu3", tmp_path / "empty"), ("gpu3", tmp_path / "empty")]))
    assert got.startswith("the hosts do not train on the same data: ")
    assert f"host gpu2 (machine {machine}, ranks 2, 3) has a different cache at " \
           f"{caches / 'crop'} (digest " in got
    assert f"from host gpu1 (machine {machine}, rank 0)'s (digest " in got  # the reference
    assert "rank 0) has" not in got and "ranks 0, 1" not in got
    assert f"host gpu3 (machine {machine}, ranks 4, 5) has no usable cache: " \
           f"{tmp_path / 'empty' / 'index.json'}: no cache index" in got
    assert "dvc pull data/cache" in got and "dvc repro" not in got and "\n" not in got


def test_a_truncated_copy_is_refused_naming_its_host(caches, monkeypatch, tmp_path):
    shutil.copytree(caches / "squash", tmp_path / "copy")
    shard = tmp_path / "copy/train/images-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-100])  # an interrupted `dvc pull`
    got = cache_mismatch(reports(monkeypatch, [("gpu1", caches / "squash"),
                                               ("gpu2", tmp_path / "copy")]))
    assert f"host gpu2 (machine {socket.gethostname()}, rank 1) has no usable cache: " in got


def test_rank_0_without_a_cache_is_named(caches, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a relative cache path is reported absolute
    got = cache_mismatch(reports(monkeypatch, [("gpu1", "data/cache"),
                                               ("gpu2", caches / "squash")]))
    assert f"host gpu1 (machine {socket.gethostname()}, rank 0) has no usable cache: " \
           f"{tmp_path / 'data/cache/index.json'}" in got
    assert "gpu2" not in got


def test_a_message_every_rank_prints_is_reported_once():
    assert rank_errors({1: "error: X", 0: "error: X", 2: "error: Y"}) == \
        "ranks 0, 1: error: X; rank 2: error: Y"
    assert rank_errors({}) == ""
