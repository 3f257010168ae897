"""Model files from elsewhere (a DVC remote others can write to, a shared folder): only a zip
`.keras` archive whose sha256 matches model.json is loaded, with Keras' safe_mode; an HDF5 file or
a SavedModel folder named model.keras, or a Lambda layer, is refused (exit 78) without running
any of its code."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet.cli import main as cli_main
from alexnet.errors import EXIT_CONFIG
from alexnet.evaluate import score
from alexnet.io import write_json
from alexnet.model import METADATA_FILE, MODEL_FILE, load_model, save_model
from alexnet.params import PromoteParams
from alexnet.promote import promote
from tests.unit.test_evaluate import CLASSES, SIZE, colour_image, make_cache, make_model_dir

META = {"classes": CLASSES, "image_size": SIZE, "resize": "squash"}


def _touching(marker: Path):
    """A function that leaves `marker` when called: what a hostile Lambda layer would do."""
    path = str(marker)

    def touch(x):
        open(path, "w").close()
        return x
    return touch


class WriteFile(tf.keras.layers.Layer):
    """Writes a file from inside the graph: a SavedModel keeps the op, not the Python."""

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def call(self, x):
        tf.io.write_file(self.marker, "ran")
        return x


def _tiny(first_layer: tf.keras.layers.Layer) -> tf.keras.Model:
    inputs = tf.keras.Input((SIZE, SIZE, 3), name="image")
    x = first_layer(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(len(CLASSES), activation="softmax")(x))


def _model_dir(root: Path, write_model, sha256: str | None = "auto") -> Path:
    """A model dir whose model.keras `write_model(path)` writes; model.json records its sha256
    (the real one with "auto", a given one, or none)."""
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    write_model(model_dir / MODEL_FILE)
    meta = dict(META)
    if sha256 == "auto":  # a folder has no sha256 of its own: any value will do
        path = model_dir / MODEL_FILE
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "f" * 64
    if sha256 is not None:
        meta["model_sha256"] = sha256
    (model_dir / METADATA_FILE).write_text(json.dumps(meta))
    return model_dir


def _hdf5_with_lambda(marker: Path):
    def write(path: Path) -> None:
        h5 = path.with_suffix(".h5")
        _tiny(tf.keras.layers.Lambda(_touching(marker))).save(h5, save_format="h5")
        h5.rename(path)
        marker.unlink()  # building the model called the Lambda once
    return write


def _savedmodel_with_write_file(marker: Path):
    def write(path: Path) -> None:
        folder = path.with_name("savedmodel")
        _tiny(WriteFile(str(marker))).save(folder, save_format="tf")
        folder.rename(path)
        marker.unlink(missing_ok=True)
    return write


def _zip_with_lambda(marker: Path):
    def write(path: Path) -> None:
        _tiny(tf.keras.layers.Lambda(_touching(marker))).save(path)
        marker.unlink()
    return write


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "red.png"
    Image.fromarray(colour_image((255, 0, 0))).save(path)
    return path


def _predict(model_dir: Path, image: Path) -> int:
    return cli_main(["predict", str(image), "--model", str(model_dir)])


def _evaluate(model_dir: Path, tmp_path: Path) -> int:
    images = np.stack([colour_image((255, 0, 0)), colour_image((0, 0, 255))])
    cache = make_cache(tmp_path / "c", images, [0, 1])
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "reports"
    return cli_main(["evaluate", "--params", str(params), "--model-dir", str(model_dir),
                     "--cache", str(cache), "--live-dir", str(tmp_path / "dvclive"),
                     "--metrics", str(out / "metrics.json"),
                     "--predictions", str(out / "p.csv"), "--roc", str(out / "roc.csv"),
                     "--figures", str(out / "figures")])


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("kind", ["hdf5_lambda", "savedmodel_write_file", "zip_lambda"])
def test_model_that_would_run_code_is_refused(tmp_path, image, kind):
    marker = tmp_path / "code-ran"
    writer = {"hdf5_lambda": _hdf5_with_lambda, "savedmodel_write_file":
              _savedmodel_with_write_file, "zip_lambda": _zip_with_lambda}[kind](marker)
    model_dir = _model_dir(tmp_path / "m", writer)
    assert not marker.exists()
    assert _predict(model_dir, image) == EXIT_CONFIG
    assert _evaluate(model_dir, tmp_path) == EXIT_CONFIG
    assert not marker.exists()
    assert not (tmp_path / "reports" / "metrics.json").exists()


def test_model_whose_sha256_differs_from_model_json_is_refused(tmp_path, image):
    model_dir = _model_dir(tmp_path / "m", lambda p: _tiny(tf.keras.layers.Rescaling(1.0)).save(p),
                           sha256="0" * 64)
    assert _predict(model_dir, image) == EXIT_CONFIG
    assert _evaluate(model_dir, tmp_path) == EXIT_CONFIG
    with pytest.raises(ValueError, match="sha256"):
        load_model(model_dir)


def test_model_json_without_sha256_is_refused(tmp_path):
    model_dir = _model_dir(tmp_path / "m", lambda p: _tiny(tf.keras.layers.Rescaling(1.0)).save(p),
                           sha256=None)
    with pytest.raises(ValueError, match="model_sha256"):
        load_model(model_dir)


def test_model_keras_that_is_not_a_zip_is_refused(tmp_path):
    model_dir = _model_dir(tmp_path / "m", lambda p: p.write_bytes(b"PK\x03\x04 not a zip"))
    with pytest.raises(ValueError, match="zip"):
        load_model(model_dir)


def test_saved_model_loads_and_promoted_champion_stays_loadable(tmp_path, image):
    model_dir = make_model_dir(tmp_path)  # written by save_model
    meta = json.loads((model_dir / METADATA_FILE).read_text())
    assert meta["model_sha256"] == hashlib.sha256((model_dir / MODEL_FILE).read_bytes()).hexdigest()
    model, loaded = load_model(model_dir)
    assert loaded == meta and model.output_shape == (None, len(CLASSES))
    assert _predict(model_dir, image) == 0
    # The gate scores on a test split: one red and one blue image, both called right.
    cache = make_cache(tmp_path / "data", np.stack([colour_image((255, 0, 0)),
                                                    colour_image((0, 0, 255))]),
                       [0, len(CLASSES) - 1])
    metrics = tmp_path / "metrics.json"
    write_json(metrics, score(model_dir, cache, 2).metrics)
    champion = tmp_path / "champion"
    assert promote(model_dir, metrics, champion, tmp_path / "promotion.json",
                   PromoteParams(), cache_dir=cache).promote
    load_model(champion)
    assert _predict(champion, image) == 0


def test_save_model_records_the_sha256_it_wrote(tmp_path):
    model = _tiny(tf.keras.layers.Rescaling(1.0))
    out = tmp_path / "out"
    out.mkdir()
    meta = save_model(model, out, dict(META))
    assert meta["model_sha256"] == json.loads((out / METADATA_FILE).read_text())["model_sha256"]
    shutil.copytree(out, tmp_path / "copy")
    load_model(tmp_path / "copy")


def test_model_keras_that_is_a_fifo_is_refused_without_blocking(tmp_path, image):
    import os
    import signal

    def blocked(signum, frame):
        raise TimeoutError("blocked opening a FIFO named model.keras")

    model_dir = _model_dir(tmp_path / "m", os.mkfifo, sha256="0" * 64)
    old = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(30)
    try:
        assert _predict(model_dir, image) == EXIT_CONFIG
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
