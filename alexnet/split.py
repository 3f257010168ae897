"""Train/val/test split by content hash: no leakage, stable as data grows.

Each image's split is a pure function of its sha256, the seed and the fractions
(`assign_split`), so:
  * identical bytes always land in the same split (a duplicate can never be in train and test);
  * adding new images never moves an existing one (yesterday's test images stay out of
    today's training set when retraining on new data);
  * each class is split independently, so every split holds ~the configured share of each class.
A test split given by the source (a pre-split layout) is honoured; its train part is divided into
train and val by the same rule.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

from alexnet.errors import DataError
from alexnet.io import read_csv, write_csv, write_json
from alexnet.params import SplitParams

_logger = logging.getLogger(__name__)
SPLIT_COLUMNS = ("path", "label", "sha256", "split")


def hash_unit(sha256: str, seed: int) -> float:
    """Map (content hash, seed) to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(sha256: str, val_fraction: float, test_fraction: float, seed: int,
                 given: str = "") -> str:
    """The split of one image: "train", "val" or "test".

    `given` is the source's own split ("train"/"test", or "" when the source is not pre-split).
    A given test image stays in test; a given train image never goes to test.
    """
    u = hash_unit(sha256, seed)
    if given == "test":
        return "test"
    if given == "train":
        # Rescale so val keeps its share of the training data.
        return "val" if u < val_fraction / (1 - test_fraction) else "train"
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_rows(rows: list[dict[str, str]], params: SplitParams) -> list[dict[str, str]]:
    """Assign every validated row a split; rows keep their order."""
    out = []
    for row in rows:
        split = assign_split(row["sha256"], params.val_fraction, params.test_fraction,
                             params.seed, row.get("split_hint", ""))
        out.append({"path": row["path"], "label": row["label"], "sha256": row["sha256"],
                    "split": split})
    return out


def check_splits(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Class counts per split; raises DataError on leakage or an empty split/class."""
    seen: dict[str, str] = {}
    for row in rows:
        other = seen.setdefault(row["sha256"], row["split"])
        if other != row["split"]:
            raise DataError(f"{row['path']}: the same image (sha256 {row['sha256'][:12]}...) is in "
                            f"both {other} and {row['split']}")
    counts = Counter((r["split"], r["label"]) for r in rows)
    classes = sorted({r["label"] for r in rows})
    table = {s: {c: counts[(s, c)] for c in classes} for s in ("train", "val", "test")}
    for split, per_class in table.items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            raise DataError(f"split {split!r} has no images of class(es) {', '.join(empty)}: "
                            f"add images or change split fractions in params.yaml")
    return table


def split(validated_path: Path, splits_path: Path, summary_path: Path, params: SplitParams) -> dict:
    """Read the validated manifest, write data/splits.csv and reports/split.json."""
    rows = split_rows(read_csv(validated_path), params)
    table = check_splits(rows)
    write_csv(splits_path, SPLIT_COLUMNS, sorted(rows, key=lambda r: r["path"]))
    summary = {"counts": table, "total": {s: sum(c.values()) for s, c in table.items()},
               "seed": params.seed}
    write_json(summary_path, summary)
    _logger.info("split: %s", ", ".join(f"{s} {n}" for s, n in summary["total"].items()))
    return summary
