"""data/raw's packs: tar files named by their sha256, read back image by image and checked against
the listing's sha256; an index or packs listing cannot point a read outside the raw folder."""

import hashlib
import os
import shutil
import tarfile

import pytest

from alexnet.errors import DataError
from alexnet.ingest import ingest
from alexnet.io import file_sha256, read_csv
from alexnet.packs import Member, PackInfo, PackWriter, members, pack_intact
from alexnet.params import IngestParams

from tests.unit.corpus import image_bytes, write_tree

IMAGES = {f"{label}/{i}.jpg": image_bytes("JPEG", size=(40, 30), seed=10 * k + i)
          for k, label in enumerate(("cats", "dogs")) for i in range(3)}


def write(directory, images, limit=1 << 20):
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in images.items()]
    with PackWriter(directory, limit=limit) as writer:
        for row, data in zip(rows, images.values()):
            writer.add(row, data, mtime_ns=1_700_000_000 * 10**9)
    return rows, writer.written


def test_a_pack_is_a_tar_named_by_its_sha256_and_each_image_reads_back(tmp_path):
    rows, written = write(tmp_path, IMAGES)
    [name] = written
    assert file_sha256(tmp_path / name) + ".tar" == name
    with tarfile.open(tmp_path / name) as tar:  # what `tar -xf` sees
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == IMAGES
    assert {r["path"]: Member.of(tmp_path, r).read() for r in rows} == IMAGES
    assert written[name].image_bytes == sum(map(len, IMAGES.values()))
    assert not list(tmp_path.glob(".pack-*"))  # the temporary file was renamed


def test_packs_are_closed_at_the_limit(tmp_path):
    rows, written = write(tmp_path, IMAGES, limit=2000)  # a member or two per pack
    assert len(written) > 2 and {r["pack"] for r in rows} == set(written)
    assert {r["path"]: Member.of(tmp_path, r).read() for r in rows} == IMAGES


def test_the_same_images_give_the_same_packs(tmp_path):
    """Same source ingested from scratch, same packs (DVC stores them once) and same manifest,
    wherever it is ingested. (An incremental run packs by history; its manifest is still the
    same: test_ingest_incremental.py.)"""
    source = write_tree(tmp_path / "src", IMAGES)
    for out in ("a", "b"):
        ingest(source, tmp_path / out / "raw", tmp_path / out / "manifest.csv",
               tmp_path / out / "ingest.json", IngestParams())
    assert read_csv(tmp_path / "a/manifest.csv") == read_csv(tmp_path / "b/manifest.csv")
    assert sorted(p.name for p in (tmp_path / "a/raw").glob("*.tar")) == \
        sorted(p.name for p in (tmp_path / "b/raw").glob("*.tar"))


def test_an_image_whose_bytes_changed_is_refused_by_name(tmp_path):
    rows, _ = write(tmp_path, IMAGES)
    row = rows[1]
    with open(tmp_path / row["pack"], "r+b") as fh:
        fh.seek(int(row["offset"]))
        fh.write(b"\x00")
    with pytest.raises(DataError, match="cats/1.jpg.*not the ones ingest recorded"):
        Member.of(tmp_path, row).read()
    with pytest.raises(DataError, match="cats/1.jpg.*cannot read"):
        Member.of(tmp_path / "elsewhere", row).read()
    with pytest.raises(DataError, match="not the ones"):  # cut short
        Member.of(tmp_path, {**row, "offset": os.path.getsize(tmp_path / row["pack"]) - 10}).read()


HOSTILE_PACKS = ["../secret.tar", "/etc/passwd", "a" * 64 + ".tar/../../x",
                 "../" + "a" * 64 + ".tar", "", None]


@pytest.mark.parametrize("pack", HOSTILE_PACKS)
def test_an_index_cannot_name_a_file_outside_the_packs(tmp_path, pack):
    (tmp_path / "secret.tar").write_bytes(b"secret")
    row = {"path": "cats/1.jpg", "pack": pack, "offset": "0", "bytes": "6",
           "sha256": hashlib.sha256(b"secret").hexdigest()}
    with pytest.raises(DataError, match="names no pack"):
        Member.of(tmp_path / "raw", row)


def test_ingest_reuses_nothing_a_hostile_listing_names(tmp_path):
    """A previous index and packs.csv naming files outside data/raw (an edited or foreign
    data/raw): ingest reads the source again, and never touches what they name."""
    source = write_tree(tmp_path / "src", IMAGES)
    out = tmp_path / "data"
    args = (out / "raw", out / "manifest.csv", out / "ingest.json", IngestParams())
    ingest(source, *args)
    [pack] = (out / "raw").glob("*.tar")
    outside = tmp_path / ("a" * 64 + ".tar")  # what packs.csv records: same size and mtime
    shutil.copy2(pack, outside)
    before = outside.read_bytes()
    for name in ("index.csv", "packs.csv"):
        listing = out / "raw" / name
        text = listing.read_text()
        for pack in {r["pack"] for r in read_csv(listing)}:
            text = text.replace(pack, "../../" + outside.name)
        listing.write_text(text)
    ingest(source, *args)
    assert {p: m.read() for p, m in members(out / "raw", read_csv(out / "manifest.csv")).items()} \
        == IMAGES
    assert outside.read_bytes() == before and outside.stat().st_nlink == 1  # never linked
    assert sorted(tmp_path.glob("*.tar")) == [outside]  # nothing linked beside it either


def test_a_pack_is_trusted_by_its_mtime_or_else_hashed_once(tmp_path):
    _, written = write(tmp_path, IMAGES)
    [(name, info)] = written.items()
    path = tmp_path / name
    assert pack_intact(path, info)
    assert not pack_intact(path, None)  # not listed in packs.csv
    assert not pack_intact(path, PackInfo(info.bytes + 1, info.mtime_ns, info.image_bytes))
    os.utime(path, ns=(0, info.mtime_ns + 10**9))  # written again by `dvc checkout`
    assert pack_intact(path, info) and path.stat().st_mtime_ns == info.mtime_ns  # given back
    with open(path, "r+b") as fh:  # edited in place: same size, new mtime
        fh.seek(-5000, os.SEEK_END)
        fh.write(b"\x01")
    assert not pack_intact(path, info)
