"""The promotion gate: does the candidate model replace the champion?

    alexnet promote --model-dir models/candidate --metrics reports/metrics.json \
        --champion models/champion --promotion reports/promotion.json

`decide` is pure: the first model becomes champion if its test accuracy reaches
`min_accuracy`; a later one must also beat the champion's accuracy by at least
`min_improvement`. Missing, NaN or infinite metrics, a different class list, or metrics computed
for another model.keras never promote; every reason is spelled out in `reasons`.

`promote` copies model.keras, model.json and metrics.json into the champion dir by staging a
complete copy beside it and swapping directories, so the old champion survives a crash at any
point (a crash between the two renames leaves it under `.<champion>.previous`, restored on the
next run). reports/promotion.json is always written and holds no timestamps (reproducible).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet.io import file_sha256, write_json
from alexnet.params import PromoteParams

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
           candidate_model_sha256: str | None = None) -> Decision:
    """Decide whether the candidate replaces the champion.

    Args:
        candidate_metrics: the candidate's metrics.json (None if missing).
        champion_metrics: the champion's metrics.json; None when there is no champion yet
            ({} for a champion whose metrics are unreadable: never replaced silently).
        candidate_model_sha256: sha256 of the candidate's model.keras; when given, it must match
            the `model_sha256` the metrics were computed for.
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
    if cand_classes is None or cand_classes != champ_classes:
        reasons.append(f"candidate classes {cand_classes} differ from the champion's "
                       f"{champ_classes}: accuracies are not comparable")
        ok = False
    champ = _accuracy(champion_metrics)
    if champ is None:
        reasons.append("champion metrics have no usable accuracy "
                       f"({champion_metrics.get('accuracy', 'missing')!r}); remove the champion "
                       "dir to let a new model take over")
        ok = False
    else:
        gain = cand - champ
        gain_ok = gain >= params.min_improvement - _TOLERANCE
        reasons.append(f"improvement over champion {champ:.4f} is {gain:+.4f} "
                       f"({'>=' if gain_ok else '<'} min_improvement {params.min_improvement:.4f})")
        ok = ok and gain_ok
        if candidate_metrics.get("test_data_sha256") != champion_metrics.get("test_data_sha256"):
            reasons.append("note: champion was evaluated on a different test set "
                           "(test_data_sha256 differs)")
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


def promote(model_dir: str | Path, metrics_path: str | Path, champion_dir: str | Path,
            promotion_path: str | Path, params: PromoteParams) -> Decision:
    """Gate the candidate in `model_dir`; install it as champion if it passes.

    Always writes `promotion_path`: {"promoted", "reasons", "candidate_accuracy",
    "champion_accuracy", "params", "candidate", "champion"} where candidate/champion hold the
    headline metrics (SUMMARY_KEYS) of the candidate and of the champion before this decision.
    """
    model_dir, metrics_path = Path(model_dir), Path(metrics_path)
    champion_dir = Path(champion_dir)
    _recover(champion_dir)
    # The stage's DVC output exists even before any model has passed the gate (an empty
    # directory means "no champion yet", see read_champion_metrics).
    champion_dir.mkdir(parents=True, exist_ok=True)
    candidate = _read_json(metrics_path)
    champion = read_champion_metrics(champion_dir)
    model_file = model_dir / MODEL_FILE
    missing = [str(p) for p in (model_file, model_dir / METADATA_FILE) if not p.is_file()]
    if missing:
        decision = Decision(False, [f"candidate model files missing: {', '.join(missing)}"])
    else:
        decision = decide(candidate, champion, params,
                          candidate_model_sha256=file_sha256(model_file))
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
