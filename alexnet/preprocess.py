"""Decode, normalise and resize every image once, into the uint8 memmap cache (see cache.py).

    alexnet preprocess --raw data/raw --splits data/splits.csv --out data/cache

Decodes on one thread per core (Pillow releases the GIL while it decodes and resizes; see
parallel.py). Memory stays bounded: each shard is written through a memory-mapped .npy file,
never assembled in RAM.

Incremental (the last cache stays as hard links in out_dir's kept twin, io.keep, whatever DVC
does to out_dir): when the previous cache's pixels were produced the same way (same image size
and resize policy, same code: its index holds their alexnet.fingerprint) and with the same shard
size, a rerun keeps each split's previous shards as they are (hard links into the new cache,
nothing rewritten) and writes only the images it did not hold into new shards; an image found
elsewhere in the previous cache (another split) is copied rather than decoded. When the shards it
would keep hold more rows of images that are gone than MAX_GARBAGE times the split's size, the
split is rewritten compactly instead. Either way the cache reads the same through
`SplitArrays.take`, so training does not depend on the cache's history.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from alexnet.cache import INDEX, SPLITS, SplitArrays, open_split, read_index
from alexnet.errors import DataError
from alexnet.fingerprint import fingerprint
from alexnet.images import load_rgb, resize
from alexnet.io import atomic_dir, keep, link_or_copy, previous_output, read_csv, write_json
from alexnet.packs import Member, members
from alexnet.parallel import mapper
from alexnet.params import PreprocessParams

_logger = logging.getLogger(__name__)


def load_pixels(image: Member, size: int, policy: str) -> np.ndarray:
    """One image of data/raw -> (size, size, 3) uint8, exactly as training and prediction see
    it."""
    data = image.open()  # DataError if data/raw changed after ingest
    try:
        # Draft mode: libjpeg decodes at 1/2, 1/4 or 1/8 scale when the target is that small.
        return resize(load_rgb(data, draft_size=(size, size)), size, policy)  # type: ignore[arg-type]
    except Exception as exc:  # validate accepted it, so this is a changed or unreadable file
        raise DataError(f"{image}: cannot be decoded ({type(exc).__name__}: {exc}); "
                        f"was it changed after validation?") from exc


# A split keeps its previous shards while the rows in them of images that are gone (removed from
# the source, or moved to another split) number at most this fraction of the split's images.
MAX_GARBAGE = 0.25


@dataclass
class Previous:
    """The cache already in the output directory, if built with the same image settings."""

    splits: dict[str, SplitArrays] = field(default_factory=dict)
    shard_names: dict[str, list[str]] = field(default_factory=dict)
    keep_shards: bool = False  # same shard size too: its shard files can be kept as they are

    def pixels(self) -> dict[str, tuple[SplitArrays, int]]:
        """sha256 -> (split arrays, index) of every image it holds."""
        return {sha: (arrays, i) for arrays in self.splits.values()
                for i, sha in enumerate(arrays.sha256.tolist())}


def pixels_fingerprint(params: PreprocessParams) -> str:
    """What produced the cached pixels: the decoding code and the params that shape them (the
    shard size only says how they are laid out)."""
    return fingerprint("alexnet.preprocess", {"image_size": params.image_size, "resize": params.resize})


def previous_cache(out_dir: Path, params: PreprocessParams) -> Previous:
    try:
        index = read_index(out_dir)
    except (FileNotFoundError, ValueError):
        return Previous()
    if index.get("fingerprint") != pixels_fingerprint(params):
        _logger.info("preprocess: the previous cache was made by other code or settings: "
                     "decoding every image")
        return Previous()
    previous = Previous(keep_shards=index.get("shard_size") == params.shard_size)
    for split, info in index["splits"].items():
        try:
            previous.splits[split] = open_split(out_dir, split)
        except (OSError, ValueError, KeyError) as exc:  # damaged: rebuild rather than trust it
            _logger.warning("preprocess: ignoring the previous cache (%s)", exc)
            return Previous()
        previous.shard_names[split] = list(info["shards"])
    return previous


def kept_shards(shas: list[str], old: SplitArrays, old_names: list[str]
                ) -> tuple[list[str], np.ndarray] | None:
    """Which previous shards of a split to keep, and where they hold each image of `shas`.

    Returns (shard names, location [N, 2] with -1 for the images they do not hold), or None when
    keeping them is not worth it: nothing in them is still wanted, or their rows of images that
    are gone outnumber MAX_GARBAGE times len(shas).
    """
    position = {sha: i for i, sha in enumerate(old.sha256.tolist())}
    hit = np.array([position.get(sha, -1) for sha in shas], dtype=np.int64)
    found = hit >= 0
    if not found.any():
        return None
    old_location = old.location if old.location is not None else np.stack(
        np.divmod(np.arange(len(old), dtype=np.int64), old.shard_size), axis=1)
    where = old_location[hit[found]]
    used = np.unique(where[:, 0])
    garbage = sum(len(old.shards[s]) for s in used) - len(np.unique(hit[found]))
    if garbage > MAX_GARBAGE * len(shas):
        return None
    location = np.full((len(shas), 2), -1, dtype=np.int64)
    location[found, 0] = np.searchsorted(used, where[:, 0])
    location[found, 1] = where[:, 1]
    return [old_names[s] for s in used], location


def _shard_number(name: str) -> int:
    return int(Path(name).stem.rsplit("-", 1)[1])


def preprocess(raw_dir: Path, splits_path: Path, out_dir: Path, params: PreprocessParams,
               workers: int | None = None, summary_path: Path | None = None) -> dict:
    """Build the cache for every split; returns the index written to out_dir/index.json.

    The splits name the images (path, sha256); raw_dir's index says where in its packs each one
    is (alexnet.packs).

    `summary_path` gets how many images were decoded, copied from the previous cache and kept
    in its shards, and each split's count.
    """
    rows = read_csv(splits_path)
    if not rows:
        raise DataError(f"{splits_path}: no images to preprocess")
    classes = sorted({r["label"] for r in rows})
    class_index = {c: i for i, c in enumerate(classes)}
    size = params.image_size
    load = partial(load_pixels, size=size, policy=params.resize)
    index = {"classes": classes, "image_size": size, "resize": params.resize,
             "shard_size": params.shard_size, "fingerprint": pixels_fingerprint(params),
             "splits": {}}
    # The previous cache: out_dir, or after `dvc repro` removed it, its kept twin (io.keep).
    old_dir = previous_output(out_dir)
    previous = previous_cache(old_dir, params)
    known = previous.pixels()
    plans = {}
    for split in SPLITS:
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["path"])
        plan = None
        if previous.keep_shards and split in previous.splits:
            plan = kept_shards([r["sha256"] for r in part], previous.splits[split],
                               previous.shard_names[split])
        plans[split] = (part, plan)
    counts = {"decoded": 0, "copied": 0, "kept": 0}
    to_decode = sum(r["sha256"] not in known for r in rows)
    where = members(raw_dir, (r for r in rows if r["sha256"] not in known))
    with atomic_dir(out_dir) as tmp, mapper(to_decode, workers, threads=True) as map_:
        for split, (part, plan) in plans.items():
            (tmp / split).mkdir()
            names, location = plan or ([], np.full((len(part), 2), -1, dtype=np.int64))
            for name in names:
                link_or_copy(old_dir / name, tmp / name)
            counts["kept"] += int((location[:, 0] >= 0).sum())
            todo = np.flatnonzero(location[:, 0] < 0)
            number = 1 + max((_shard_number(n) for n in names), default=-1)
            bar = tqdm(total=len(todo), desc=f"preprocess {split}", unit="img",
                       disable=not sys.stderr.isatty(), file=sys.stderr)
            for start in range(0, len(todo), params.shard_size):
                chunk = todo[start:start + params.shard_size]
                name = f"{split}/images-{number:05d}.npy"
                shard = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.uint8,
                                                  shape=(len(chunk), size, size, 3))
                new = []
                for j, i in enumerate(chunk):
                    if part[i]["sha256"] in known:
                        arrays, k = known[part[i]["sha256"]]
                        shard[j] = arrays.take(np.array([k]))[0]
                        counts["copied"] += 1
                        bar.update()
                    else:
                        new.append(j)
                images = [where[part[chunk[j]]["path"]] for j in new]
                for j, pixels in zip(new, map_(load, images)):
                    shard[j] = pixels
                    bar.update()
                counts["decoded"] += len(new)
                shard.flush()
                del shard
                location[chunk] = np.stack([np.full(len(chunk), len(names)),
                                            np.arange(len(chunk))], axis=1)
                names.append(name)
                number += 1
            bar.close()
            np.save(tmp / split / "labels.npy",
                    np.array([class_index[r["label"]] for r in part], dtype=np.int32))
            np.save(tmp / split / "sha256.npy", np.array([r["sha256"] for r in part], dtype="<U64"))
            np.save(tmp / split / "paths.npy", np.array([r["path"] for r in part], dtype=str))
            np.save(tmp / split / "location.npy", location)
            index["splits"][split] = {"count": len(part), "shards": names}
            _logger.info("preprocess: %s %d images in %d shard(s)", split, len(part), len(names))
        write_json(tmp / INDEX, index)
        known.clear()  # release the previous cache's memory maps before it is replaced
        previous.splits.clear()
    keep(out_dir)  # the next run's previous cache, whatever DVC does to out_dir (see io.keep)
    if summary_path is not None:
        write_json(summary_path, {**counts, "images": {s: v["count"]
                                                       for s, v in index["splits"].items()}})
    _logger.info("preprocess: %d image(s) decoded, %d copied from the previous cache, %d kept "
                 "in its shards", counts["decoded"], counts["copied"], counts["kept"])
    return index
