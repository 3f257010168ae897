"""A rerun of ingest reads only new or changed files: unchanged images stay in the previous run's
packs, which are hard links to the old ones (alexnet.packs)."""

import os
import shutil

from PIL import Image

from alexnet.ingest import ingest
from alexnet.io import read_csv
from alexnet.packs import PACKS, members, read_index
from alexnet.params import IngestParams

from tests.unit.corpus import raw_members


def image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def six_images(src):
    """Three images in each of two class folders, all different."""
    for i in range(3):
        image(src / "cats" / f"{i}.jpg", (50 + i, 0, 0))
        image(src / "dogs" / f"{i}.jpg", (0, 50 + i, 0))


def first_run(tmp_path, manifest="manifest.csv"):
    """Six images ingested once into tmp_path/data/raw: (src, raw, manifest, the rest of
    ingest's arguments, to run it again)."""
    src, raw, manifest = tmp_path / "src", tmp_path / "data/raw", tmp_path / manifest
    six_images(src)
    args = (raw, manifest, tmp_path / "ingest.json", IngestParams())
    ingest(src, *args)
    return src, raw, manifest, args


def manifest_rows(manifest):
    return {r["path"]: r for r in read_csv(manifest)}


def images(raw, manifest):
    """{path: bytes} of every image the manifest lists, read from raw's packs and checked
    against its sha256."""
    return {path: m.read() for path, m in members(raw, read_csv(manifest)).items()}


