"""ingest on real folder trees: every layout, what is copied, what is ignored, and the errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from alexnet.errors import DataError
from alexnet.fingerprint import STAMP
from alexnet.ingest import MANIFEST_COLUMNS, ingest
from alexnet.io import OUTPUT_MARKER, read_csv
from alexnet.packs import INDEX, PACKS, members, read_index
from alexnet.params import IngestParams
from tests.unit.corpus import image_bytes, raw_members, tree_digest, write_tree

JPG = image_bytes("JPEG", seed=1)
PNG = image_bytes("PNG", seed=2)


def _jpgs(prefix: str, n: int, seed: int) -> dict[str, bytes]:
    return {f"{prefix}.{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=seed + i)
            for i in range(n)}


def _ingest(tmp_path: Path, source: Path, layout: str = "auto"):
    out = tmp_path / "out"
    summary = ingest(source, out / "raw", out / "manifest.csv", out / "reports" / "ingest.json",
                     IngestParams(source=str(source), layout=layout))
    return summary, read_csv(out / "manifest.csv"), out


def _labels(rows) -> dict[str, tuple[str, str]]:
    return {r["path"]: (r["label"], r["split_hint"]) for r in rows}


def test_class_folders_under_single_child_nesting(tmp_path):
    # Kaggle "cat-and-dog": training_set/training_set/cats/cat.1.jpg
    files = {f"training_set/training_set/cats/{k}": v for k, v in _jpgs("cat", 3, 0).items()}
    files |= {f"training_set/training_set/dogs/{k}": v for k, v in _jpgs("dog", 2, 10).items()}
    source = write_tree(tmp_path / "src", files)
    summary, rows, _ = _ingest(tmp_path, source)
    assert summary["layout"] == "class_folders"
    assert summary["classes"] == ["cats", "dogs"]
    assert _labels(rows)["training_set/training_set/cats/cat.1.jpg"] == ("cats", "")
    assert summary["per_class"] == {"cats": 3, "dogs": 2}
    assert summary["per_split_hint"] == {"": 5}


def test_petimages_with_system_files_and_non_images(tmp_path):
    files = {"PetImages/Cat/1.jpg": JPG, "PetImages/Dog/1.jpg": PNG,  # a PNG named .jpg
             "PetImages/Cat/Thumbs.db": b"\x00" * 64, "PetImages/Dog/Thumbs.db": b"\x00" * 64,
             "PetImages/.DS_Store": b"\x00\x00\x00\x01Bud1", "PetImages/Cat/._1.jpg": b"\x00\x05",
             "PetImages/Cat/desktop.ini": b"[.ShellClassInfo]", "PetImages/Dog/.hidden.jpg": JPG,
             "PetImages/Cat/README.txt": b"cats!", "PetImages/Dog/no_extension": JPG,
             "PetImages/Dog/empty.jpg": b"", "readme.md": b"# PetImages"}
    source = write_tree(tmp_path / "src", files)
    summary, rows, out = _ingest(tmp_path, source)
    assert summary["layout"] == "class_folders"
    assert summary["classes"] == ["Cat", "Dog"]
    assert sorted(r["path"] for r in rows) == [
        "PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg", "PetImages/Dog/empty.jpg",
        "PetImages/Dog/no_extension"]  # an image by content; an empty .jpg is validate's to judge
    assert summary["files_seen"] == len(files)
    assert summary["ignored"] == {"not an image": 2, "system file": 6}
    assert not (out / "raw" / "PetImages" / "Cat" / "Thumbs.db").exists()
    assert not (out / "raw" / "PetImages" / ".DS_Store").exists()


def test_presplit_keeps_given_test_images_in_test(tmp_path):
    files = {}
    for split, nested in (("training_set", "training_set"), ("test_set", "test_set")):
        for cls, seed in (("cats", 0), ("dogs", 50)):
            files |= {f"{split}/{nested}/{cls}/{k}": v
                      for k, v in _jpgs(cls[:-1], 2, seed + len(split)).items()}
    source = write_tree(tmp_path / "src", files)
    summary, rows, _ = _ingest(tmp_path, source)
    assert summary["layout"] == "presplit"
    labels = _labels(rows)
    assert labels["training_set/training_set/cats/cat.0.jpg"] == ("cats", "train")
    assert labels["test_set/test_set/dogs/dog.1.jpg"] == ("dogs", "test")
    assert summary["per_split_hint"] == {"test": 4, "train": 4}


def test_presplit_train_test(tmp_path):
    files = {"train/a/x.png": PNG, "train/b/y.jpg": JPG,
             "test/a/z.jpg": image_bytes("JPEG", seed=3)}
    summary, rows, _ = _ingest(tmp_path, write_tree(tmp_path / "src", files))
    assert summary["layout"] == "presplit"
    assert _labels(rows) == {"train/a/x.png": ("a", "train"), "train/b/y.jpg": ("b", "train"),
                             "test/a/z.jpg": ("a", "test")}


def test_kaggle_flat_ignores_unlabelled_test1(tmp_path):
    files = {f"train/{k}": v for k, v in (_jpgs("cat", 3, 0) | _jpgs("dog", 3, 10)).items()}
    files |= {f"test1/{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=90 + i) for i in range(4)}
    files["sampleSubmission.csv"] = b"id,label\n1,0\n"
    summary, rows, out = _ingest(tmp_path, write_tree(tmp_path / "src", files))
    assert summary["layout"] == "kaggle_flat"
    assert summary["classes"] == ["cat", "dog"]
    assert _labels(rows)["train/dog.2.jpg"] == ("dog", "")
    assert summary["ignored"] == {"not an image": 1, "unlabelled": 4}
    assert not (out / "raw" / "test1").exists()


def test_manifest_format_and_hashes(tmp_path):
    files = {"a/2.jpg": JPG, "a/1.png": PNG, "b/x.JPG": image_bytes("JPEG", seed=5)}
    source = write_tree(tmp_path / "src", files)
    _, rows, out = _ingest(tmp_path, source)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [r["path"] for r in rows] == ["a/1.png", "a/2.jpg", "b/x.JPG"]
    for r in rows:
        content = files[r["path"]]
        assert int(r["bytes"]) == len(content)
        assert r["sha256"] == hashlib.sha256(content).hexdigest()
    report = json.loads((out / "reports" / "ingest.json").read_text())
    assert report["ingested"] == 3 and report["files_seen"] == 3


def test_source_untouched_and_raw_identical(tmp_path):
    files = {f"c{c}/{k}": v for c in range(2) for k, v in _jpgs("img", 3, 10 * c).items()}
    files["c0/Thumbs.db"] = b"junk"
    source = write_tree(tmp_path / "src", files)
    before = tree_digest(source)
    _, rows, out = _ingest(tmp_path, source)
    assert tree_digest(source) == before
    raw = tree_digest(out / "raw")
    assert raw.pop(OUTPUT_MARKER)  # the copy is marked as the pipeline's own output
    assert raw.pop(STAMP)  # ...with the fingerprint of what wrote it (alexnet.fingerprint)
    assert raw.pop(PACKS) and raw.pop(INDEX)
    packs = {r["pack"] for r in read_index(out / "raw").values()}
    assert raw == {p: p.removesuffix(".tar") for p in packs}  # named by their content
    images = {p: hashlib.sha256(data).hexdigest() for p, data in raw_members(out / "raw").items()}
    assert images == {r["path"]: r["sha256"] for r in rows}
    assert all(images[p] == before[p] for p in images)


def test_rerun_rebuilds_raw_dir(tmp_path):
    source = write_tree(tmp_path / "src", {"a/1.jpg": JPG, "b/1.jpg": PNG})
    _, _, out = _ingest(tmp_path, source)
    (source / "b" / "1.jpg").unlink()
    (source / "b" / "2.jpg").write_bytes(PNG)
    _, rows, _ = _ingest(tmp_path, source)
    packs = {r["pack"] for r in read_index(out / "raw").values()}  # only packs still used
    assert sorted(tree_digest(out / "raw")) == sorted([OUTPUT_MARKER, STAMP, PACKS, INDEX, *packs])
    assert [r["path"] for r in rows] == ["a/1.jpg", "b/2.jpg"]
    assert [m.read() for m in members(out / "raw", rows).values()] == [JPG, PNG]
    # No temp dirs left: only the kept twin of the last run (alexnet.io.keep).
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".raw.kept"]


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _ingest(tmp_path, tmp_path / "nope")


def test_source_is_a_file(tmp_path):
    (tmp_path / "file.jpg").write_bytes(JPG)
    with pytest.raises(DataError, match="not a directory"):
        _ingest(tmp_path, tmp_path / "file.jpg")


def test_unrecognised_layout_says_what_was_looked_for(tmp_path):
    # Loose images with no label in a folder or a name: there is nothing to learn from.
    source = write_tree(tmp_path / "src", {"1.jpg": JPG, "2.png": PNG, "notes/readme.txt": b"x"})
    with pytest.raises(DataError,
                       match="src: cannot recognise the layout.*folder of images per class"):
        _ingest(tmp_path, source)


def test_forced_layout_that_does_not_match(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    with pytest.raises(DataError, match="presplit.*train/"):
        _ingest(tmp_path, source, layout="presplit")


def test_no_labelled_images(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/a.txt": b"x", "dogs/Thumbs.db": b"x",
                                           "dogs/._1.jpg": b"\x00\x05", ".git/x.png": PNG})
    with pytest.raises(DataError, match="src: no labelled images found"):
        _ingest(tmp_path, source)


def test_single_class_folder_is_not_mistaken_for_a_wrapper(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "cats/2.jpg": PNG})
    summary, rows, _ = _ingest(tmp_path, source)
    assert summary["layout"] == "class_folders" and summary["classes"] == ["cats"]


def test_kaggle_flat_nested_train_folder(tmp_path):
    files = {f"train/train/{k}": v for k, v in (_jpgs("cat", 2, 0) | _jpgs("dog", 2, 5)).items()}
    summary, rows, _ = _ingest(tmp_path, write_tree(tmp_path / "src", files))
    assert summary["layout"] == "kaggle_flat"
    assert _labels(rows)["train/train/cat.1.jpg"] == ("cat", "")


@pytest.mark.parametrize("layout, files", [
    ("class_folders", {"a/1.jpg": JPG, "b/1.jpg": PNG}),
    ("presplit", {"train/a/1.jpg": JPG, "test/a/1.jpg": PNG}),
    ("kaggle_flat", {"train/a.1.jpg": JPG, "train/b.1.jpg": PNG}),
])
def test_forced_layout_matches_auto(tmp_path, layout, files):
    source = write_tree(tmp_path / "src", files)
    auto, rows_auto, _ = _ingest(tmp_path / "auto", source)
    forced, rows_forced, _ = _ingest(tmp_path / "forced", source, layout=layout)
    assert auto["layout"] == forced["layout"] == layout
    assert rows_auto == rows_forced


def test_raw_dir_inside_source_is_refused(tmp_path):
    source = write_tree(tmp_path / "src", {"a/1.jpg": JPG})
    with pytest.raises(DataError, match="inside"):
        ingest(source, source / "raw", tmp_path / "m.csv", tmp_path / "s.json", IngestParams())


def test_broken_symlink_is_counted_not_fatal(tmp_path):
    source = write_tree(tmp_path / "src", {"a/1.jpg": JPG, "b/1.jpg": PNG})
    (source / "a" / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    summary, rows, _ = _ingest(tmp_path, source)
    assert summary["ignored"] == {"not a regular file": 1} and len(rows) == 2


def test_empty_class_folders_are_named_in_the_summary(tmp_path):
    """A class folder with no image used to vanish without a word (the user counts 3 classes,
    the model has 2): the summary lists each one, relative to the source."""
    files = {f"training_set/training_set/cats/{k}": v for k, v in _jpgs("cat", 3, 0).items()}
    files |= {f"training_set/training_set/dogs/{k}": v for k, v in _jpgs("dog", 2, 10).items()}
    files |= {"training_set/training_set/fish/notes.txt": b"no fish yet"}
    source = write_tree(tmp_path / "src", files)
    (source / "training_set/training_set/birds").mkdir()
    summary, _, out = _ingest(tmp_path, source)
    assert summary["classes"] == ["cats", "dogs"]
    assert summary["empty_class_folders"] == ["training_set/training_set/birds",
                                              "training_set/training_set/fish"]
    assert json.loads((out / "reports" / "ingest.json").read_text()) == summary
    full, _, _ = _ingest(tmp_path / "again", write_tree(tmp_path / "src2", {
        f"a/{k}": v for k, v in _jpgs("a", 2, 0).items()} | {
        f"b/{k}": v for k, v in _jpgs("b", 2, 5).items()}))
    assert full["empty_class_folders"] == []
