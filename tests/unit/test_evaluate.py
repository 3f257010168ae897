"""Tests for alexnet.evaluate: metrics by hand, and a real evaluation of a tiny saved model.

The helpers at the top (`make_model_dir`, `make_cache`, `make_dvclive`, `colour_image`) build real
files — a saved Keras model with model.json, a .npy cache, a DVCLive run — and are shared with
the report/promote/predict tests.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from alexnet.evaluate import (compute_metrics, confident_errors, dataset_sha256, evaluate,
                              prediction_rows, read_training_curves, roc_points)
from alexnet.errors import DataError
from alexnet.io import file_sha256, read_csv
from alexnet.model import save_model
from alexnet.params import EvaluateParams

SIZE = 67
CLASSES = ["cat", "dog"]
RED, BLUE = (255, 0, 0), (0, 0, 255)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def colour_model(classes=CLASSES, size: int = SIZE, green: int | None = None,
                 constant: bool = False) -> tf.keras.Model:
    """A tiny real model: mean colour -> softmax. Red images score `classes[0]`, blue the last;
    `green`: the class index green images score; `constant`: every image ties (so every image
    is called classes[0]).

    Dense weights are set by hand so predictions are known: logits = 4 * (r - b) and its negation
    (channel means in [0, 1]), i.e. p(first class) = 0.9997 for pure red.
    """
    k = len(classes)
    inputs = tf.keras.Input((size, size, 3), name="image")
    x = tf.keras.layers.Rescaling(1.0 / 255)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(k, activation="softmax", name="predictions")(x)
    model = tf.keras.Model(inputs, outputs)
    kernel = np.zeros((3, k), np.float32)
    if not constant:
        kernel[0, 0], kernel[2, 0] = 4.0, -4.0
        kernel[0, -1], kernel[2, -1] = -4.0, 4.0
        if green is not None:
            kernel[1, green] = 4.0
    model.get_layer("predictions").set_weights([kernel, np.zeros(k, np.float32)])
    return model


def make_model_dir(root: Path, classes=CLASSES, size: int = SIZE, **extra) -> Path:
    """colour_model saved as training saves a model (model.keras + model.json) in root/model."""
    model = colour_model(classes, size)
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    save_model(model, model_dir, {"classes": list(classes), "image_size": size,
                                  "resize": "squash", **extra})
    return model_dir


def colour_image(rgb, size: int = SIZE) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (size, size, 3)).copy()


def make_cache(root: Path, images: np.ndarray, labels, classes=CLASSES, shard_size: int = 4,
               split: str = "test") -> Path:
    """A real cache dir in alexnet.cache's layout (index.json, shards, columns)."""
    cache = root / "cache"
    (cache / split).mkdir(parents=True)
    n = len(images)
    shards = []
    for i, start in enumerate(range(0, n, shard_size)):
        name = f"{split}/images-{i:05d}.npy"
        np.save(cache / name, np.asarray(images[start:start + shard_size], np.uint8))
        shards.append(name)
    np.save(cache / split / "labels.npy", np.asarray(labels, np.int32))
    np.save(cache / split / "sha256.npy", np.array([f"{i:064x}" for i in range(n)]))
    np.save(cache / split / "paths.npy", np.array([f"data/raw/img{i:02d}.jpg" for i in range(n)]))
    index = {"classes": list(classes), "image_size": int(images.shape[1]), "resize": "squash",
             "shard_size": shard_size, "splits": {split: {"count": n, "shards": shards}}}
    (cache / "index.json").write_text(json.dumps(index))
    return cache


def make_dvclive(root: Path, epochs: int = 3) -> Path:
    """Training curves written by the real DVCLiveCallback, fed Keras-style epoch logs.

    Live() looks for a DVC/Git repo from the working directory and would `dvc init` the
    enclosing checkout: it runs from inside `root` (a tmp dir, outside any repo).
    """
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    live_dir = root / "dvclive"
    with contextlib.chdir(root):
        callback = DVCLiveCallback(live=Live("dvclive", save_dvc_exp=False, dvcyaml=None))
        for epoch in range(epochs):
            callback.on_epoch_end(epoch, logs={
                "accuracy": 0.5 + 0.1 * epoch, "loss": 1.0 - 0.2 * epoch,
                "val_accuracy": 0.45 + 0.1 * epoch, "val_loss": 1.1 - 0.2 * epoch})
        callback.on_train_end()
    assert not (root / ".dvc").exists()
    return live_dir


# Ten examples, counted by hand: 6 cats (4 right, 2 called dog), 4 dogs (3 right, 1 called cat).
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
Y_PRED = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
Y_PROB = np.array([[0.8, 0.2] if p == 0 else [0.2, 0.8] for p in Y_PRED])


