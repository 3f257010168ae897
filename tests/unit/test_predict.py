"""Tests for alexnet.predict: real image files, a real saved model (red -> cat, blue -> dog)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from PIL import Image

from alexnet.predict import expand_paths, format_results, predict
from tests.conftest import tool_env
from tests.unit.test_evaluate import BLUE, RED, make_model_dir


def write_image(path, rgb, size=(90, 60), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("predict"))


def test_predict_good_files(tmp_path, model_dir):
    red = write_image(tmp_path / "red.png", RED)
    blue = write_image(tmp_path / "blue.jpg", BLUE)
    results, errors = predict([red, blue], model_dir, top_k=2)
    assert errors == []
    assert [(r["file"], r["label"]) for r in results] == [(str(red), "cat"), (str(blue), "dog")]
    assert results[0]["probability"] > 0.99
    assert [label for label, _ in results[0]["top_k"]] == ["cat", "dog"]
    assert sum(p for _, p in results[0]["top_k"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_folder_recursively_in_batches(tmp_path, model_dir):
    folder = tmp_path / "photos"
    for i in range(3):
        write_image(folder / f"r{i}.png", RED)
        write_image(folder / "nested" / f"b{i}.JPG", BLUE, fmt="JPEG")
    (folder / "notes.txt").write_text("not an image, and not asked for")
    results, errors = predict([folder], model_dir, batch_size=2)
    assert errors == []
    labels = {r["file"]: r["label"] for r in results}
    assert len(labels) == 6
    assert all(lab == ("dog" if "nested" in f else "cat") for f, lab in labels.items())
    assert all(len(r["top_k"]) == 1 for r in results)


def test_corrupt_file_among_good_ones_is_the_only_error(tmp_path, model_dir):
    good = [write_image(tmp_path / f"ok{i}.png", RED if i % 2 else BLUE) for i in range(4)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    results, errors = predict([good[0], good[1], corrupt, good[2], good[3]], model_dir,
                              batch_size=3)
    assert [e["file"] for e in errors] == [str(corrupt)]
    assert errors[0]["error"].startswith("cannot decode image: ")
    assert [r["file"] for r in results] == [str(p) for p in good]
    assert [r["label"] for r in results] == ["dog", "cat", "dog", "cat"]


def test_missing_paths_and_empty_folders_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    files, errors = expand_paths([tmp_path / "nope.jpg", tmp_path / "empty"])
    assert files == []
    assert [e["error"] for e in errors][0] == "no such file or directory"
    assert "no image files" in errors[1]["error"]


def test_model_dir_without_metadata_is_refused(tmp_path, model_dir):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.keras").write_bytes((model_dir / "model.keras").read_bytes())
    image = write_image(tmp_path / "red.png", RED)
    with pytest.raises(FileNotFoundError, match="metadata missing"):
        predict([image], bare)


RESULTS = [{"file": "a b.png", "label": "cat", "probability": 0.9,
            "top_k": [("cat", 0.9), ("dog", 0.1)]}]
ERRORS = [{"file": "bad,name.jpg", "error": "cannot decode image: OSError: truncated"}]


def test_format_results_json_csv_table():
    data = json.loads(format_results(RESULTS, ERRORS, "json"))
    assert data["results"][0]["top_k"] == [["cat", 0.9], ["dog", 0.1]]
    assert data["errors"] == ERRORS

    rows = list(csv.DictReader(io.StringIO(format_results(RESULTS, ERRORS, "csv"))))
    assert rows[0] == {"file": "a b.png", "label": "cat", "probability": "0.900000",
                       "top_k": "cat:0.900000;dog:0.100000", "error": ""}
    assert rows[1]["file"] == "bad,name.jpg" and rows[1]["label"] == ""

    table = format_results(RESULTS, ERRORS, "table").splitlines()
    assert table[0].split() == ["FILE", "LABEL", "PROBABILITY", "TOP-K"]
    assert table[1].startswith("a b.png  cat    0.9000") and "dog 0.1000" in table[1]
    assert table[2] == "ERROR bad,name.jpg: cannot decode image: OSError: truncated"
    with pytest.raises(ValueError, match="unknown format"):
        format_results(RESULTS, ERRORS, "xml")


# --------------------------------------------------------------------------- which model, which classes

def _project(root, model_dir, champion_classes, source_classes, cache_classes=None):
    """A project dir: models/champion trained on `champion_classes`, params.yaml's ingest.source
    holding one folder per class of `source_classes` (None: the source does not exist), and
    optionally a cache index with `cache_classes`."""
    import shutil

    champion = root / "models/champion"
    champion.mkdir(parents=True)
    shutil.copy(model_dir / "model.keras", champion / "model.keras")
    meta = json.loads((model_dir / "model.json").read_text())
    (champion / "model.json").write_text(json.dumps({**meta, "classes": champion_classes}))
    (root / "params.yaml").write_text("ingest: {source: data/mine}\n")
    for i, name in enumerate(source_classes or []):
        for j in range(2):
            write_image(root / "data/mine" / name / f"{name}.{j}.jpg", RED if i else BLUE)
    if cache_classes:
        (root / "data/cache").mkdir(parents=True)
        (root / "data/cache/index.json").write_text(json.dumps({"classes": cache_classes}))
    return write_image(root / "photo.png", RED)


def _predict_cli(root, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alexnet.cli", "predict", *args], cwd=root,
                          env=tool_env(), text=True, capture_output=True, timeout=300)


def _log_lines(stderr):
    return [line for line in stderr.splitlines()
            if re.search(r" (DEBUG|INFO|WARNING|ERROR) alexnet[.:]", line)]


def test_predict_refuses_a_champion_of_other_classes_than_the_configured_data(tmp_path,
                                                                             model_dir):
    """After the demo, `alexnet predict` used to answer 'boot.3.jpg  disks  0.80' without a
    warning. It now says which model and classes it uses, and refuses with the fix."""
    _project(tmp_path, model_dir, ["disks", "stripes"], ["boot", "tshirt"])
    proc = _predict_cli(tmp_path, "photo.png")
    assert proc.returncode == 78 and proc.stdout == ""
    lines = _log_lines(proc.stderr)
    assert len(lines) == 2, proc.stderr
    assert "predicting with models/champion (classes: disks, stripes" in lines[0]
    assert "ERROR" in lines[1] and "['disks', 'stripes']" in lines[1]
    assert "['boot', 'tshirt']" in lines[1] and "ingest.source" in lines[1]
    assert "dvc repro" in lines[1] and "--model" in lines[1]

    # Asked for by name, the same model answers (and still says what it is).
    proc = _predict_cli(tmp_path, "photo.png", "--model", "models/champion")
    assert proc.returncode == 0 and "disks" in proc.stdout
    assert "predicting with models/champion (classes: disks, stripes" in proc.stderr


def test_predict_checks_the_cache_classes_when_the_source_is_gone(tmp_path, model_dir):
    _project(tmp_path, model_dir, ["disks", "stripes"], None, cache_classes=["boot", "tshirt"])
    proc = _predict_cli(tmp_path, "photo.png")
    assert proc.returncode == 78 and "data/cache/index.json" in proc.stderr


def test_predict_with_the_champion_of_the_configured_classes(tmp_path, model_dir):
    _project(tmp_path, model_dir, ["boot", "tshirt"], ["boot", "tshirt"],
             cache_classes=["boot", "tshirt"])
    proc = _predict_cli(tmp_path, "photo.png", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["label"] == "boot"
    assert len(_log_lines(proc.stderr)) == 2  # which model; how many classified


def test_predict_with_no_champion_yet_says_what_to_do(tmp_path, model_dir):
    (tmp_path / "models/champion").mkdir(parents=True)
    write_image(tmp_path / "photo.png", RED)
    proc = _predict_cli(tmp_path, "photo.png")
    assert proc.returncode == 78
    lines = _log_lines(proc.stderr)
    assert len(lines) == 1 and "no model yet" in lines[0] and "dvc repro" in lines[0]
    assert "models/champions" in lines[0]
