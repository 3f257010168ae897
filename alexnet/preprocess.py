"""Decode, normalise and resize every image once, into the uint8 memmap cache (see cache.py).

    alexnet preprocess --raw data/raw --splits data/splits.csv --out data/cache

Runs in a process pool over all cores. Memory stays bounded: each shard is written through a
memory-mapped .npy file, never assembled in RAM. Incremental: the pixels of an image whose sha256
is already in the previous cache (built with the same image size and resize policy) are copied
from it, so a rerun after adding images decodes only the new ones (dvc.yaml keeps data/cache
across runs for this, `persist: true`).
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet.cache import INDEX, SPLITS, SplitArrays, open_split, read_index
from alexnet.errors import DataError
from alexnet.images import load_rgb, resize
from alexnet.io import atomic_dir, read_csv, write_json
from alexnet.parallel import mapper
from alexnet.params import PreprocessParams

_logger = logging.getLogger(__name__)


def load_pixels(path: Path, size: int, policy: str) -> np.ndarray:
    """One image file -> (size, size, 3) uint8, exactly as training and prediction see it."""
    try:
        # Draft mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale when the target is that small.
        return resize(load_rgb(path, draft_size=(size, size)), size, policy)  # type: ignore[arg-type]
    except Exception as exc:  # validate accepted it, so this is a changed or unreadable file
        raise DataError(f"{path}: cannot be decoded ({type(exc).__name__}: {exc}); "
                        f"was it changed after validation?") from exc


def previous_pixels(out_dir: Path, params: PreprocessParams) -> dict[str, tuple[SplitArrays, int]]:
    """sha256 -> (split arrays, index) of an existing cache built with the same settings."""
    try:
        index = read_index(out_dir)
    except (FileNotFoundError, ValueError):
        return {}
    if (index.get("image_size"), index.get("resize")) != (params.image_size, params.resize):
        return {}
    found: dict[str, tuple[SplitArrays, int]] = {}
    for split in index["splits"]:
        try:
            arrays = open_split(out_dir, split)
        except (OSError, ValueError, KeyError) as exc:  # damaged: rebuild rather than trust it
            _logger.warning("preprocess: ignoring the previous cache (%s)", exc)
            return {}
        found.update({sha: (arrays, i) for i, sha in enumerate(arrays.sha256.tolist())})
    return found


def preprocess(raw_dir: Path, splits_path: Path, out_dir: Path, params: PreprocessParams,
               workers: int | None = None) -> dict:
    """Build the cache for every split; returns the index written to out_dir/index.json."""
    rows = read_csv(splits_path)
    if not rows:
        raise DataError(f"{splits_path}: no images to preprocess")
    classes = sorted({r["label"] for r in rows})
    class_index = {c: i for i, c in enumerate(classes)}
    size = params.image_size
    load = partial(load_pixels, size=size, policy=params.resize)
    index = {"classes": classes, "image_size": size, "resize": params.resize,
             "shard_size": params.shard_size, "splits": {}}
    known = previous_pixels(out_dir, params)
    to_decode = sum(r["sha256"] not in known for r in rows)
    reused = 0
    with atomic_dir(out_dir) as tmp, mapper(to_decode, workers) as map_:
        for split in SPLITS:
            part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["path"])
            (tmp / split).mkdir()
            shards = []
            bar = tqdm(total=len(part), desc=f"preprocess {split}", unit="img",
                       disable=not sys.stderr.isatty(), file=sys.stderr)
            for start in range(0, len(part), params.shard_size):
                chunk = part[start:start + params.shard_size]
                name = f"{split}/images-{start // params.shard_size:05d}.npy"
                shard = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.uint8,
                                                  shape=(len(chunk), size, size, 3))
                new = [i for i, r in enumerate(chunk) if r["sha256"] not in known]
                for i, r in enumerate(chunk):
                    if r["sha256"] in known:
                        arrays, j = known[r["sha256"]]
                        shard[i] = arrays.take(np.array([j]))[0]
                        bar.update()
                paths = [raw_dir / chunk[i]["path"] for i in new]
                for i, pixels in zip(new, map_(load, paths)):
                    shard[i] = pixels
                    bar.update()
                reused += len(chunk) - len(new)
                shard.flush()
                del shard
                shards.append(name)
            bar.close()
            np.save(tmp / split / "labels.npy",
                    np.array([class_index[r["label"]] for r in part], dtype=np.int32))
            np.save(tmp / split / "sha256.npy", np.array([r["sha256"] for r in part], dtype="<U64"))
            np.save(tmp / split / "paths.npy", np.array([r["path"] for r in part], dtype=str))
            index["splits"][split] = {"count": len(part), "shards": shards}
            _logger.info("preprocess: %s %d images in %d shard(s)", split, len(part), len(shards))
        write_json(tmp / INDEX, index)
        known.clear()  # release the previous cache's memory maps before it is replaced
    _logger.info("preprocess: %d image(s) decoded, %d reused from the previous cache",
                 len(rows) - reused, reused)
    return index
