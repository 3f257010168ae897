"""The synthetic sample set: deterministic, the requested classes and counts, usable images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet.errors import DataError
from alexnet.params import ValidateParams
from alexnet.sample_data import MAX_SIDE, MIN_SIDE, SHAPES, generate_sample_data
from alexnet.validate import validate_image
from tests.unit.corpus import tree_digest


def test_same_seed_gives_identical_bytes(tmp_path):
    a = generate_sample_data(tmp_path / "a", per_class=6, seed=3)
    b = generate_sample_data(tmp_path / "b", per_class=6, seed=3)
    assert a == b == {"disks": 6, "stripes": 6}
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    generate_sample_data(tmp_path / "c", per_class=6, seed=4)
    other_seed = tree_digest(tmp_path / "c")
    assert other_seed["disks/disks.0.jpg"] != tree_digest(tmp_path / "a")["disks/disks.0.jpg"]


def test_requested_classes_and_counts(tmp_path):
    classes = tuple(SHAPES)  # all five kinds
    counts = generate_sample_data(tmp_path / "s", per_class=4, classes=classes)
    assert counts == {c: 4 for c in classes}
    files = sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*")
                   if p.is_file())
    assert files == sorted([f"{c}/{c}.{i}.jpg" for c in classes for i in range(4)]
                           + ["SYNTHETIC.txt"])
    notice = (tmp_path / "s" / "SYNTHETIC.txt").read_text()
    assert "SYNTHETIC" in notice and "alexnet sample-data" in notice


def test_images_are_valid_varied_jpegs(tmp_path):
    generate_sample_data(tmp_path / "s", per_class=10, classes=("disks", "checkers"))
    sizes = set()
    for path in (tmp_path / "s").rglob("*.jpg"):
        verdict = validate_image(path, ValidateParams())
        assert verdict.ok and verdict.format == "JPEG" and verdict.notes == (), (path, verdict)
        assert MIN_SIDE <= min(verdict.width, verdict.height)
        assert max(verdict.width, verdict.height) <= MAX_SIDE
        sizes.add((verdict.width, verdict.height))
    assert len(sizes) >= 15  # varied sizes and aspect ratios, not one fixed shape


def test_classes_differ_in_the_pixels(tmp_path):
    """Stripes are periodic across the whole image; disks leave most of it plain background.
    A crude statistic (mean absolute horizontal+vertical gradient) already separates them
    on average, so the class is in the pixels, not the file name."""
    generate_sample_data(tmp_path / "s", per_class=12)

    def edges(path: Path) -> float:
        a = np.asarray(Image.open(path).convert("L").resize((64, 64)), dtype=np.float32)
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

    disks = np.mean([edges(p) for p in (tmp_path / "s" / "disks").glob("*.jpg")])
    stripes = np.mean([edges(p) for p in (tmp_path / "s" / "stripes").glob("*.jpg")])
    assert stripes > disks


def test_refuses_non_empty_out_dir_unless_overwrite(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_sample_data(out, per_class=2)
    assert (out / "keep.txt").read_text() == "mine"
    generate_sample_data(out, per_class=2, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "disks" / "disks.1.jpg").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp dirs left beside it


def test_empty_existing_out_dir_is_fine(tmp_path):
    (tmp_path / "s").mkdir()
    assert generate_sample_data(tmp_path / "s", per_class=1) == {"disks": 1, "stripes": 1}


def test_unknown_class_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="circles"):
        generate_sample_data(tmp_path / "s", classes=("disks", "circles"))
    assert not (tmp_path / "s").exists()


def test_sample_folder_gets_the_usual_permissions(tmp_path):
    """mkdtemp makes 0700: the sample folder must be readable like any folder mkdir makes."""
    import os
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from alexnet.sample_data import "
            "generate_sample_data as g; g(Path(sys.argv[1]), per_class=1, seed=0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sample")], check=True,
                   preexec_fn=lambda: os.umask(0o022))
    assert oct((tmp_path / "sample").stat().st_mode & 0o777) == "0o755"
