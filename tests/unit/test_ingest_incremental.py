"""A rerun of ingest copies only new or changed files; the rest are hard links to the old copy."""

import os
import shutil

from PIL import Image

from alexnet.ingest import ingest
from alexnet.io import read_csv
from alexnet.params import IngestParams


def image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def six_images(src):
    """Three images in each of two class folders, all different."""
    for i in range(3):
        image(src / "cats" / f"{i}.jpg", (50 + i, 0, 0))
        image(src / "dogs" / f"{i}.jpg", (0, 50 + i, 0))


def test_unchanged_files_are_linked_new_and_changed_ones_copied(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "data/raw"
    six_images(src)
    args = (raw, tmp_path / "manifest.csv", tmp_path / "ingest.json", IngestParams())
    ingest(src, *args)
    inode = {p: (raw / p).stat().st_ino for p in ("cats/0.jpg", "dogs/1.jpg")}

    image(src / "cats/new.jpg", (99, 99, 0))
    image(src / "dogs/1.jpg", (0, 0, 200))  # changed in place: new bytes, new mtime
    os.utime(src / "dogs/1.jpg", ns=(0, (raw / "dogs/1.jpg").stat().st_mtime_ns + 10**9))
    ingest(src, *args)

    assert (raw / "cats/0.jpg").stat().st_ino == inode["cats/0.jpg"]  # linked, not copied
    assert (raw / "dogs/1.jpg").stat().st_ino != inode["dogs/1.jpg"]  # copied again
    assert (raw / "dogs/1.jpg").read_bytes() == (src / "dogs/1.jpg").read_bytes()
    rows = {r["path"]: r for r in read_csv(tmp_path / "manifest.csv")}
    assert len(rows) == 7 and rows["cats/new.jpg"]["label"] == "cats"
    assert not list((tmp_path / "data").glob(".raw.tmp-*"))


def test_unchanged_files_are_recognised_after_dvc_unprotected_the_old_copies(tmp_path):
    """With DVC's linked cache, `dvc repro` first replaces each file of a persist output by a
    plain copy (`unprotect`: new inode, new mtime; `dvc pull` writes such copies too). Unchanged
    source files must still be linked, not copied again: ingest compares the source with what the
    manifest recorded, and a copy with a new mtime with the manifest's sha256."""
    src, raw = tmp_path / "src", tmp_path / "data/raw"
    six_images(src)
    args = (raw, tmp_path / "manifest.csv", tmp_path / "ingest.json", IngestParams())
    ingest(src, *args)
    for path in [p for p in raw.rglob("*.jpg")]:  # what DVC's unprotect does to each file
        tmp = path.with_name(path.name + ".tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, path)
        os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    inode = {p: (raw / p).stat().st_ino for p in ("cats/0.jpg", "dogs/1.jpg")}

    image(src / "dogs/1.jpg", (0, 0, 200))  # changed in place: new bytes, new mtime
    os.utime(src / "dogs/1.jpg", ns=(0, (src / "dogs/1.jpg").stat().st_mtime_ns + 10**9))
    ingest(src, *args)

    assert (raw / "cats/0.jpg").stat().st_ino == inode["cats/0.jpg"]  # linked, not copied
    assert (raw / "dogs/1.jpg").stat().st_ino != inode["dogs/1.jpg"]  # copied again
    assert (raw / "dogs/1.jpg").read_bytes() == (src / "dogs/1.jpg").read_bytes()
    # Checked once: each copy now has the mtime the manifest records, so the next run trusts it
    # without reading it again.
    for row in read_csv(tmp_path / "manifest.csv"):
        assert (raw / row["path"]).stat().st_mtime_ns == int(row["mtime_ns"]), row["path"]


def test_unchanged_files_are_linked_from_the_kept_twin_after_dvc_removed_the_output(tmp_path):
    """`dvc repro` deletes data/raw before ingest runs (not a `persist` out); the last run's files
    survive as hard links in data/.raw.kept, and are linked again. data/manifest.csv is a persist
    out, which DVC leaves, but it is removed here too: the twin's own copy of the manifest, written
    with its files, is what says which of them are unchanged."""
    src, raw = tmp_path / "src", tmp_path / "data/raw"
    six_images(src)
    manifest = tmp_path / "data/manifest.csv"
    args = (raw, manifest, tmp_path / "ingest.json", IngestParams())
    ingest(src, *args)
    inode = (raw / "cats/0.jpg").stat().st_ino
    shutil.rmtree(raw)  # what `dvc repro` does to a stage's outs before running it
    manifest.unlink()

    image(src / "cats/new.jpg", (99, 99, 0))
    ingest(src, *args)

    assert (raw / "cats/0.jpg").stat().st_ino == inode  # linked from the twin, not copied
    assert len(read_csv(manifest)) == 7
    kept = tmp_path / "data/.raw.kept"
    assert (kept / "cats/new.jpg").stat().st_ino == (raw / "cats/new.jpg").stat().st_ino
    assert read_csv(kept / ".manifest.csv") == read_csv(manifest)


def test_a_copy_edited_in_place_is_copied_again_not_linked(tmp_path):
    """A copy in data/raw written into (same size, so the manifest's size check passes), then
    `dvc repro` deleting data/raw: the twin holds the same edited inode. validate and preprocess
    depend on the manifest, not on data/raw, so ingest must not link the edited bytes back under
    the old sha256: a copy whose mtime is not the one ingest gave it is read and checked."""
    src, raw = tmp_path / "src", tmp_path / "data/raw"
    six_images(src)
    manifest = tmp_path / "data/manifest.csv"
    args = (raw, manifest, tmp_path / "ingest.json", IngestParams())
    ingest(src, *args)
    before = read_csv(manifest)
    edited = raw / "cats/0.jpg"
    with open(edited, "r+b") as fh:  # same size, other bytes
        fh.seek(-3, os.SEEK_END)
        fh.write(b"\x00\x00\x00")
    assert edited.read_bytes() != (src / "cats/0.jpg").read_bytes()
    shutil.rmtree(raw)  # what `dvc repro` does to a stage's outs before running it

    ingest(src, *args)

    assert (raw / "cats/0.jpg").read_bytes() == (src / "cats/0.jpg").read_bytes()
    assert read_csv(manifest) == before


def test_a_foreign_folder_at_the_twin_path_costs_reuse_not_the_run(tmp_path, caplog):
    """The twin is written after data/raw and the manifest: a folder not written by alexnet at
    data/.raw.kept makes ingest warn (naming it) and succeed, and the folder is left as it was."""
    src, raw = tmp_path / "src", tmp_path / "data/raw"
    image(src / "cats/0.jpg", (50, 0, 0))
    image(src / "dogs/0.jpg", (0, 50, 0))
    kept = tmp_path / "data/.raw.kept"
    kept.mkdir(parents=True)
    (kept / "notes.txt").write_text("the user's")
    manifest = tmp_path / "data/manifest.csv"
    with caplog.at_level("WARNING"):
        ingest(src, raw, manifest, tmp_path / "ingest.json", IngestParams())
    assert len(read_csv(manifest)) == 2 and (raw / "cats/0.jpg").is_file()
    assert str(kept) in caplog.text
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
