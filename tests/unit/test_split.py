"""Splits by content hash: deterministic, leak-free, and stable when data is added."""

import hashlib
import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest

from alexnet.errors import DataError
from alexnet.io import read_csv, write_csv
from alexnet.params import SplitParams
from alexnet.split import assign_split, check_splits, split, split_rows

PARAMS = SplitParams(seed=42, val_fraction=0.1, test_fraction=0.2)


def rows(n, label="cat", start=0, hint=""):
    return [{"path": f"{label}/{i}.jpg", "label": label, "split_hint": hint,
             "sha256": hashlib.sha256(f"{label}{i}".encode()).hexdigest()}
            for i in range(start, start + n)]


def test_fractions_are_respected_per_class():
    data = rows(2000, "cat") + rows(2000, "dog")
    out = split_rows(data, PARAMS)
    for label in ("cat", "dog"):
        mine = [r["split"] for r in out if r["label"] == label]
        assert abs(mine.count("test") / 2000 - 0.2) < 0.03
        assert abs(mine.count("val") / 2000 - 0.1) < 0.03


def test_adding_images_never_moves_old_ones():
    old = split_rows(rows(500), PARAMS)
    new = split_rows(rows(500) + rows(50, start=500), PARAMS)
    assert new[:500] == old


def test_seed_changes_the_assignment_deterministically():
    # Deterministic means: the same in another process (another PYTHONHASHSEED, so no Python
    # hash() can creep in) and whatever the order of the rows; a pure function of the content.
    data = rows(200)
    a = {r["path"]: r["split"] for r in split_rows(data, PARAMS)}
    shuffled = data[:]
    random.Random(3).shuffle(shuffled)
    code = ("import json, sys; from alexnet.params import SplitParams; "
            "from alexnet.split import split_rows; "
            "rows = json.load(sys.stdin); "
            "print(json.dumps({r['path']: r['split'] for r in "
            "split_rows(rows, SplitParams(seed=42, val_fraction=0.1, test_fraction=0.2))}))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(shuffled), text=True,
                           capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(other.stdout) == a
    assert set(a.values()) == {"train", "val", "test"}
    b = {r["path"]: r["split"] for r in
         split_rows(data, SplitParams(seed=1, val_fraction=0.1, test_fraction=0.2))}
    assert sum(a[k] != b[k] for k in a) > 40  # another seed reshuffles a good part of them


def test_identical_bytes_share_a_split():
    # The same bytes under other names, in other folders, listed apart: one split for all copies.
    shas = [hashlib.sha256(f"img{i}".encode()).hexdigest() for i in range(300)]
    data = [{"path": f"{folder}/copy{c}-{i}.jpg", "label": "cat", "split_hint": "", "sha256": sha}
            for c, folder in enumerate(("a", "b/c", "z")) for i, sha in enumerate(shas)]
    splits = defaultdict(set)
    for row in split_rows(data, PARAMS):
        splits[row["sha256"]].add(row["split"])
    assert all(len(s) == 1 for s in splits.values())
    assert set().union(*splits.values()) == {"train", "val", "test"}  # not all in one split


def test_presplit_test_is_honoured_and_train_never_goes_to_test():
    out = split_rows(rows(300, hint="test") + rows(300, "dog", hint="train"), PARAMS)
    assert {r["split"] for r in out if r["label"] == "cat"} == {"test"}
    assert {r["split"] for r in out if r["label"] == "dog"} == {"train", "val"}


def test_leakage_and_empty_splits_are_errors():
    leak = [{"path": "a.jpg", "label": "cat", "sha256": "x", "split": "train"},
            {"path": "b.jpg", "label": "cat", "sha256": "x", "split": "test"}]
    with pytest.raises(DataError, match="b.jpg.*both train and test"):
        check_splits(leak)
    with pytest.raises(DataError, match="no images of class"):
        check_splits(split_rows(rows(1), PARAMS))  # one image cannot fill three splits


def test_split_stage_writes_splits_and_counts(tmp_path):
    validated = tmp_path / "validated.csv"
    data = rows(100, "cat") + rows(100, "dog")
    write_csv(validated, list(data[0]), data)
    summary = split(validated, tmp_path / "splits.csv", tmp_path / "split.json", PARAMS)
    written = read_csv(tmp_path / "splits.csv")
    assert len(written) == 200 and sum(summary["total"].values()) == 200
    assert set(summary["counts"]) == {"train", "val", "test"}
