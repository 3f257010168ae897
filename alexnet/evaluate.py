"""Evaluate a trained model on the held-out test split: metrics, predictions, ROC, figures.

The test split is read here and nowhere else (train selects on val). Images are pulled from the
uint8 memmap cache one batch at a time, so memory stays at one batch however large the split is.

    alexnet evaluate --model-dir models/candidate --cache data/cache --live-dir dvclive \
        --metrics reports/metrics.json --predictions reports/predictions.csv \
        --roc reports/roc.csv --figures reports/figures

Outputs (all written atomically):
    metrics.json     accuracy, log_loss, roc_auc (2 classes), per-class and averaged
                     precision/recall/f1/support, confusion matrix, n_test, classes, model and
                     test-data hashes: `dvc metrics` reads it, `alexnet promote` gates on it.
    predictions.csv  path,true,predicted,probability (class names; probability of the predicted
                     class), for DVC's `confusion` plot template.
    roc.csv          fpr,tpr,threshold of the positive class (the second class) for 2 classes;
                     micro-averaged one-vs-rest for more.
    figures/*.png    confusion_matrix, training_curves (from the dvclive dir), confident_errors.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: evaluation runs on servers and in CI without a display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score, classification_report, confusion_matrix, roc_auc_score, roc_curve)

from alexnet.errors import DataError  # noqa: E402
from alexnet.io import atomic_path, file_sha256, write_csv, write_json  # noqa: E402
from alexnet.params import EvaluateParams  # noqa: E402

_logger = logging.getLogger(__name__)

LOG_EPSILON = 1e-7  # Keras' epsilon: log_loss here matches the loss Keras reports
FIGURE_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "training_curves": "training_curves.png",
    "confident_errors": "confident_errors.png",
}
PREDICTION_FIELDS = ("path", "true", "predicted", "probability")
ROC_FIELDS = ("fpr", "tpr", "threshold")
MAX_ERROR_IMAGES = 16
# No "Software"/date chunks in the PNGs: the same inputs give byte-identical figures.
_PNG_METADATA = {"Software": None}
# Text that comes from the data (class names) is drawn as it is: matplotlib would read `$...$` as
# TeX and fail on a class named `$x^$` after the whole training run.
_LITERAL = {"parse_math": False, "usetex": False}




class ModelDataMismatch(DataError, ValueError):
    """The model was trained on other classes (or image size) than the cache holds.

    A ValueError for callers, and a DataError so the CLI reports it in one line (exit 65).
    """


# --------------------------------------------------------------------------- pure computation

def compute_metrics(y_true: Sequence[int], y_prob: np.ndarray, classes: Sequence[str]) -> dict:
    """Classification metrics of predicted probabilities against integer labels.

    Args:
        y_true: (n,) class indices into `classes`.
        y_prob: (n, k) predicted probabilities, k == len(classes).
        classes: class names, in the model's output order.

    Returns:
        A JSON-ready dict: accuracy, log_loss, roc_auc (2 classes, None when the test split holds
        a single class), per_class {name: precision/recall/f1/support}, macro_avg, weighted_avg,
        confusion_matrix (rows: true class, columns: predicted class), n, classes.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = len(classes)
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), k):
        raise ValueError(f"y_prob has shape {y_prob.shape}; expected ({len(y_true)}, {k})")
    if len(y_true) == 0:
        raise ValueError("no test examples: cannot compute metrics on an empty split")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"labels must be in [0, {k}); got [{y_true.min()}, {y_true.max()}]")
    y_pred = y_prob.argmax(axis=1)
    labels = list(range(k))
    # Keys are label indices, not names: a class called "accuracy" or "macro avg" must not
    # collide with sklearn's summary keys.
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True,
                                   zero_division=0)
    p_true = np.clip(y_prob[np.arange(len(y_true)), y_true], LOG_EPSILON, 1.0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "log_loss": float(-np.mean(np.log(p_true))),
    }
    if k == 2:
        metrics["roc_auc"] = _binary_auc(y_true, y_prob[:, 1])
    metrics["per_class"] = {name: _scores(report[str(i)]) for i, name in enumerate(classes)}
    metrics["macro_avg"] = _scores(report["macro avg"])
    metrics["weighted_avg"] = _scores(report["weighted avg"])
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    metrics["n"] = int(len(y_true))
    metrics["classes"] = list(classes)
    return metrics


def _scores(entry: dict) -> dict:
    return {"precision": float(entry["precision"]), "recall": float(entry["recall"]),
            "f1": float(entry["f1-score"]), "support": int(entry["support"])}


def _binary_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < 2:
        _logger.warning("test split holds a single class: ROC AUC is undefined")
        return None
    return float(roc_auc_score(y_true, score))


