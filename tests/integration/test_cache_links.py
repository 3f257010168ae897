"""DVC's cache is linked, not copied (`cache.type = hardlink,symlink` in .dvc/config): every
cached output of the workspace is a read-only link into .dvc/cache, so each byte is on disk once,
and the pipeline never writes through such a link. After `dvc repro` and two reruns with new
images, every cache object still hashes to its name (nothing wrote into one), the shards kept
from an earlier run are still the very files of the cache, and the outputs are links; what
the stages keep for their next run (data/.raw.kept, data/.cache.kept) is links to the same
files, so a rerun's reuse costs no disk and writes into none of them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from alexnet.sample_data import make_image
from tests.conftest import make_workspace, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"train.workers": 1, "train.epochs": 1}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cache_objects(ws: Path) -> dict[str, Path]:
    """{md5: path} of every object in DVC 3's cache (files/md5/ab/cdef..., directories .dir)."""
    root = ws / ".dvc/cache/files/md5"
    return {p.parent.name + p.name.removesuffix(".dir"): p for p in root.rglob("*") if p.is_file()}


def corrupted(ws: Path) -> list[str]:
    """Cache objects whose content no longer hashes to their name."""
    return sorted(name for name, path in cache_objects(ws).items() if md5(path) != name)


def cached_outputs(ws: Path) -> list[Path]:
    """Every file of every output DVC caches (dvc.yaml's outs, metrics and plots)."""
    files = []
    for stage in yaml.safe_load((ws / "dvc.yaml").read_text())["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if opts.get("cache", True):
                p = ws / path
                files += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    return files


def not_linked(ws: Path) -> list[str]:
    """Cached outputs that are not links into .dvc/cache (hard link to an object, or symlink)."""
    inodes = {p.stat().st_ino for p in cache_objects(ws).values()}
    return [str(f.relative_to(ws)) for f in cached_outputs(ws)
            if f.stat().st_ino not in inodes or f.stat().st_mode & 0o222]


def twins_not_in_cache(ws: Path) -> list[str]:
    """Packs and shards of the kept twins (data/.raw.kept, data/.cache.kept: what the next run
    reuses) that are not DVC cache objects, i.e. cost disk of their own. (A small column file
    rewritten with the content of an older cache object is DVC's object in the workspace and the
    stage's copy in the twin: a few bytes, left out here.)"""
    inodes = {p.stat().st_ino for p in cache_objects(ws).values()}
    kept = [*(ws / "data/.raw.kept").glob("*.tar"), *(ws / "data/.cache.kept").rglob("images-*.npy")]
    assert kept
    return [str(f.relative_to(ws)) for f in kept if f.stat().st_ino not in inodes]


def add_images(ws: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        make_image("disks", rng).save(ws / f"data/sample/disks/new{seed}.{i}.jpg", quality=90)


def shard_inodes(ws: Path) -> dict[str, int]:
    shards = (ws / "data/cache").rglob("images-*.npy")
    return {str(p.relative_to(ws)): p.stat().st_ino for p in shards}


def test_repro_with_new_images_never_writes_through_a_cache_link(tmp_path):
    ws = make_workspace(tmp_path / "ws", overrides=FAST)
    assert run(["dvc", "config", "cache.type"], ws).stdout.strip() == "['hardlink', 'symlink']"
    run(["dvc", "repro"], ws)
    assert corrupted(ws) == [] and not_linked(ws) == [] and twins_not_in_cache(ws) == []
    before = {name: (p.stat().st_ino, md5(p)) for name, p in cache_objects(ws).items()}

    for seed in (11, 12):  # two reruns, each with new images: every stage runs again
        shards = shard_inodes(ws)
        add_images(ws, 6, seed)
        out = run(["dvc", "repro"], ws)
        assert re.search(r"Running stage 'preprocess'", out.stdout)
        assert re.search(r"Running stage 'train'", out.stdout)
        assert corrupted(ws) == []  # no cache object changed content
        assert not_linked(ws) == []  # every cached output is a read-only link into the cache
        assert twins_not_in_cache(ws) == []  # what the next run reuses costs no disk
        # The shards kept from the last run are the same files (the cache's objects), the new
        # images went into new shards.
        now = shard_inodes(ws)
        assert {k: now.get(k) for k in shards} == shards and len(now) > len(shards)
        before.update({name: (p.stat().st_ino, md5(p)) for name, p in cache_objects(ws).items()})

    # Every object of the first run is still in the cache, unchanged.
    now = cache_objects(ws)
    assert all(name in now and md5(now[name]) == digest for name, (_, digest) in before.items())
