"""Classify image files with a trained model, in batches, never stopping at a bad file.

    alexnet predict photos/ extra.jpg --model models/champion --format table --top-k 2

Files are decoded exactly as training decoded them (`load_rgb` + `resize` with the model's
image_size and resize policy, from model.json), so the model sees the pixels it was trained on.
Folders are searched recursively for image files. A file that cannot be read becomes an error row
naming the reason; the others are still classified, and the CLI exits non-zero if any failed.

Every run says which model and classes it uses (one log line). The champion belongs to one class
set (alexnet/promote.py): asked to predict with it while the configured data (params.yaml's
ingest.source, else the cache index) has other classes, predict refuses (exit 78) rather than
label your boots "disks". A model named with --model is used as given.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from alexnet.errors import EXIT_CONFIG, PipelineError
from alexnet.images import load_rgb, resize

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FORMATS = ("table", "json", "csv")


class ClassMismatch(PipelineError):
    """The champion was trained on other classes than the configured data has."""

    exit_code = EXIT_CONFIG


def configured_classes(params_path: Path, cache_dir: Path) -> tuple[list[str], str] | None:
    """(classes, where they come from) of the data the project is configured for: the classes in
    params.yaml's ingest.source if that folder exists, else those of the cache index; None when
    neither is there (then nothing is checked)."""
    from alexnet.errors import DataError
    from alexnet.ingest import source_classes
    from alexnet.params import ParamsError, load_params

    try:
        ingest = load_params(params_path).ingest if Path(params_path).is_file() else None
    except ParamsError as exc:
        _logger.warning("%s: not checking the model's classes against it (%s)", params_path, exc)
        ingest = None
    if ingest is not None and Path(ingest.source).is_dir():
        try:
            return (source_classes(Path(ingest.source), ingest.layout),
                    f"{params_path} ingest.source {ingest.source}")
        except (DataError, OSError) as exc:
            _logger.warning("%s: cannot list its classes (%s)", ingest.source, exc)
    index = Path(cache_dir) / "index.json"
    try:
        classes = json.loads(index.read_text()).get("classes")
    except (OSError, ValueError):
        return None
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return classes, str(index)
    return None


def check_classes(model_dir: Path, model_classes: Sequence[str],
                  configured: tuple[list[str], str] | None) -> None:
    """Raise ClassMismatch when the model's classes are not the configured data's."""
    if configured is None or sorted(configured[0]) == sorted(model_classes):
        return
    classes, where = configured
    raise ClassMismatch(
        f"{model_dir} was trained on classes {list(model_classes)}, but the configured data "
        f"({where}) has {sorted(classes)}: run `dvc repro` to train and promote a model for "
        "these classes, or pass --model DIR to predict with another model")


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict]]:
    """Files to classify, in argument order; folders expand (recursively, sorted) to image files.

    A file named explicitly is taken whatever its suffix (decoding decides); inside folders only
    IMAGE_SUFFIXES count, so .DS_Store or labels.txt are not reported as errors.

    Returns:
        (files, errors): errors for paths that do not exist and folders with no image file.
    """
    files: list[Path] = []
    errors: list[dict] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append({"file": str(path), "error": "folder holds no image files "
                               f"({', '.join(sorted(IMAGE_SUFFIXES))})"})
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"file": str(path), "error": "no such file or directory"})
    return files, errors


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def decode(path: Path, image_size: int, policy: str) -> np.ndarray:
    """The (size, size, 3) uint8 pixels of one file, exactly as alexnet.preprocess computes them
    (same JPEG draft scale too: a different decode path would shift the pixels slightly)."""
    return resize(load_rgb(path, draft_size=(image_size, image_size)), image_size, policy)


def top_k_rows(files: Sequence[Path], probs: np.ndarray, classes: Sequence[str],
               k: int) -> list[dict]:
    """Result rows {file, label, probability, top_k: [(label, p), ...]} from probabilities."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = []
    for f, p, idx in zip(files, probs, order):
        ranked = [(classes[i], round(float(p[i]), 6)) for i in idx]
        rows.append({"file": str(f), "label": ranked[0][0], "probability": ranked[0][1],
                     "top_k": ranked})
    return rows