def roc_points(y_true: Sequence[int], y_prob: np.ndarray) -> list[dict]:
    """ROC curve rows {fpr, tpr, threshold}; [] when the test split holds a single class.

    Two classes: the second class is the positive one. More: micro-averaged one-vs-rest (every
    (example, class) pair is one binary decision). sklearn's first threshold is +inf ("predict
    nothing positive"); it is written as 1.0, the largest probability, so the CSV is plain numbers.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    k = y_prob.shape[1]
    if k == 2:
        target, score = (y_true == 1).astype(np.int64), y_prob[:, 1]
    else:
        target, score = np.eye(k, dtype=np.int64)[y_true].ravel(), y_prob.ravel()
    if len(np.unique(target)) < 2:
        return []
    fpr, tpr, thresholds = roc_curve(target, score)
    thresholds = np.minimum(thresholds, 1.0)
    return [{"fpr": round(float(f), 6), "tpr": round(float(t), 6), "threshold": round(float(h), 6)}
            for f, t, h in zip(fpr, tpr, thresholds)]


def prediction_rows(paths: Sequence[str], y_true: Sequence[int], y_prob: np.ndarray,
                    classes: Sequence[str]) -> list[dict]:
    """One row per test image: path, true and predicted class names, predicted-class probability."""
    y_pred = np.asarray(y_prob).argmax(axis=1)
    return [{"path": str(p), "true": classes[int(t)], "predicted": classes[int(q)],
             "probability": f"{float(y_prob[i, q]):.6f}"}
            for i, (p, t, q) in enumerate(zip(paths, y_true, y_pred))]


def confident_errors(y_true: Sequence[int], y_prob: np.ndarray, limit: int = MAX_ERROR_IMAGES
                     ) -> np.ndarray:
    """Indices of the misclassified examples, most confident first (ties: lower index first)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_prob).argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = np.asarray(y_prob)[wrong, y_pred[wrong]]
    order = np.lexsort((wrong, -confidence))  # last key is primary
    return wrong[order][:limit]


