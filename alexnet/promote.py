"""The promotion gate: does the candidate model replace the champion?

    alexnet promote --model-dir models/candidate --metrics reports/metrics.json \
        --cache data/cache --champion models/champion --champions models/champions \
        --promotion reports/promotion.json

A champion belongs to a class set. `models/champion` holds the champion for the classes of the
current data (the cache's); champions of other class sets wait in `models/champions/<id>/` (id:
`class_set_id`) and come back when the data has their classes again. So training on new classes
never fights the demo's champion: the first model of a class set that reaches `min_accuracy`
becomes its champion, and promotion.json says so.

The gate compares like with like: the champion is scored again on the current test split (the same
cache and batch size as the candidate, through alexnet.evaluate.score), because new data grows the
test split and the accuracy recorded when the champion was promoted came from another one.

`decide` is pure: the first model becomes champion if its test accuracy reaches `min_accuracy`; a
later one must also beat the champion's accuracy on the same test split by at least
`min_improvement`. Missing, NaN or infinite metrics, a different class list, metrics computed for
another model.keras or another test split never promote; every reason is spelled out.

`promote` copies model.keras, model.json and metrics.json into the champion dir by staging a
complete copy beside it and swapping directories, so the old champion survives a crash at any
point (a crash between the two renames leaves it under `.<champion>.previous`, restored on the
next run). Setting a champion aside and bringing one back are single renames. promotion.json is
always written and holds no timestamps (reproducible).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet.errors import OutputError, PipelineError
from alexnet.io import file_sha256, write_json
from alexnet.params import EvaluateParams, PromoteParams

_logger = logging.getLogger(__name__)

MODEL_FILE, METADATA_FILE, METRICS_FILE = "model.keras", "model.json", "metrics.json"
CHAMPION_FILES = (MODEL_FILE, METADATA_FILE, METRICS_FILE)
# Float noise must not decide a tie: 0.95 - 0.90 is 0.0499999... in binary floating point.
_TOLERANCE = 1e-9
# The headline metrics kept (from the previous champion) in promotion.json, for the report.
SUMMARY_KEYS = ("accuracy", "log_loss", "roc_auc", "n_test", "model_sha256", "test_data_sha256")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def _accuracy(metrics: dict | None) -> float | None:
    """The finite accuracy in `metrics`, or None when missing, non-numeric, NaN or infinite."""
    value = (metrics or {}).get("accuracy")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def decide(candidate_metrics: dict | None, champion_metrics: dict | None, params: PromoteParams,
           candidate_model_sha256: str | None = None,
           test_data_sha256: str | None = None) -> Decision:
    """Decide whether the candidate replaces the champion.

    Args:
        candidate_metrics: the candidate's metrics.json (None if missing).
        champion_metrics: the champion's metrics on the same test split as the candidate's; None
            when there is no champion yet ({} for a champion that could not be scored: never
            replaced silently).
        candidate_model_sha256: sha256 of the candidate's model.keras; when given, it must match
            the `model_sha256` the metrics were computed for.
        test_data_sha256: the current test split's hash; when given, the candidate's metrics
            must have been computed on it.
    """
    cand = _accuracy(candidate_metrics)
    if cand is None:
        value = (candidate_metrics or {}).get("accuracy", "missing")
        return Decision(False, [f"candidate test accuracy is unusable ({value!r}): not promoted"])
    if candidate_model_sha256 is not None and \
            candidate_metrics.get("model_sha256") != candidate_model_sha256:
        return Decision(False, ["candidate metrics were computed for another model.keras "
                                f"(model_sha256 {candidate_metrics.get('model_sha256')!r}, model "
                                f"file {candidate_model_sha256}): re-run evaluate; not promoted"])
    if test_data_sha256 is not None and \
            candidate_metrics.get("test_data_sha256") != test_data_sha256:
        return Decision(False, ["candidate metrics were computed on another test split "
                                f"(test_data_sha256 {candidate_metrics.get('test_data_sha256')!r},"
                                f" current {test_data_sha256}): re-run evaluate; not promoted"])
    reasons = []
    floor_ok = cand >= params.min_accuracy - _TOLERANCE
    floor = f"candidate accuracy {cand:.4f} {'>=' if floor_ok else '<'} min_accuracy " \
            f"{params.min_accuracy:.4f}"
    if champion_metrics is None:
        verdict = "first model becomes champion" if floor_ok else "not promoted"
        return Decision(floor_ok, [f"{floor}: {verdict}"])

    reasons.append(floor)
    ok = floor_ok
    cand_classes, champ_classes = candidate_metrics.get("classes"), champion_metrics.get("classes")
    if champion_metrics and (cand_classes is None or cand_classes != champ_classes):
        reasons.append(f"candidate classes {cand_classes} differ from the champion's "
                       f"{champ_classes}: accuracies are not comparable")
        ok = False
    champ = _accuracy(champion_metrics)
    if champ is None:
        reasons.append("champion metrics have no usable accuracy "
                       f"({champion_metrics.get('accuracy', 'missing')!r}); remove the champion "
                       "dir to let a new model take over")
        ok = False
    elif candidate_metrics.get("test_data_sha256") != champion_metrics.get("test_data_sha256"):
        reasons.append("champion and candidate were scored on different test sets "
                       "(test_data_sha256 differs): accuracies are not comparable")
        ok = False
    else:
        gain = cand - champ
        gain_ok = gain >= params.min_improvement - _TOLERANCE
        reasons.append(f"improvement over champion {champ:.4f} (on the same test split) is "
                       f"{gain:+.4f} ({'>=' if gain_ok else '<'} min_improvement "
                       f"{params.min_improvement:.4f})")
        ok = ok and gain_ok
    reasons.append("promoted" if ok else "not promoted")
    return Decision(ok, reasons)


# --------------------------------------------------------------------------- I/O edge

def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _logger.warning("%s: unreadable (%s)", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def read_champion_metrics(champion_dir: Path) -> dict | None:
    """The champion's metrics; None if there is no champion, {} if its metrics are unreadable."""
    if not champion_dir.is_dir() or not any(champion_dir.iterdir()):
        return None
    return _read_json(champion_dir / METRICS_FILE) or {}


