"""Splits by content hash: deterministic, leak-free, and stable when data is added."""

import hashlib

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
    a = split_rows(rows(200), PARAMS)
    assert a == split_rows(rows(200), PARAMS)
    assert a != split_rows(rows(200), SplitParams(seed=1, val_fraction=0.1, test_fraction=0.2))


def test_identical_bytes_share_a_split():
    sha = "ab" * 32
    splits = {assign_split(sha, 0.1, 0.2, 42) for _ in range(3)}
    assert len(splits) == 1


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