def dataset_sha256(sha256_column: Sequence[str]) -> str:
    """Hash identifying the test set: sha256 of the sorted per-image hashes joined by newlines.

    Independent of the order and the paths of the images: two evaluations with the same value saw
    the same images (promote uses it to tell whether two accuracies are comparable).
    """
    joined = "\n".join(sorted(str(s) for s in sha256_column))
    return hashlib.sha256(joined.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------- figures

def read_training_curves(live_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per-epoch curves logged by `dvclive.keras.DVCLiveCallback`.

    The callback maps Keras' `accuracy`/`val_accuracy` to `train/accuracy`/`eval/accuracy`, which
    DVCLive writes to `<dir>/plots/metrics/{train,eval}/<metric>.tsv` (columns step, <metric>,
    optionally timestamp). Returns {"accuracy": {"train": [(step, value)...], "eval": [...]},
    "loss": {...}}, leaving out whatever is missing.
    """
    root = Path(live_dir) / "plots" / "metrics"
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for metric in ("accuracy", "loss"):
        for split in ("train", "eval"):
            path = root / split / f"{metric}.tsv"
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            points = [(int(r["step"]), float(r[metric])) for r in rows]
            curves.setdefault(metric, {})[split] = points
    return curves


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=_PNG_METADATA, bbox_inches="tight")
    plt.close(fig)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str],
                          path: Path) -> None:
    """Heat map of the confusion matrix with the count in each cell (up to 30 classes)."""
    m = np.asarray(matrix)
    k = len(classes)
    side = min(4 + 0.5 * k, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
           title="Confusion matrix (test split)")
    ax.set_xticklabels(classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                       **_LITERAL)
    ax.set_yticklabels(classes, **_LITERAL)
    if k <= 30:
        threshold = m.max() / 2 if m.size else 0
        for (i, j), count in np.ndenumerate(m):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > threshold else "black")
    _save(fig, path)


def plot_training_curves(curves: dict, path: Path) -> None:
    """Accuracy and loss per epoch, training and validation, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for split, label in (("train", "training"), ("eval", "validation")):
            points = curves.get(metric, {}).get(split)
            if points:
                steps, values = zip(*points)
                ax.plot([s + 1 for s in steps], values, marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend()
    _save(fig, path)


def plot_confident_errors(images: np.ndarray, titles: Sequence[str], path: Path) -> None:
    """Grid of misclassified test images, most confident first, titled true/pred (p)."""
    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "No misclassified test images", ha="center", va="center")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=9, **_LITERAL)
    fig.suptitle("Most confident errors (test split)")
    _save(fig, path)


# --------------------------------------------------------------------------- I/O edge

def predict_split(model: Any, split: Any, batch_size: int) -> np.ndarray:
    """(n, k) probabilities for every image of a cache split, one batch in memory at a time."""
    n = len(split)
    outputs = []
    for start in range(0, n, batch_size):
        batch = split.take(np.arange(start, min(n, start + batch_size)))
        outputs.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
        _logger.debug("evaluated %d/%d test images", min(n, start + batch_size), n)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


@dataclass
class Scored:
    """A model's predictions on the test split of a cache, and the metrics computed from them."""

    metrics: dict
    split: Any
    y_true: np.ndarray
    y_prob: np.ndarray


def score(model_dir: str | Path, cache_dir: str | Path, batch_size: int) -> Scored:
    """Predict the test split of the cache with the model in `model_dir`; compute its metrics.

    Used by evaluate for the candidate and by promote for the champion, so both are scored on
    the same images in the same way. metrics gets n_test, model_sha256, test_data_sha256 and
    the batch_size used.

    Raises:
        ModelDataMismatch (a ValueError): the model was trained on other classes (or another
            image size) than the cache holds.
        ValueError: the test split is empty, or batch_size is not positive.
    """
    from alexnet.cache import open_split, read_index
    from alexnet.model import MODEL_FILE, load_model  # imports TensorFlow: only when evaluating

    if batch_size < 1:
        raise ValueError("evaluate.batch_size must be positive")
    model_dir = Path(model_dir)
    model, metadata = load_model(model_dir)
    index = read_index(cache_dir)
    classes = list(index["classes"])
    if list(metadata["classes"]) != classes:
        raise ModelDataMismatch(
            f"{model_dir}: model classes {metadata['classes']} differ from the cache's classes "
            f"{classes} ({cache_dir}); evaluate a model trained on this cache")
    if int(metadata["image_size"]) != int(index["image_size"]):
        raise ModelDataMismatch(f"{model_dir}: model image_size {metadata['image_size']} differs "
                                f"from the cache's {index['image_size']} ({cache_dir})")
    split = open_split(cache_dir, "test")
    if len(split) == 0:
        raise ValueError(f"{cache_dir}: the test split is empty")
    _logger.info("evaluating %s on %d test images (batch %d)", model_dir, len(split), batch_size)
    y_prob = predict_split(model, split, batch_size)
    if y_prob.shape[1] != len(classes):
        raise ModelDataMismatch(f"{model_dir}: model outputs {y_prob.shape[1]} classes, "
                                f"metadata lists {len(classes)}")
    y_true = np.asarray(split.labels, dtype=np.int64)
    metrics = compute_metrics(y_true, y_prob, classes)
    metrics["n_test"] = metrics.pop("n")
    metrics["model_sha256"] = file_sha256(model_dir / MODEL_FILE)
    metrics["test_data_sha256"] = dataset_sha256(split.sha256)
    metrics["batch_size"] = batch_size  # promote scores the champion with the same batches
    return Scored(metrics, split, y_true, y_prob)


def evaluate(model_dir: str | Path, cache_dir: str | Path, params: EvaluateParams,
             metrics_path: str | Path, predictions_path: str | Path, figures_dir: str | Path,
             roc_path: str | Path | None = None, live_dir: str | Path | None = None) -> dict:
    """Evaluate the model in `model_dir` on the test split of the cache; write every output.

    Raises:
        ModelDataMismatch (a ValueError): the model was trained on other classes (or another
            image size) than the cache holds.
        ValueError: the test split is empty.

    Returns:
        The metrics written to `metrics_path`.
    """
    scored = score(model_dir, cache_dir, params.batch_size)
    metrics, split, y_true, y_prob = scored.metrics, scored.split, scored.y_true, scored.y_prob
    classes = metrics["classes"]
    write_json(metrics_path, metrics)
    write_csv(predictions_path, PREDICTION_FIELDS,
              prediction_rows(split.paths, y_true, y_prob, classes))
    if roc_path is not None:
        write_csv(roc_path, ROC_FIELDS, roc_points(y_true, y_prob))
    _write_figures(Path(figures_dir), metrics, split, y_true, y_prob, classes, live_dir)
    _logger.info("test accuracy %.4f, log loss %.4f -> %s", metrics["accuracy"],
                 metrics["log_loss"], metrics_path)
    return metrics


def _write_figures(figures_dir: Path, metrics: dict, split: Any, y_true: np.ndarray,
                   y_prob: np.ndarray, classes: list[str], live_dir: str | Path | None) -> None:
    figures_dir.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(metrics["confusion_matrix"], classes,
                          figures_dir / FIGURE_FILES["confusion_matrix"])
    curves = read_training_curves(live_dir) if live_dir is not None else {}
    if curves:
        plot_training_curves(curves, figures_dir / FIGURE_FILES["training_curves"])
    else:
        _logger.warning("no DVCLive training curves (dvclive dir: %s): figure skipped",
                        live_dir)
    wrong = confident_errors(y_true, y_prob)
    y_pred = y_prob.argmax(axis=1)
    images = split.take(wrong)  # only the few images shown are read from the memmap
    titles = [f"true: {classes[y_true[i]]}\npred: {classes[y_pred[i]]} ({y_prob[i, y_pred[i]]:.2f})"
              for i in wrong]
    plot_confident_errors(images, titles, figures_dir / FIGURE_FILES["confident_errors"])
