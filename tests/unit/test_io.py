"""Outputs are written atomically, and never over a directory the pipeline did not write."""

import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from alexnet.errors import EXIT_CONFIG, OutputError
from alexnet.io import OUTPUT_MARKER, atomic_dir

from tests.unit.corpus import pack_images


def test_atomic_dir_replaces_its_own_output(tmp_path):
    out = tmp_path / "cache"
    with atomic_dir(out) as tmp:
        (tmp / "a.npy").write_text("1")
    with atomic_dir(out) as tmp:
        (tmp / "b.npy").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.npy"]


def test_failed_block_leaves_the_old_output(tmp_path):
    out = tmp_path / "cache"
    with atomic_dir(out) as tmp:
        (tmp / "a.npy").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.npy").write_text("x")
        raise RuntimeError("killed")
    assert (out / "a.npy").read_text() == "1" and not (out / "half.npy").exists()
    assert not list(tmp_path.glob(".cache.tmp-*"))


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match="not written by alexnet"), atomic_dir(photos) as tmp:
        (tmp / "x").write_text("x")
    assert (photos / "cat.jpg").read_bytes() == b"precious"
    with atomic_dir(tmp_path / "empty") as tmp:  # a missing or empty directory is fine
        pass


def test_cli_refuses_an_output_path_that_holds_user_files(tmp_path, monkeypatch):
    from PIL import Image

    from alexnet.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "dog.jpg").write_bytes(b"precious")
    jpeg = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 0, 0)).save(jpeg, "JPEG")
    [row] = pack_images(tmp_path / "raw", {"a/1.jpg": jpeg.getvalue()})
    (tmp_path / "splits.csv").write_text(f"path,label,sha256,split\na/1.jpg,a,{row['sha256']},"
                                         "train\n")
    (tmp_path / "params.yaml").write_text("preprocess: {image_size: 67}\n")
    monkeypatch.chdir(tmp_path)
    args = ["preprocess", "--raw", "raw", "--splits", "splits.csv", "--workers", "1", "--out"]
    assert main([*args, "photos"]) == EXIT_CONFIG
    assert sorted(p.name for p in photos.iterdir()) == ["dog.jpg"]
    assert main([*args, "cache"]) == 0  # the same command, with an output path of its own


def test_link_or_copy_links_and_never_writes_over_a_file(tmp_path):
    from alexnet.io import link_or_copy

    src = tmp_path / "a.npy"
    src.write_bytes(b"pixels")
    link_or_copy(src, tmp_path / "sub/b.npy")
    assert (tmp_path / "sub/b.npy").stat().st_ino == src.stat().st_ino
    other = tmp_path / "c.npy"
    other.write_bytes(b"other")
    with pytest.raises(FileExistsError):
        link_or_copy(other, tmp_path / "sub/b.npy")
    assert src.read_bytes() == b"pixels"


def test_link_or_copy_across_filesystems_copies_with_the_source_mtime(tmp_path):
    """Where a hard link is impossible (another filesystem), the copy keeps the source's mtime:
    ingest trusts a previous copy without reading it only while it has the mtime ingest gave it."""
    from alexnet.io import link_or_copy

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to copy across")
    src = tmp_path / "a.jpg"
    src.write_bytes(b"image")
    os.utime(src, ns=(10**18, 10**18 + 123))
    other = Path(tempfile.mkdtemp(dir=shm))
    try:
        link_or_copy(src, other / "sub/a.jpg")
        copied = (other / "sub/a.jpg").stat()
        assert copied.st_ino != src.stat().st_ino and copied.st_dev != src.stat().st_dev
        assert (other / "sub/a.jpg").read_bytes() == b"image"
        assert copied.st_mtime_ns == 10**18 + 123
    finally:
        shutil.rmtree(other)


# Writes every kind of atomic output, then prints the mode of each (run under a given umask).
_WRITE_OUTPUTS = """
import json, os, sys
from pathlib import Path
from alexnet.io import atomic_dir, atomic_open, atomic_path, write_csv, write_json
out = Path(sys.argv[1])
with atomic_path(out / "figure.png", suffix=".png") as tmp:
    with open(tmp, "wb") as fh:  # a writer that opens the temporary path, as savefig does
        fh.write(b"png")
with atomic_open(out / "log.txt") as fh:
    fh.write("text")
write_json(out / "metrics.json", {"a": 1})
write_csv(out / "rows.csv", ["a"], [{"a": 1}])
with atomic_dir(out / "candidate") as tmp:
    write_json(tmp / "model.json", {"classes": ["a", "b"]})
paths = ["figure.png", "log.txt", "metrics.json", "rows.csv", "candidate",
         "candidate/model.json"]
print(json.dumps({p: oct((out / p).stat().st_mode & 0o777) for p in paths}))
"""


