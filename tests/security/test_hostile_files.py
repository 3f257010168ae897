"""Hostile image folders: links out of the source, special files, odd and undecodable names,
oversized and non-image files. Each case is built in tmp_path; the outcome is asserted: skipped or
quarantined with a reason, nothing read outside the source, no code run, nothing deleted."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.cli import main as cli_main
from alexnet.errors import EXIT_CONFIG
from alexnet.images import load_rgb
from alexnet.ingest import IGNORED_SPECIAL, IGNORED_TOO_LARGE, ingest, read_if_image
from alexnet.fingerprint import STAMP
from alexnet.io import OUTPUT_MARKER, read_csv
from alexnet.packs import INDEX, PACKS, read_index
from alexnet.params import IngestParams, ValidateParams
from alexnet.validate import NOT_IMAGE, validate, validate_image
from tests.unit.corpus import image_bytes, raw_members, tree_digest, write_tree

JPG = image_bytes("JPEG", size=(40, 40), seed=1)
PNG = image_bytes("PNG", size=(40, 40), seed=2)
SECRET = b"TOP-SECRET: the database password is hunter2\n"


def _ingest(tmp_path: Path, source: Path, **params) -> tuple[dict, list[dict], Path]:
    out = tmp_path / "out"
    summary = ingest(source, out / "raw", out / "manifest.csv", out / "ingest.json",
                     IngestParams(source=str(source), **params))
    return summary, read_csv(out / "manifest.csv"), out


def _raw_bytes(raw: Path) -> list[bytes]:
    return [p.read_bytes() for p in raw.rglob("*") if p.is_file()]


@pytest.fixture
def alarm():
    """Fail instead of hanging: a blocked open() or an endless read raises after `seconds`."""
    def handler(signum, frame):
        raise TimeoutError("blocked on a special file")

    old = signal.signal(signal.SIGALRM, handler)
    yield lambda seconds: signal.alarm(seconds)
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# --- 1. file links are not followed out of the source --------------------------------------

def test_file_symlinks_are_skipped_not_copied(tmp_path):
    (tmp_path / "secret.txt").write_bytes(SECRET)
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    (source / "cats" / "leak.jpg").symlink_to("../../secret.txt")
    (source / "dogs" / "env.jpg").symlink_to("/proc/self/environ")
    (source / "dogs" / "alias.jpg").symlink_to("1.jpg")  # inside the source: still a link
    summary, rows, out = _ingest(tmp_path, source)
    assert [r["path"] for r in rows] == ["cats/1.jpg", "dogs/1.jpg"]
    assert summary["ignored"] == {IGNORED_SPECIAL: 3}
    assert not any(SECRET in b or b"PATH=" in b for b in _raw_bytes(out / "raw"))
    assert (tmp_path / "secret.txt").read_bytes() == SECRET


def test_read_opens_without_following_a_link_swapped_in(tmp_path):
    # What ingest does if a regular file is replaced by a link between its lstat and its open.
    (tmp_path / "secret.txt").write_bytes(SECRET)
    link = tmp_path / "swapped.jpg"
    link.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(OSError):
        read_if_image(link, by_extension=True)


def test_quarantine_does_not_echo_file_content(tmp_path):
    source = write_tree(tmp_path / "src", {
        **{f"cats/{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=i) for i in range(3)},
        **{f"dogs/{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=9 + i) for i in range(3)},
        "dogs/notes.jpg": SECRET, "dogs/page.jpg": b"<!DOCTYPE html><html>secret</html>",
        "dogs/blob.jpg": bytes(range(7, 70))})
    _, _, out = _ingest(tmp_path, source)
    validate(out / "raw", out / "manifest.csv", out / "validated.csv", out / "quarantine.csv",
             out / "validation.json", ValidateParams(min_per_class=1, max_bad_fraction=1.0))
    text = (out / "quarantine.csv").read_text()
    assert "TOP-SECR" not in text and "secret" not in text and "\\x07" not in text
    details = {r["path"]: (r["reason"], r["detail"]) for r in read_csv(out / "quarantine.csv")}
    assert details["dogs/notes.jpg"][0] == NOT_IMAGE and "text" in details["dogs/notes.jpg"][1]
    assert "HTML" in details["dogs/page.jpg"][1]
    assert "binary" in details["dogs/blob.jpg"][1]


# --- 5. the new-data checker: regular files only -------------------------------------------

def test_new_data_checker_skips_special_files(tmp_path, alarm):
    from flows.check_new_data import fingerprint

    (tmp_path / "secret.txt").write_bytes(SECRET)
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG})
    os.mkfifo(source / "cats" / "x.jpg")
    (source / "cats" / "zero.jpg").symlink_to("/dev/zero")
    (source / "cats" / "gone.jpg").symlink_to(tmp_path / "nothing-here.jpg")
    (source / "cats" / "leak.jpg").symlink_to(tmp_path / "secret.txt")
    alarm(30)
    files = fingerprint(source, {})
    assert list(files) == ["cats/1.jpg"]


# --- 6. one decoder, only the formats validate accepts ---------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
       b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch):
    """A `gs` first on PATH that leaves a marker whenever anything runs it."""
    marker = tmp_path / "gs-was-run"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch '{marker}'\necho 10.0\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("PIL.EpsImagePlugin.gs_binary", None)  # forget any earlier lookup
    return marker


def test_postscript_named_jpg_never_reaches_ghostscript(tmp_path, fake_ghostscript):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    verdict = validate_image(photo, ValidateParams())
    assert (verdict.ok, verdict.reason) == (False, NOT_IMAGE) and "PostScript" in verdict.detail
    with pytest.raises(Image.UnidentifiedImageError):
        load_rgb(photo)
    with pytest.raises(Image.UnidentifiedImageError):
        load_rgb(photo, max_pixels=10_000)
    assert not fake_ghostscript.exists()


def test_predict_rejects_postscript_without_running_ghostscript(tmp_path, fake_ghostscript):
    from alexnet.predict import predict
    from tests.unit.test_evaluate import make_model_dir

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    results, errors = predict([photo], make_model_dir(tmp_path / "m"))
    assert results == [] and [e["file"] for e in errors] == [str(photo)]
    assert "cannot decode image" in errors[0]["error"]
    assert not fake_ghostscript.exists()


# --- 7. bytes per file are bounded; high bit depths are converted in integers --------------

def test_sparse_oversized_file_is_not_copied(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    big = source / "dogs" / "sparse.jpg"
    with open(big, "wb") as fh:  # a JPEG header, then 60 MB of hole: a few KB on disk
        fh.write(JPG[:64])
        fh.truncate(60 << 20)
    summary, rows, out = _ingest(tmp_path, source)
    assert [r["path"] for r in rows] == ["cats/1.jpg", "dogs/1.jpg"]
    assert summary["ignored"] == {IGNORED_TOO_LARGE: 1}
    assert sorted(raw_members(out / "raw")) == ["cats/1.jpg", "dogs/1.jpg"]
    # The bound is a param of the stage that checks it.
    summary, rows, _ = _ingest(tmp_path, source, max_bytes=100 << 20)
    assert len(rows) == 3 and summary["ignored"] == {}


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(40, axis=0)
    values = np.tile(values, (1, 10))
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    verdict = validate_image(path, ValidateParams())
    assert verdict.ok and (verdict.width, verdict.height) == (40, 40)
    pixels = np.asarray(load_rgb(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (40, 40, 3)
    assert pixels[0, :4, 0].tolist() == [0, 1, 127, 255]  # value * 255 // max


# --- 9. a file name that is not UTF-8 ---------------------------------------------------------

def test_non_utf8_file_name_is_skipped_with_a_reason(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    with open(os.fsencode(source / "cats") + b"/caf\xe9.jpg", "wb") as fh:
        fh.write(image_bytes("JPEG", size=(40, 40), seed=5))
    summary, rows, out = _ingest(tmp_path, source)
    assert [r["path"] for r in rows] == ["cats/1.jpg", "dogs/1.jpg"]
    assert summary["ignored"] == {"file name not UTF-8": 1}
    assert json.loads((out / "ingest.json").read_text())["ingested"] == 2


def test_non_utf8_file_name_is_skipped_in_the_kaggle_layout_too(tmp_path):
    """There the label is the file name's prefix: a bad name is still one skipped file, not a
    bad class that stops the whole ingest."""
    source = write_tree(tmp_path / "src", {"train/cat.1.jpg": JPG, "train/dog.1.jpg": PNG})
    with open(os.fsencode(source / "train") + b"/c\xe9t.2.jpg", "wb") as fh:
        fh.write(image_bytes("JPEG", size=(40, 40), seed=5))
    (source / "train" / "more").mkdir()
    os.mkdir(os.fsencode(source / "train" / "more") + b"/d\xefr")  # a folder on the way
    with open(os.fsencode(source / "train" / "more") + b"/d\xefr/cat.3.jpg", "wb") as fh:
        fh.write(image_bytes("JPEG", size=(40, 40), seed=6))
    summary, rows, _ = _ingest(tmp_path, source)
    assert [r["path"] for r in rows] == ["train/cat.1.jpg", "train/dog.1.jpg"]
    assert summary["ignored"] == {"file name not UTF-8": 2}


def test_raw_and_manifest_are_replaced_together(tmp_path, monkeypatch):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    _, _, out = _ingest(tmp_path, source)
    before = tree_digest(out)
    (source / "cats" / "2.jpg").write_bytes(image_bytes("JPEG", size=(40, 40), seed=7))

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("alexnet.ingest.write_csv", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _ingest(tmp_path, source)
    assert tree_digest(out) == before
    # No temp dirs left: only the kept twin of the last good run (alexnet.io.keep).
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".raw.kept"]


# --- keep what holds --------------------------------------------------------------------------

def test_folder_links_fifos_and_broken_links_are_skipped(tmp_path, alarm):
    outside = write_tree(tmp_path / "outside", {"1.jpg": JPG, "2.jpg": PNG})
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    (source / "birds").symlink_to(outside, target_is_directory=True)
    (source / "cats" / "more").symlink_to(outside, target_is_directory=True)
    os.mkfifo(source / "cats" / "x.jpg")
    (source / "dogs" / "gone.jpg").symlink_to(tmp_path / "nothing-here.jpg")
    alarm(60)
    summary, rows, out = _ingest(tmp_path, source)
    assert [r["path"] for r in rows] == ["cats/1.jpg", "dogs/1.jpg"]
    assert summary["classes"] == ["cats", "dogs"]
    assert summary["ignored"] == {IGNORED_SPECIAL: 2}
    [pack] = {r["pack"] for r in read_index(out / "raw").values()}  # one pack
    assert sorted(tree_digest(out / "raw")) == sorted([STAMP, OUTPUT_MARKER, PACKS, INDEX, pack])
    assert sorted(raw_members(out / "raw")) == ["cats/1.jpg", "dogs/1.jpg"]


ODD_NAMES = ["new\nline.jpg", "comma,name.jpg", 'double"quote.jpg', "single'quote.jpg",
             '=HYPERLINK("x").jpg', "  spaces  .jpg", "semi;colon.jpg"]


def test_odd_file_names_round_trip_through_the_csvs(tmp_path):
    files = {f"cats/{n}": image_bytes("JPEG", size=(40, 40), seed=i)
             for i, n in enumerate(ODD_NAMES)}
    files |= {f"dogs/{n}": image_bytes("JPEG", size=(40, 40), seed=50 + i)
              for i, n in enumerate(ODD_NAMES)}
    _, rows, out = _ingest(tmp_path, write_tree(tmp_path / "src", files))
    assert sorted(r["path"] for r in rows) == sorted(files)
    validate(out / "raw", out / "manifest.csv", out / "validated.csv", out / "quarantine.csv",
             out / "validation.json", ValidateParams(min_per_class=1))
    assert sorted(r["path"] for r in read_csv(out / "validated.csv")) == sorted(files)
    assert raw_members(out / "raw") == files  # `tar -xf` gives back every name and its bytes


def test_non_empty_foreign_output_folder_is_refused(tmp_path):
    source = write_tree(tmp_path / "src", {"cats/1.jpg": JPG, "dogs/1.jpg": PNG})
    mine = write_tree(tmp_path / "my-photos", {"holiday.jpg": JPG, "notes.txt": b"mine"})
    before = tree_digest(mine)
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    code = cli_main(["ingest", "--params", str(params), "--source", str(source),
                     "--raw", str(mine), "--manifest", str(tmp_path / "m.csv"),
                     "--summary", str(tmp_path / "s.json")])
    assert code == EXIT_CONFIG
    assert tree_digest(mine) == before
    assert not (tmp_path / "m.csv").exists()

