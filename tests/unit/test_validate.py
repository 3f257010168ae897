"""validate_image on a generated bad-input corpus, and validate() over a real ingested tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alexnet.errors import DataError
from alexnet.ingest import ingest
from alexnet.io import read_csv
from alexnet.params import IngestParams, ValidateParams
from alexnet.validate import (QUARANTINE_COLUMNS, VALIDATED_COLUMNS, dataset_rules, validate,
                              validate_image)
from tests.unit.corpus import (corpus_bytes, exif_rotated_jpeg, image_bytes, tree_digest,
                               write_corpus, write_tree)

CASES = sorted(corpus_bytes())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", CASES)
def test_verdict_for_each_corpus_file(corpus, name):
    case = corpus[name]
    verdict = validate_image(case.path, ValidateParams())
    assert verdict.reason == case.reason, verdict
    assert verdict.ok == (case.reason == "")
    assert set(case.notes) <= set(verdict.notes), verdict
    if not verdict.ok:
        assert verdict.detail, "a rejection must say why"


def test_exif_rotation_reports_size_after_rotation(corpus):
    verdict = validate_image(corpus["exif_rotated"].path, ValidateParams())
    # Stored as 120x60 with orientation 6 (rotate 90 degrees): the model sees 60x120.
    assert (verdict.width, verdict.height) == (60, 120)


def test_plain_images_have_no_notes(corpus):
    verdict = validate_image(corpus["good"].path, ValidateParams())
    assert verdict.ok and verdict.notes == () and verdict.format == "JPEG"


def test_max_pixels_param_is_the_cap(corpus):
    # good.jpg is 120x90 = 10,800 pixels.
    assert validate_image(corpus["good"].path, ValidateParams(max_pixels=10_800)).ok
    verdict = validate_image(corpus["good"].path, ValidateParams(max_pixels=10_799))
    assert verdict.reason == "too many pixels" and "10800" in verdict.detail


def test_min_side_param(corpus):
    assert validate_image(corpus["good"].path, ValidateParams(min_side=90)).ok
    assert validate_image(corpus["good"].path, ValidateParams(min_side=91)).reason == "too small"


def test_dataset_rules_pure():
    rows = [{"path": "a/2.jpg", "label": "a", "sha256": "d"},
            {"path": "a/1.jpg", "label": "a", "sha256": "d"},
            {"path": "a/3.jpg", "label": "a", "sha256": "x"},
            {"path": "b/3.jpg", "label": "b", "sha256": "x"},
            {"path": "b/4.jpg", "label": "b", "sha256": "u"}]
    assert dataset_rules(rows) == {
        "a/2.jpg": ("duplicate", "a/1.jpg"),
        "a/3.jpg": ("label conflict", "same bytes as b/3.jpg (b)"),
        "b/3.jpg": ("label conflict", "same bytes as a/3.jpg (a)"),
    }


def _dataset(tmp_path: Path, n_per_class: int = 12) -> Path:
    """A two-class source with every kind of defect: returns the source folder."""
    files = {f"cats/cat.{i}.jpg": image_bytes("JPEG", seed=100 + i) for i in range(n_per_class)}
    files |= {f"dogs/dog.{i}.png": image_bytes("PNG", seed=200 + i) for i in range(n_per_class)}
    files["cats/cat.dup.jpg"] = files["cats/cat.0.jpg"]            # duplicate within a class
    shared = image_bytes("JPEG", seed=999)
    files["cats/shared.jpg"] = files["dogs/shared.jpg"] = shared    # label conflict
    for name, (filename, content, _, _) in corpus_bytes().items():
        if name not in ("huge", "good"):
            files[f"dogs/bad_{filename}"] = content
    return write_tree(tmp_path / "source", files)


def _run(tmp_path: Path, params: ValidateParams, workers: int = 1, source: Path | None = None):
    source = source or _dataset(tmp_path)
    raw, data, reports = tmp_path / "raw", tmp_path / "data", tmp_path / "reports"
    ingest(source, raw, data / "manifest.csv", reports / "ingest.json", IngestParams())
    before = tree_digest(raw)
    out = dict(validated=data / "validated.csv", quarantine=reports / "quarantine.csv",
               summary=reports / "validate.json")
    try:
        summary = validate(raw, data / "manifest.csv", out["validated"], out["quarantine"],
                           out["summary"], params, workers=workers)
    finally:
        assert tree_digest(raw) == before, "raw files must never be modified"
    return summary, out


def test_validate_end_to_end(tmp_path, force_pool):
    summary, out = _run(tmp_path, ValidateParams(max_bad_fraction=0.5), workers=2)
    validated, quarantine = read_csv(out["validated"]), read_csv(out["quarantine"])
    assert list(validated[0]) == list(VALIDATED_COLUMNS)
    assert list(quarantine[0]) == list(QUARANTINE_COLUMNS)
    assert json.loads(out["summary"].read_text()) == summary

    reasons = {row["path"]: row["reason"] for row in quarantine}
    assert all(row["reason"] for row in quarantine)
    assert reasons["cats/cat.dup.jpg"] == "duplicate"
    assert next(r for r in quarantine if r["path"] == "cats/cat.dup.jpg")["detail"] == \
        "cats/cat.0.jpg"
    assert reasons["cats/shared.jpg"] == reasons["dogs/shared.jpg"] == "label conflict"
    assert reasons["dogs/bad_empty.jpg"] == "empty file"
    assert reasons["dogs/bad_half.jpg"] == "truncated or corrupt"
    assert reasons["dogs/bad_page.jpg"] == "not an image"
    assert reasons["dogs/bad_tiny.png"] == "too small"

    accepted = {row["path"]: row for row in validated}
    assert "cats/cat.0.jpg" in accepted and not set(accepted) & set(reasons)
    assert accepted["dogs/bad_really_png.jpg"]["notes"] == "extension-mismatch"
    assert accepted["dogs/bad_rotated.jpg"]["notes"] == "exif-rotated"
    assert accepted["dogs/bad_anim.gif"]["notes"] == "palette;animated"
    assert (accepted["dogs/bad_rotated.jpg"]["width"], accepted["dogs/bad_rotated.jpg"]["height"]) \
        == ("60", "120")

    bad = 6  # empty, half, twenty, notes, page, tiny
    assert summary["total"] == len(validated) + len(quarantine)
    assert summary["by_reason"] == {"duplicate": 1, "empty file": 1, "label conflict": 2,
                                    "not an image": 2, "too small": 1,
                                    "truncated or corrupt": 2}
    assert summary["bad_fraction"] == pytest.approx((bad + 2) / summary["total"])
    # accepted odd files: png-as-jpg, cmyk, gray, rgba, animated gif, exif-rotated
    assert summary["per_class"] == {"cats": 12, "dogs": 12 + 6}
    assert summary["classes"] == ["cats", "dogs"]
    assert summary["notes"]["cmyk"] == 1 and summary["notes"]["grayscale"] == 1


def test_pool_and_inline_give_identical_outputs(tmp_path):
    source = _dataset(tmp_path)
    _, out1 = _run(tmp_path / "one", ValidateParams(max_bad_fraction=0.5), 1, source)
    _, out2 = _run(tmp_path / "two", ValidateParams(max_bad_fraction=0.5), 2, source)
    for key in out1:
        assert out1[key].read_bytes() == out2[key].read_bytes()


def test_too_many_bad_files_raises_after_writing_reports(tmp_path):
    with pytest.raises(DataError, match="unusable"):
        _run(tmp_path, ValidateParams(max_bad_fraction=0.1))
    summary = json.loads((tmp_path / "reports" / "validate.json").read_text())
    assert summary["bad_fraction"] > 0.1
    assert (tmp_path / "data" / "validated.csv").exists()
    assert (tmp_path / "reports" / "quarantine.csv").exists()


def test_too_few_per_class_names_the_class(tmp_path):
    with pytest.raises(DataError, match=r"class 'cats' has 12") as exc:
        _run(tmp_path, ValidateParams(max_bad_fraction=0.5, min_per_class=13))
    assert "dogs" not in str(exc.value)
    assert (tmp_path / "reports" / "validate.json").exists()


def test_one_class_is_refused_at_validate_with_exit_65(tmp_path, monkeypatch):
    """One class used to pass validate, split and preprocess and fail in train with two
    tracebacks (after DVC had deleted models/candidate): refuse it here, in one line."""
    from alexnet.cli import main

    source = tmp_path / "source"
    write_tree(source, {f"boots/boot.{i}.jpg": image_bytes("JPEG", size=(40, 40), seed=i)
                        for i in range(12)})
    data, reports = tmp_path / "data", tmp_path / "reports"  # the CLI's default paths
    raw = data / "raw"
    ingest(source, raw, data / "manifest.csv", reports / "ingest.json", IngestParams())
    (tmp_path / "params.yaml").write_text("validate: {min_per_class: 5}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as exc:
        validate(raw, data / "manifest.csv", data / "validated.csv", reports / "q.csv",
                 reports / "validate.json", ValidateParams(min_per_class=5), workers=1)
    message = str(exc.value)
    assert "\n" not in message and "'boots'" in message and "at least two" in message
    assert main(["validate", "--workers", "1"]) == 65


# --- JPEGs are checked at libjpeg's 1/8 scale (draft): still every byte of the stream ---------

def _scan_start(jpeg: bytes) -> int:
    return jpeg.index(b"\xff\xda")


@pytest.mark.parametrize("damage", ["truncated", "bit_errors", "bad_marker"])
def test_damaged_large_jpeg_is_quarantined(tmp_path, damage):
    # 400x320 (draft would decode it at 50x40): the damage is in the entropy-coded data, which a
    # scaled decode still reads to the end. (A few flipped bits libjpeg only warns about pass a
    # full decode as well: those are not detectable here either way.)
    jpeg = image_bytes("JPEG", size=(400, 320), seed=11, quality=85)
    mid = _scan_start(jpeg) + (len(jpeg) - _scan_start(jpeg)) // 2
    bad = bytearray(jpeg)
    if damage == "truncated":
        del bad[int(len(jpeg) * 0.9):]
    elif damage == "bit_errors":
        for j in range(64):
            bad[mid + 7 * j] ^= 0x5A
    else:  # a marker that cannot occur inside a scan
        bad[mid:mid + 2] = b"\xff\x99"
    path = tmp_path / "bad.jpg"
    path.write_bytes(bytes(bad))
    verdict = validate_image(path, ValidateParams())
    assert verdict.reason == "truncated or corrupt" and "decode" in verdict.detail, verdict


@pytest.mark.parametrize("orientation,size", [(1, (400, 320)), (6, (320, 400))])
def test_large_jpeg_size_is_the_full_size_after_rotation(tmp_path, orientation, size):
    # The scaled decode must not leak into width/height (validated.csv) or min_side.
    path = tmp_path / "big.jpg"
    path.write_bytes(exif_rotated_jpeg((400, 320), orientation))
    verdict = validate_image(path, ValidateParams(min_side=320))
    assert verdict.ok and (verdict.width, verdict.height) == size, verdict
    assert validate_image(path, ValidateParams(min_side=321)).reason == "too small"