def predict(paths: list[Path], model_dir: Path, batch_size: int = 64, top_k: int = 1,
            configured: tuple[list[str], str] | None = None) -> tuple[list[dict], list[dict]]:
    """Classify the image files in `paths` (files and folders).

    Args:
        top_k: how many ranked classes each row lists (capped at the number of classes).
        configured: (classes, where from) the model must have been trained on
            (`configured_classes`); None: any model is used as given.

    Returns:
        (results, errors): one result per decoded file, in input order; one error row
        {file, error} per path that could not be classified.

    Raises:
        FileNotFoundError / ValueError: the model dir lacks model.json or it is incomplete.
        ClassMismatch: the model's classes are not the `configured` ones.
    """
    from alexnet.model import load_model  # TensorFlow: imported only when predicting

    if batch_size < 1 or top_k < 1:
        raise ValueError("batch_size and top_k must be at least 1")
    model_dir = Path(model_dir)
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise FileNotFoundError(
            f"{model_dir}: no model yet: train and promote one with `dvc repro` (champions of "
            f"other class sets wait in {model_dir.parent / 'champions'}/), or pass --model DIR")
    model, metadata = load_model(model_dir)
    classes = list(metadata["classes"])
    size, policy = int(metadata["image_size"]), metadata.get("resize", "squash")
    _logger.info("predicting with %s (classes: %s; %d px)", model_dir, ", ".join(classes), size)
    check_classes(model_dir, classes, configured)
    k = min(top_k, len(classes))
    files, errors = expand_paths(paths)
    results: list[dict] = []
    for batch in _batches(files, batch_size):
        ok_files, pixels = [], []
        for path in batch:
            try:
                pixels.append(decode(path, size, policy))
                ok_files.append(path)
            except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's error
                errors.append({"file": str(path),
                               "error": f"cannot decode image: {type(exc).__name__}: {exc}"})
                _logger.warning("%s: cannot decode (%s)", path, exc)
        if ok_files:
            probs = np.asarray(model.predict_on_batch(np.stack(pixels)), dtype=np.float64)
            results.extend(top_k_rows(ok_files, probs, classes, k))
    _logger.info("classified %d file(s), %d error(s)", len(results), len(errors))
    return results, errors


def format_results(results: list[dict], errors: list[dict], fmt: str = "table") -> str:
    """Render results and errors for the terminal (table), or as JSON or CSV.

    json: {"results": [...], "errors": [...]} with top_k as [[label, p], ...].
    csv: file,label,probability,top_k,error; top_k as "label:p;label:p"; error rows leave
    label/probability empty.
    """
    if fmt == "json":
        return json.dumps({"results": results, "errors": errors}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, ["file", "label", "probability", "top_k", "error"],
                                lineterminator="\n")
        writer.writeheader()
        for r in results:
            writer.writerow({"file": r["file"], "label": r["label"],
                             "probability": f"{r['probability']:.6f}",
                             "top_k": ";".join(f"{lab}:{p:.6f}" for lab, p in r["top_k"]),
                             "error": ""})
        for e in errors:
            writer.writerow({"file": e["file"], "error": e["error"]})
        return out.getvalue()
    if fmt == "table":
        return _table(results, errors)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _table(results: list[dict], errors: list[dict]) -> str:
    rows: list[tuple[str, ...]] = [("FILE", "LABEL", "PROBABILITY")]
    show_top = any(len(r["top_k"]) > 1 for r in results)
    if show_top:
        rows[0] += ("TOP-K",)
    for r in results:
        row: tuple[str, ...] = (r["file"], r["label"], f"{r['probability']:.4f}")
        if show_top:
            row += (", ".join(f"{lab} {p:.4f}" for lab, p in r["top_k"]),)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"ERROR {e['file']}: {e['error']}" for e in errors]
    return "\n".join(lines) + "\n"