def _recover(champion_dir: Path) -> None:
    """Undo a swap interrupted between its two renames; drop a stale staging dir."""
    previous = _sibling(champion_dir, "previous")
    if previous.is_dir():
        if champion_dir.exists():
            shutil.rmtree(previous)
        else:
            _logger.warning("restoring the champion from %s (an earlier promote was cut short)",
                            previous)
            os.replace(previous, champion_dir)
    shutil.rmtree(_sibling(champion_dir, "staging"), ignore_errors=True)


def _sibling(champion_dir: Path, tag: str) -> Path:
    return champion_dir.parent / f".{champion_dir.name}.{tag}"


def install_champion(model_dir: Path, metrics_path: Path, champion_dir: Path) -> None:
    """Copy the candidate's files into `champion_dir`, replacing it as a whole.

    A complete, fsynced copy is staged beside the champion; then champion -> .previous and
    staging -> champion are renamed (each atomic). The old champion is always either in place or
    under .previous, which `_recover` puts back.
    """
    staging, previous = _sibling(champion_dir, "staging"), _sibling(champion_dir, "previous")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    sources = {MODEL_FILE: model_dir / MODEL_FILE, METADATA_FILE: model_dir / METADATA_FILE,
               METRICS_FILE: metrics_path}
    for name, src in sources.items():
        shutil.copyfile(src, staging / name)
        with open(staging / name, "rb") as fh:
            os.fsync(fh.fileno())
    if champion_dir.exists():
        os.replace(champion_dir, previous)
    os.replace(staging, champion_dir)
    shutil.rmtree(previous, ignore_errors=True)


def class_set_id(classes: list[str]) -> str:
    """A short id for a list of class names (in model output order), safe as a folder name:
    class names come from the user's folders and never become part of a path."""
    return hashlib.sha256("\n".join(classes).encode("utf-8")).hexdigest()[:12]


def _champion_classes(champion_dir: Path) -> list[str] | None:
    """The class names the champion in `champion_dir` was trained on (its model.json), or None
    when there is no champion or its metadata names none."""
    if not champion_dir.is_dir() or not any(champion_dir.iterdir()):
        return None
    classes = (_read_json(champion_dir / METADATA_FILE) or {}).get("classes")
    ok = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
    return classes if ok else None