def source_images(src):
    return {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*.jpg")}


def packs(raw):
    return sorted(p.name for p in raw.glob("*.tar"))


def test_unchanged_images_stay_in_their_pack_new_and_changed_ones_go_to_a_new_one(tmp_path):
    src, raw, manifest, args = first_run(tmp_path)
    [first] = packs(raw)
    inode, before = (raw / first).stat().st_ino, read_index(raw)

    image(src / "cats/new.jpg", (99, 99, 0))
    image(src / "dogs/1.jpg", (0, 0, 200))  # changed in place: new bytes, new mtime
    os.utime(src / "dogs/1.jpg", ns=(0, int(before["dogs/1.jpg"]["mtime_ns"]) + 10**9))
    ingest(src, *args)

    assert (raw / first).stat().st_ino == inode  # linked, not written again
    [second] = set(packs(raw)) - {first}
    index = read_index(raw)
    assert {p for p, r in index.items() if r["pack"] == second} == {"cats/new.jpg", "dogs/1.jpg"}
    assert index["cats/0.jpg"] == before["cats/0.jpg"]  # same pack, same offset: not read
    assert images(raw, manifest) == source_images(src)
    assert manifest_rows(manifest)["cats/new.jpg"]["label"] == "cats"

    # The manifest lists the source, not this history: from scratch, ingest writes the same one
    # (so rebuilding data/raw, as a fresh clone's `dvc repro` does, reruns nothing after it).
    ingest(src, tmp_path / "scratch/raw", tmp_path / "scratch/manifest.csv",
           tmp_path / "scratch/ingest.json", IngestParams())
    assert read_csv(tmp_path / "scratch/manifest.csv") == read_csv(manifest)
    assert packs(tmp_path / "scratch/raw") != packs(raw)  # one pack, not two
    assert not list((tmp_path / "data").glob(".raw.tmp-*"))


def test_a_pack_mostly_of_images_gone_is_written_again_without_them(tmp_path):
    src, raw, manifest, args = first_run(tmp_path)
    [first] = packs(raw)
    for gone in ("cats/1.jpg", "cats/2.jpg", "dogs/1.jpg", "dogs/2.jpg"):
        (src / gone).unlink()
    ingest(src, *args)

    [second] = packs(raw)
    assert second != first  # two of its six images left: not kept with four dead ones
    assert raw_members(raw) == images(raw, manifest) == source_images(src)
    assert [r["pack"] for r in read_csv(raw / PACKS)] == [second]


def test_packs_dvc_wrote_again_are_checked_once_and_kept(tmp_path):
    """`dvc pull` and `dvc checkout` write a pack as a new file (new inode, new mtime). Its
    images are still reused: the pack is hashed, found intact (its name is its sha256), and
    given back the mtime packs.csv records, so the next run trusts it without reading it."""
    src, raw, manifest, args = first_run(tmp_path)
    [pack] = packs(raw)
    recorded = int(read_csv(raw / PACKS)[0]["mtime_ns"])
    tmp = raw / (pack + ".tmp")  # what a checkout does to the file
    shutil.copyfile(raw / pack, tmp)
    os.replace(tmp, raw / pack)
    os.utime(raw / pack, ns=(0, recorded + 10**9))
    inode = (raw / pack).stat().st_ino

    image(src / "dogs/1.jpg", (0, 0, 200))  # changed in place: new bytes, new mtime
    os.utime(src / "dogs/1.jpg", ns=(0, (src / "dogs/1.jpg").stat().st_mtime_ns + 10**9))
    ingest(src, *args)

    assert pack in packs(raw) and (raw / pack).stat().st_ino == inode  # kept, not rewritten
    assert (raw / pack).stat().st_mtime_ns == recorded  # checked once: trusted from now on
    assert images(raw, manifest) == source_images(src)


def test_packs_are_linked_from_the_kept_twin_after_dvc_removed_the_output(tmp_path):
    """`dvc repro` deletes data/raw and the manifest before ingest runs (not `persist` outs);
    the last run's packs survive as hard links in data/.raw.kept, with the index that says which
    source files they hold (size, mtime, sha256), and are linked again."""
    src, raw, manifest, args = first_run(tmp_path, "data/manifest.csv")
    [pack] = packs(raw)
    inode = (raw / pack).stat().st_ino
    shutil.rmtree(raw)  # what `dvc repro` does to a stage's outs before running it
    manifest.unlink()

    image(src / "cats/new.jpg", (99, 99, 0))
    ingest(src, *args)

    assert (raw / pack).stat().st_ino == inode  # linked from the twin, not written again
    assert images(raw, manifest) == source_images(src)
    kept = tmp_path / "data/.raw.kept"
    assert {p.name: p.stat().st_ino for p in kept.glob("*.tar")} == \
        {p.name: p.stat().st_ino for p in raw.glob("*.tar")}
    assert read_index(kept) == read_index(raw)  # what the next run reuses by


def test_a_pack_edited_in_place_is_not_reused(tmp_path):
    """A pack in data/raw written into (same size), then `dvc repro` deleting data/raw: the twin
    holds the same edited inode. validate and preprocess depend on the manifest, not on
    data/raw, so ingest must not keep the edited bytes under the old sha256s: a pack whose mtime
    is not the one ingest recorded is hashed, and read from the source again if it changed."""
    src, raw, manifest, args = first_run(tmp_path, "data/manifest.csv")
    before = read_csv(manifest)
    row = read_index(raw)["cats/0.jpg"]
    [pack] = packs(raw)
    with open(raw / pack, "r+b") as fh:  # same size, other bytes
        fh.seek(int(row["offset"]) + int(row["bytes"]) - 3)
        fh.write(b"\x00\x00\x00")
    shutil.rmtree(raw)  # what `dvc repro` does to a stage's outs before running it

    ingest(src, *args)

    assert images(raw, manifest) == source_images(src)
    assert read_csv(manifest) == before  # the same images, the same pack: written again


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
    assert images(raw, manifest) == source_images(src)
    assert str(kept) in caplog.text
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_a_touched_or_copied_source_gives_the_same_manifest_and_packs(tmp_path):
    """The manifest lists the images alone (mtimes are data/raw's index's), so the stages after
    ingest do not rerun for a `touch` or for a copy of the source with other mtimes (a fresh
    clone's): touched files are read and hashed again, and stay in the pack they were in."""
    src, raw, manifest, args = first_run(tmp_path)
    before, [pack] = manifest.read_bytes(), packs(raw)
    for p in src.rglob("*.jpg"):
        os.utime(p, ns=(0, p.stat().st_mtime_ns + 10**9))
    ingest(src, *args)
    assert manifest.read_bytes() == before
    assert packs(raw) == [pack]  # not written again: the same bytes
    assert {r["mtime_ns"] for r in read_index(raw).values()} == \
        {str(p.stat().st_mtime_ns) for p in src.rglob("*.jpg")}  # the next run trusts them

    copy = tmp_path / "copy"
    shutil.copytree(src, copy, copy_function=shutil.copyfile)  # new mtimes
    ingest(copy, tmp_path / "c/raw", tmp_path / "c/manifest.csv", tmp_path / "c/ingest.json",
           IngestParams())
    assert (tmp_path / "c/manifest.csv").read_bytes() == before
