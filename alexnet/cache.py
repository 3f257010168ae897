"""The preprocessed array cache: uint8 pixels in .npy shards, opened as memory maps.

Layout (written by `alexnet preprocess`, read by train and evaluate):

    data/cache/index.json              classes, image size, resize policy, per-split counts/shards
    data/cache/<split>/images-00000.npy  uint8 [n, size, size, 3], at most shard_size images
    data/cache/<split>/labels.npy        int32 [N], index into index.json's "classes"
    data/cache/<split>/sha256.npy        <U64 [N], content hash of the source file
    data/cache/<split>/paths.npy         <U    [N], the image's path (the manifest's, in the source)
    data/cache/<split>/location.npy      int64 [N, 2], (shard, row) holding each image's pixels

Image i of a split is the i-th path in sorted order, whatever the history of the cache: that
logical order is what training and evaluation see (`SplitArrays.take`). Where its pixels live is
`location`: contiguous for a cache built from scratch, but a rerun that only added images keeps
the previous shards (hard links, not copies) and puts the new images in new shards, so it never
rewrites what did not change. The two caches differ on disk and are identical through `take`.

Every worker opens the shards with `np.load(mmap_mode="r")`: N Horovod workers on one host share
one copy in the page cache instead of holding N float32 copies in RAM (the reference's 4.9 GB).
No pickles anywhere: every load passes allow_pickle=False.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX = "index.json"
SPLITS = ("train", "val", "test")
# The per-image columns of a split (location.npy is absent from caches older than it).
COLUMNS = ("labels", "sha256", "paths", "location")


@dataclass
class SplitArrays:
    """One split of the cache: shards of images as read-only memory maps, plus per-image columns."""

    shards: list[np.ndarray]
    labels: np.ndarray
    sha256: np.ndarray
    paths: np.ndarray
    shard_size: int
    location: np.ndarray | None = None  # [N, 2] (shard, row); None: contiguous, shard_size each

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.shards[0].shape[1:]) if self.shards else (0, 0, 3)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Gather images by global index into one uint8 array (copies only those images)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        if self.location is None:
            shard_of, offset = np.divmod(indices, self.shard_size)
        else:
            shard_of, offset = self.location[indices].T
        for s in np.unique(shard_of):
            mask = shard_of == s
            # Sorted reads within a shard keep the page-cache access sequential.
            out[mask] = self.shards[s][offset[mask]]
        return out


def read_index(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / INDEX
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no cache index; run `alexnet preprocess` first") from None


def open_split(cache_dir: str | Path, split: str) -> SplitArrays:
    """Open one split of the cache read-only (memory-mapped, nothing loaded up front)."""
    cache_dir = Path(cache_dir)
    index = read_index(cache_dir)
    if split not in index["splits"]:
        raise KeyError(f"{cache_dir}: no split {split!r} in the cache (has {list(index['splits'])})")
    info = index["splits"][split]
    shards = [np.load(cache_dir / s, mmap_mode="r", allow_pickle=False) for s in info["shards"]]
    d = cache_dir / split

    def column(name: str) -> np.ndarray:
        return np.load(d / f"{name}.npy", allow_pickle=False)

    # Caches written before location.npy existed are contiguous.
    location = column("location") if (d / "location.npy").is_file() else None
    arrays = SplitArrays(shards=shards, labels=column("labels"), sha256=column("sha256"),
                         paths=column("paths"), shard_size=int(index["shard_size"]),
                         location=location)
    if len(arrays) != info["count"]:
        raise ValueError(f"{d}: {len(arrays)} labels but the index says {info['count']} images; "
                         "rerun `alexnet preprocess`")
    sizes = np.array([len(s) for s in shards], dtype=np.int64)
    if location is None:
        fits = int(sizes.sum()) == len(arrays)
    else:
        shard_of, row = location.reshape(-1, 2).T
        fits = (location.shape == (len(arrays), 2)
                and bool(np.all((shard_of >= 0) & (shard_of < len(sizes))))
                and bool(np.all((row >= 0) & (row < sizes[shard_of]))))
    if not fits:
        raise ValueError(f"{d}: the shards do not hold the {len(arrays)} images the index "
                         "lists; rerun `alexnet preprocess`")
    return arrays


# What a cache holds, as opposed to how it is laid out on disk (shard files, shard size, location):
# a cache grown by reruns and one built from scratch hold the same images and are equal here.
LOGICAL_COLUMNS = ("labels", "sha256", "paths")


def cache_digest(cache_dir: str | Path, splits: tuple[str, ...] = ("train", "val")) -> str:
    """sha256 of what a cache holds for `splits`, cheap enough to compute on every Horovod rank.

    Hashes the logical content: index.json without its layout (shard lists, shard size) -
    classes, image size, resize policy, the preprocess fingerprint, counts - and each split's
    labels, source hashes and paths in image order, as training reads them (a few MB for 10,000
    images). Never the pixels: they are a pure function of the source hashes and the preprocess
    fingerprint hashed here. Two hosts with equal digests train on the same images, labels and
    order, however their shards are laid out. Before hashing, each split is opened as training
    opens it (open_split), so a shard missing or shorter than the index implies (an interrupted
    copy) is refused rather than digested.

    Raises:
        FileNotFoundError: no index, or a column or shard it names is missing.
        ValueError, KeyError: the index is not a cache index, lacks a split, or the shards do not
            hold the images it lists.
    """
    cache_dir = Path(cache_dir)
    if not (cache_dir / INDEX).is_file():
        raise FileNotFoundError(f"{cache_dir / INDEX}: no cache index")
    index = json.loads((cache_dir / INDEX).read_bytes())
    logical = {k: v for k, v in index.items() if k not in ("splits", "shard_size")}
    logical["splits"] = {split: index["splits"][split]["count"] for split in splits}
    digest = hashlib.sha256(json.dumps(logical, sort_keys=True).encode())
    for split in splits:
        arrays = open_split(cache_dir, split)  # integrity: every shard there, with its rows
        for name in LOGICAL_COLUMNS:
            column = np.ascontiguousarray(getattr(arrays, name))
            digest.update(f"\0{split}/{name}\0{column.dtype.str}\0".encode())
            digest.update(column.tobytes())
    return digest.hexdigest()