def test_compute_metrics_matches_hand_count():
    m = compute_metrics(Y_TRUE, Y_PROB, CLASSES)
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["n"] == 10 and m["classes"] == CLASSES
    cat, dog = m["per_class"]["cat"], m["per_class"]["dog"]
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(4 / 5),
                                                                pytest.approx(4 / 6), 6)
    assert (dog["precision"], dog["recall"], dog["support"]) == (pytest.approx(3 / 5),
                                                                pytest.approx(3 / 4), 4)
    f1_cat, f1_dog = 2 * 0.8 * (4 / 6) / (0.8 + 4 / 6), 2 * 0.6 * 0.75 / 1.35
    assert cat["f1"] == pytest.approx(f1_cat) and dog["f1"] == pytest.approx(f1_dog)
    assert m["macro_avg"]["f1"] == pytest.approx((f1_cat + f1_dog) / 2)
    assert m["weighted_avg"]["f1"] == pytest.approx(0.6 * f1_cat + 0.4 * f1_dog)
    assert m["macro_avg"]["support"] == 10
    assert m["log_loss"] == pytest.approx(-(7 * math.log(0.8) + 3 * math.log(0.2)) / 10)
    # dog scores: positives {.8,.8,.8,.2}, negatives {.2 x4, .8 x2}: 12 wins + 8 ties / 2 = 17/24
    assert m["roc_auc"] == pytest.approx(17 / 24)
    json.dumps(m, allow_nan=False)  # plain JSON: no NaN, no numpy types


def test_compute_metrics_class_names_cannot_collide_with_summary_keys():
    classes = ["accuracy", "macro avg", "weighted avg"]
    y_prob = np.eye(3)[[0, 1, 2, 2]]
    m = compute_metrics([0, 1, 2, 1], y_prob, classes)
    assert list(m["per_class"]) == classes
    assert m["per_class"]["macro avg"]["recall"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.75) and "roc_auc" not in m
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_compute_metrics_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics([0, 1], np.ones((2, 3)) / 3, CLASSES)
    with pytest.raises(ValueError, match="labels"):
        compute_metrics([0, 2], np.full((2, 2), 0.5), CLASSES)
    with pytest.raises(ValueError, match="empty"):
        compute_metrics([], np.zeros((0, 2)), CLASSES)


def test_single_class_test_split_has_no_auc_and_no_roc():
    m = compute_metrics([1, 1], np.array([[0.3, 0.7], [0.6, 0.4]]), CLASSES)
    assert m["roc_auc"] is None
    assert roc_points([1, 1], np.array([[0.3, 0.7], [0.6, 0.4]])) == []


def test_roc_points_are_finite_and_span_the_square():
    rows = roc_points(Y_TRUE, Y_PROB)
    assert rows[0]["fpr"] == 0 and rows[-1] == {"fpr": 1.0, "tpr": 1.0, "threshold": 0.2}
    assert all(math.isfinite(r["threshold"]) and r["threshold"] <= 1 for r in rows)


def test_confident_errors_ranks_by_confidence():
    y_prob = np.array([[0.9, 0.1], [0.4, 0.6], [0.05, 0.95], [0.7, 0.3], [0.2, 0.8]])
    assert confident_errors([1, 0, 0, 0, 0], y_prob).tolist() == [2, 0, 4, 1]
    assert confident_errors([1, 0, 0, 0, 0], y_prob, limit=2).tolist() == [2, 0]


def test_prediction_rows_use_class_names():
    rows = prediction_rows(["a.jpg", "b.jpg"], [0, 1], np.array([[0.25, 0.75], [0.1, 0.9]]),
                           CLASSES)
    assert rows == [{"path": "a.jpg", "true": "cat", "predicted": "dog", "probability": "0.750000"},
                    {"path": "b.jpg", "true": "dog", "predicted": "dog", "probability": "0.900000"}]


def test_dataset_sha256_ignores_order():
    assert dataset_sha256(["b" * 64, "a" * 64]) == dataset_sha256(["a" * 64, "b" * 64])
    assert dataset_sha256(["a" * 64]) != dataset_sha256(["b" * 64])


def test_read_training_curves_from_dvclive_callback(tmp_path):
    curves = read_training_curves(make_dvclive(tmp_path, epochs=3))
    assert [s for s, _ in curves["accuracy"]["train"]] == [0, 1, 2]
    assert [v for _, v in curves["accuracy"]["train"]] == pytest.approx([0.5, 0.6, 0.7])
    assert [v for _, v in curves["loss"]["eval"]] == pytest.approx([1.1, 0.9, 0.7])
    assert read_training_curves(tmp_path / "missing") == {}