@pytest.mark.parametrize("umask, file_mode, dir_mode",
                         [(0o022, "0o644", "0o755"), (0o027, "0o640", "0o750")],
                         ids=["umask-022", "umask-027"])
def test_atomic_outputs_get_the_usual_permissions(tmp_path, umask, file_mode, dir_mode):
    """mkstemp creates 0600 and mkdtemp 0700: a teammate or a serving process could not read
    models/candidate or the figures. Outputs get what a plain open()/mkdir() would give."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _WRITE_OUTPUTS, str(tmp_path)], text=True,
                          capture_output=True, preexec_fn=lambda: os.umask(umask), check=True)
    modes = json.loads(proc.stdout)
    assert modes == {"figure.png": file_mode, "log.txt": file_mode, "metrics.json": file_mode,
                     "rows.csv": file_mode, "candidate": dir_mode,
                     "candidate/model.json": file_mode}


def test_keep_links_the_output_and_a_new_output_leaves_the_kept_files_unchanged(tmp_path):
    """The kept twin is hard links (no disk), and replacing the output or the twin later
    writes into none of the kept files (they may be DVC's read-only cache objects)."""
    from alexnet.io import keep, kept_dir, previous_output

    out = tmp_path / "data/cache"
    with atomic_dir(out) as tmp:
        (tmp / "a").mkdir()
        (tmp / "a/x.npy").write_bytes(b"old x")
    kept = keep(out)
    assert kept == kept_dir(out) == tmp_path / "data/.cache.kept"
    assert (kept / "a/x.npy").stat().st_ino == (out / "a/x.npy").stat().st_ino
    os.chmod(kept / "a/x.npy", 0o444)  # as DVC protects its cache objects
    before = (kept / "a/x.npy").stat()

    shutil.rmtree(out)  # `dvc repro` removes the out before the stage runs
    assert previous_output(out) == kept
    with atomic_dir(out) as tmp:
        (tmp / "a").mkdir()
        (tmp / "a/y.npy").write_bytes(b"new y")
        os.link(kept / "a/x.npy", tmp / "a/x.npy")  # what preprocess does with a kept shard
    keep(out)
    after = (kept / "a/x.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (kept / "a/x.npy").read_bytes() == b"old x" and (kept / "a/y.npy").is_file()
    assert previous_output(out) == out


def test_keep_is_best_effort_and_never_touches_a_foreign_twin(tmp_path, caplog):
    """The stage's real outputs are written when keep runs: a twin it cannot write (a folder
    of someone else's at data/.cache.kept, no disk for the copy fallback) costs the next run
    some reuse, never this run. keep warns, naming the twin, and leaves the folder as it was."""
    from alexnet.io import keep

    out, kept = tmp_path / "data/cache", tmp_path / "data/.cache.kept"
    with atomic_dir(out) as tmp:
        (tmp / "x.npy").write_bytes(b"x")
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's")
    with caplog.at_level("WARNING", logger="alexnet.io"):
        assert keep(out) is None
    assert str(kept) in caplog.text and "not written by alexnet" in caplog.text
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]
    assert (kept / "mine.txt").read_text() == "the user's"


def test_temps_of_a_killed_run_with_this_pid_are_removed_but_live_ones_kept(tmp_path):
    """In a container `alexnet` often gets the same pid every run, so a killed run's temporary
    directory can carry this process's pid: it is not alive unless this process made it."""
    from alexnet.io import remove_orphaned_temps

    out = tmp_path / "data/cache"
    out.parent.mkdir(parents=True)
    stale = [out.with_name(f".cache.tmp-{os.getpid()}-abc123"),
             out.with_name(f".cache.tmp-old-{os.getpid()}")]
    for d in stale:
        d.mkdir()
        (d / "images-00000.npy").write_bytes(b"x" * 100)
    with atomic_dir(out) as tmp:
        assert not any(d.exists() for d in stale)  # removed before this run wrote its own
        remove_orphaned_temps(out)  # e.g. a second writer in this process: its temp stays
        assert tmp.is_dir()
        (tmp / "a").write_text("1")
    assert (out / "a").is_file()
