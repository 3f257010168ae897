"""A rerun of validate decodes only images whose content it has not judged before."""

import io

import pytest
from PIL import Image

from alexnet.errors import DataError
from alexnet.ingest import MANIFEST_COLUMNS
from alexnet.io import read_csv, write_csv
from alexnet.params import ValidateParams
from alexnet.validate import validate

from tests.unit.corpus import damage_members, pack_images


def jpeg(colour):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


def run(tmp_path, rows, params):
    write_csv(tmp_path / "manifest.csv", MANIFEST_COLUMNS, rows)
    validate(tmp_path / "raw", tmp_path / "manifest.csv", tmp_path / "validated.csv",
             tmp_path / "quarantine.csv", tmp_path / "validation.json", params, workers=1,
             memo_path=tmp_path / "verdicts.csv")
    return {r["path"] for r in read_csv(tmp_path / "validated.csv")}


def test_verdicts_are_reused_by_content_hash(tmp_path):
    params = ValidateParams(min_side=8, min_per_class=1, max_bad_fraction=1.0)
    raw = tmp_path / "raw"
    rows = pack_images(raw, {f"{label}/{i}.jpg": jpeg(colour)
                             for i in range(3)
                             for label, colour in (("a", (10 * i + 50, 0, 0)),
                                                   ("b", (0, 10 * i + 50, 0)))})
    assert len(run(tmp_path, rows, params)) == 6

    # Damage an image behind the manifest's back: its recorded hash is unchanged, so its
    # verdict is reused (it is not read again), while a genuinely new image is decoded.
    damage_members(raw, ["a/0.jpg"])
    rows += pack_images(raw, {"b/new.jpg": jpeg((0, 0, 99))})
    accepted = run(tmp_path, rows, params)
    assert "a/0.jpg" in accepted and "b/new.jpg" in accepted
    assert len(read_csv(tmp_path / "verdicts.csv")) == 7

    # Other validation params invalidate the memo: everything is read again, and the damaged
    # image is refused by name, as data/raw changed after ingest (not judged as a bad image).
    with pytest.raises(DataError, match="a/0.jpg.*not the ones ingest recorded"):
        run(tmp_path, rows, ValidateParams(min_side=9, min_per_class=1, max_bad_fraction=1.0))