def _move_dir(src: Path, dst: Path) -> None:
    """Rename the champion `src` to `dst`, replacing an earlier champion of the same classes
    there; anything else at `dst` is not the pipeline's to delete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and _champion_classes(dst) != _champion_classes(src):
        raise OutputError(f"{dst}: refusing to replace it: it does not hold a champion of "
                          f"classes {_champion_classes(src)}; move it away yourself")
    if dst.exists():
        stale = _sibling(dst, "stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(dst, stale)
        os.replace(src, dst)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(src, dst)


def select_line(champion_dir: Path, champions_dir: Path, classes: list[str]) -> dict:
    """Make `champion_dir` hold the champion for `classes` (or nothing, if that class set has none).

    A champion of other classes is set aside into champions_dir/<its class_set_id>; one for
    `classes` kept there earlier is brought back. Each move is one rename, so a crash leaves
    every champion in one of the two places, found again by the next run.

    Returns:
        {"set_aside": {id, classes, path} | None, "restored_from": path | None}
    """
    moved: dict[str, Any] = {"set_aside": None, "restored_from": None}
    current = _champion_classes(champion_dir)
    if current is not None and current != classes:
        aside = champions_dir / class_set_id(current)
        _move_dir(champion_dir, aside)
        moved["set_aside"] = {"id": class_set_id(current), "classes": current, "path": str(aside)}
        _logger.info("champion for classes %s set aside in %s", current, aside)
    champion_dir.mkdir(parents=True, exist_ok=True)
    kept = champions_dir / class_set_id(classes)
    if not any(champion_dir.iterdir()) and _champion_classes(kept) == classes:
        champion_dir.rmdir()
        os.replace(kept, champion_dir)
        moved["restored_from"] = str(kept)
        _logger.info("champion for classes %s brought back from %s", classes, kept)
    return moved


def score_champion(champion_dir: Path, cache_dir: Path, batch_size: int) -> tuple[dict, str | None]:
    """The champion's metrics on the current test split, scored as evaluate scores the candidate.

    Returns:
        (metrics, None), or ({}, reason) when it cannot be scored (e.g. another image size):
        such a champion is never replaced silently.
    """
    from alexnet.evaluate import score  # TensorFlow: imported only when there is a champion

    try:
        return score(champion_dir, cache_dir, batch_size).metrics, None
    except (OSError, ValueError, KeyError, PipelineError) as exc:  # e.g. a tampered model file
        return {}, (f"the champion in {champion_dir} cannot be scored on the current test split "
                    f"({exc}); move it aside to let a new model take over")


def promote(model_dir: str | Path, metrics_path: str | Path, champion_dir: str | Path,
            promotion_path: str | Path, params: PromoteParams, cache_dir: str | Path,
            champions_dir: str | Path | None = None) -> Decision:
    """Gate the candidate in `model_dir` against the champion of its class set, both scored on
    the current test split of `cache_dir`; install the candidate as champion if it passes.

    Args:
        champions_dir: where champions of other class sets are kept (default: a `champions`
            folder beside `champion_dir`).

    Always writes `promotion_path`: promoted, reasons, candidate_accuracy, champion_accuracy
    (on the current test split), champion_recorded_accuracy (from its own metrics.json),
    test_data_sha256 and n_test of the split both were scored on, class_set {id, classes},
    first_of_class_set, set_aside, restored_from, params, and the headline metrics
    (SUMMARY_KEYS) of the candidate and of the champion as scored here.
    """
    from alexnet.cache import open_split, read_index
    from alexnet.evaluate import dataset_sha256

    model_dir, metrics_path = Path(model_dir), Path(metrics_path)
    champion_dir, cache_dir = Path(champion_dir), Path(cache_dir)
    champions_dir = Path(champions_dir) if champions_dir else champion_dir.parent / "champions"
    _recover(champion_dir)
    # Both are DVC outputs: they exist even before any model has passed the gate (an empty
    # directory means "no champion yet", see read_champion_metrics).
    champions_dir.mkdir(parents=True, exist_ok=True)
    classes = list(read_index(cache_dir)["classes"])
    test_split = open_split(cache_dir, "test")  # memory-mapped: only the hash column is read
    test_sha = dataset_sha256(test_split.sha256)
    line = select_line(champion_dir, champions_dir, classes)
    candidate = _read_json(metrics_path)
    recorded = read_champion_metrics(champion_dir)
    reasons: list[str] = []
    champion = None
    if recorded is not None:
        batch = (candidate or {}).get("batch_size")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            batch = EvaluateParams().batch_size
        champion, problem = score_champion(champion_dir, cache_dir, batch)
        if problem:
            reasons.append(problem)
    else:
        reasons.append(f"no champion yet for classes {classes} (class set "
                       f"{class_set_id(classes)}): the first model to pass the gate starts "
                       "their line")
    if line["set_aside"]:
        reasons.append(f"the champion for classes {line['set_aside']['classes']} was set aside "
                       f"in {line['set_aside']['path']}; it comes back when the data has those "
                       "classes again")
    model_file = model_dir / MODEL_FILE
    missing = [str(p) for p in (model_file, model_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        decision = Decision(False, [f"candidate model files missing: {', '.join(missing)}"])
    else:
        decision = decide(candidate, champion, params, file_sha256(model_file), test_sha)
    decision = Decision(decision.promote, reasons + decision.reasons)
    if decision.promote:
        install_champion(model_dir, metrics_path, champion_dir)
        _logger.info("promoted %s to %s", model_dir, champion_dir)
    else:
        _logger.info("not promoted: %s", "; ".join(decision.reasons))
    write_json(promotion_path, {
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "candidate_accuracy": _accuracy(candidate),
        "champion_accuracy": _accuracy(champion),
        "champion_recorded_accuracy": _accuracy(recorded),
        "test_data_sha256": test_sha,
        "n_test": len(test_split),
        "class_set": {"id": class_set_id(classes), "classes": classes},
        "first_of_class_set": recorded is None,
        "set_aside": line["set_aside"],
        "restored_from": line["restored_from"],
        "params": {"min_accuracy": params.min_accuracy, "min_improvement": params.min_improvement},
        "candidate": _summary(candidate),
        "champion": _summary(champion),
    })
    return decision


def _summary(metrics: dict | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {k: _finite_or_none(metrics.get(k)) for k in SUMMARY_KEYS if k in metrics}


def _finite_or_none(value: Any) -> Any:
    # promotion.json must stay strict JSON (DVC and browsers reject NaN).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