def _test_set():
    """10 images: 5 red (2 labelled dog), 5 blue (1 labelled cat), 1 half-red that is a dog."""
    colours = [RED] * 5 + [BLUE] * 4 + [(160, 0, 100)]
    labels = [0, 0, 0, 1, 1] + [1, 1, 1, 0] + [1]
    return np.stack([colour_image(c) for c in colours]), labels


def test_evaluate_writes_metrics_predictions_roc_and_figures(tmp_path):
    images, labels = _test_set()
    model_dir = make_model_dir(tmp_path)
    cache = make_cache(tmp_path, images, labels, shard_size=4)
    reports = tmp_path / "reports"
    metrics = evaluate(model_dir, cache, EvaluateParams(batch_size=3), reports / "metrics.json",
                       reports / "predictions.csv", reports / "figures",
                       roc_path=reports / "roc.csv", live_dir=make_dvclive(tmp_path))

    # predicted: red and (160,0,100) -> cat; blue -> dog. Cats: 3 right + 1 blue; dogs: 2 red +
    # the half-red one called cat, 3 blue right.
    assert metrics["confusion_matrix"] == [[3, 1], [3, 3]]
    on_disk = json.loads((reports / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["n_test"] == 10 and on_disk["accuracy"] == pytest.approx(0.6)
    assert on_disk["classes"] == CLASSES
    assert on_disk["model_sha256"] == file_sha256(model_dir / "model.keras")
    assert on_disk["test_data_sha256"] == dataset_sha256([f"{i:064x}" for i in range(10)])

    rows = read_csv(reports / "predictions.csv")
    assert list(rows[0]) == ["path", "true", "predicted", "probability"]
    assert rows[3] == {"path": "data/raw/img03.jpg", "true": "dog", "predicted": "cat",
                       "probability": rows[3]["probability"]}
    assert float(rows[3]["probability"]) > 0.99
    assert [r["predicted"] for r in rows] == ["cat"] * 5 + ["dog"] * 4 + ["cat"]

    roc = read_csv(reports / "roc.csv")
    assert list(roc[0]) == ["fpr", "tpr", "threshold"] and len(roc) >= 2

    for name in ("confusion_matrix", "training_curves", "confident_errors"):
        png = reports / "figures" / f"{name}.png"
        assert png.read_bytes().startswith(PNG_MAGIC), name
    assert not list(reports.rglob(".*"))  # no temp files left behind


def test_evaluate_refuses_model_trained_on_other_classes(tmp_path):
    images, labels = _test_set()
    model_dir = make_model_dir(tmp_path, classes=["cat", "fox"])
    cache = make_cache(tmp_path, images, labels)
    with pytest.raises(ValueError, match="differ from the cache's classes") as info:
        evaluate(model_dir, cache, EvaluateParams(), tmp_path / "m.json", tmp_path / "p.csv",
                 tmp_path / "fig")
    assert isinstance(info.value, DataError)  # the CLI reports it in one line, exit 65
    assert not (tmp_path / "m.json").exists()


def test_evaluate_without_dvclive_skips_only_the_curves(tmp_path):
    images, labels = _test_set()
    cache = make_cache(tmp_path, images[:5], labels[:5])
    evaluate(make_model_dir(tmp_path), cache, EvaluateParams(batch_size=64), tmp_path / "m.json",
             tmp_path / "p.csv", tmp_path / "fig")
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "confident_errors.png", "confusion_matrix.png"]


def _evaluate_peak_bytes(root: Path, model_dir: Path, n: int, size: int, batch: int) -> int:
    """Peak Python-traced memory (numpy buffers included) of evaluate() on an n-image test split."""
    import tracemalloc

    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    cache = make_cache(root, images, rng.integers(0, 2, n), shard_size=64)
    del images
    reports = root / "reports"
    tracemalloc.start()
    try:
        evaluate(model_dir, cache, EvaluateParams(batch_size=batch), reports / "metrics.json",
                 reports / "predictions.csv", reports / "figures", roc_path=reports / "roc.csv")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_evaluate_memory_is_bounded_by_the_batch_not_the_test_split(tmp_path):
    """Evaluate streams the test split batch by batch from the memory-mapped cache: four times
    the images must not cost (anywhere near) four times the pixels. Loading the split at once,
    as the reference did, adds at least the 3n extra images' uint8 pixels to the peak."""
    size, batch, n = 131, 32, 150
    model_dir = make_model_dir(tmp_path, size=size)
    small = _evaluate_peak_bytes(tmp_path / "small", model_dir, n, size, batch)
    large = _evaluate_peak_bytes(tmp_path / "large", model_dir, 4 * n, size, batch)
    extra_pixels = 3 * n * size * size * 3  # 23 MB
    assert large - small < 0.25 * extra_pixels, (small, large)
