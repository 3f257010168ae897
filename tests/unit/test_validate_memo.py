"""A rerun of validate decodes only files whose content it has not judged before."""

import hashlib

from PIL import Image

from alexnet.io import read_csv, write_csv
from alexnet.params import ValidateParams
from alexnet.validate import validate

COLUMNS = ["path", "label", "split_hint", "bytes", "sha256"]


def add_image(raw, rows, rel, colour):
    path = raw / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, "JPEG")
    data = path.read_bytes()
    rows.append({"path": rel, "label": rel.split("/")[0], "split_hint": "", "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()})


def run(tmp_path, rows, params):
    write_csv(tmp_path / "manifest.csv", COLUMNS, rows)
    validate(tmp_path / "raw", tmp_path / "manifest.csv", tmp_path / "validated.csv",
             tmp_path / "quarantine.csv", tmp_path / "validation.json", params, workers=1,
             memo_path=tmp_path / "verdicts.csv")
    return {r["path"] for r in read_csv(tmp_path / "validated.csv")}


def test_verdicts_are_reused_by_content_hash(tmp_path):
    params = ValidateParams(min_side=8, min_per_class=1, max_bad_fraction=1.0)
    raw, rows = tmp_path / "raw", []
    for i in range(3):
        add_image(raw, rows, f"a/{i}.jpg", (10 * i + 50, 0, 0))
        add_image(raw, rows, f"b/{i}.jpg", (0, 10 * i + 50, 0))
    assert len(run(tmp_path, rows, params)) == 6

    # Corrupt a file behind the manifest's back: its recorded hash is unchanged, so its verdict is
    # reused (it is not decoded again), while a genuinely new file is decoded.
    (raw / "a/0.jpg").write_bytes(b"not a jpeg any more")
    add_image(raw, rows, "b/new.jpg", (0, 0, 99))
    accepted = run(tmp_path, rows, params)
    assert "a/0.jpg" in accepted and "b/new.jpg" in accepted
    assert len(read_csv(tmp_path / "verdicts.csv")) == 7

    # Other validation params invalidate the memo: everything is judged again.
    accepted = run(tmp_path, rows, ValidateParams(min_side=9, min_per_class=1,
                                                  max_bad_fraction=1.0))
    assert "a/0.jpg" not in accepted and len(accepted) == 6
    quarantine = {r["path"]: r["reason"] for r in read_csv(tmp_path / "quarantine.csv")}
    assert quarantine == {"a/0.jpg": "not an image"}
