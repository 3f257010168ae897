"""The preprocessed array cache: uint8 pixels in .npy shards, opened as memory maps.

Layout (written by `alexnet preprocess`, read by train and evaluate):

    data/cache/index.json              classes, image size, resize policy, per-split counts/shards
    data/cache/<split>/images-00000.npy  uint8 [n, size, size, 3], at most shard_size images
    data/cache/<split>/labels.npy        int32 [N], index into index.json's "classes"
    data/cache/<split>/sha256.npy        <U64 [N], content hash of the source file
    data/cache/<split>/paths.npy         <U    [N], path of the source file under data/raw

Every worker opens the shards with `np.load(mmap_mode="r")`: N Horovod workers on one host share
one copy in the page cache instead of holding N float32 copies in RAM (the reference's 4.9 GB).
No pickles anywhere: every load passes allow_pickle=False.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX = "index.json"
SPLITS = ("train", "val", "test")


@dataclass
class SplitArrays:
    """One split of the cache: shards of images as read-only memory maps, plus per-image columns."""

    shards: list[np.ndarray]
    labels: np.ndarray
    sha256: np.ndarray
    paths: np.ndarray
    shard_size: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.shards[0].shape[1:]) if self.shards else (0, 0, 3)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Gather images by global index into one uint8 array (copies only those images)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        shard_of, offset = np.divmod(indices, self.shard_size)
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

    arrays = SplitArrays(shards=shards, labels=column("labels"), sha256=column("sha256"),
                         paths=column("paths"), shard_size=int(index["shard_size"]))
    if sum(len(s) for s in shards) != len(arrays) or len(arrays) != info["count"]:
        raise ValueError(f"{d}: shards hold {sum(len(s) for s in shards)} images but the index "
                         f"says {info['count']}; rerun `alexnet preprocess`")
    return arrays
