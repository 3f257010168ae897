"""Tests for alexnet.promote: the pure gate, and the champion swap on real files.

promote treats model.keras as opaque bytes (it copies and hashes, never loads), so candidates here
are small byte files whose sha256 the metrics name, as evaluate would write them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from alexnet.params import ParamsError, PromoteParams
from alexnet.promote import Decision, decide, install_champion, promote

CLASSES = ["cat", "dog"]
PARAMS = PromoteParams(min_accuracy=0.6, min_improvement=0.01)


def metrics(accuracy, classes=CLASSES, **extra) -> dict:
    return {"accuracy": accuracy, "log_loss": 0.5, "n_test": 100, "classes": classes,
            "test_data_sha256": "t" * 64, **extra}


# --------------------------------------------------------------------------- decide (pure)

def test_first_model_above_the_floor_becomes_champion():
    d = decide(metrics(0.7), None, PARAMS)
    assert d == Decision(True, ["candidate accuracy 0.7000 >= min_accuracy 0.6000: "
                                "first model becomes champion"])


def test_first_model_below_the_floor_is_refused():
    d = decide(metrics(0.55), None, PARAMS)
    assert not d.promote and "< min_accuracy 0.6000" in d.reasons[0]


def test_better_candidate_replaces_champion():
    d = decide(metrics(0.80), metrics(0.75), PARAMS)
    assert d.promote and d.reasons[-1] == "promoted"
    assert any("+0.0500" in r for r in d.reasons)


def test_insufficient_improvement_is_refused():
    d = decide(metrics(0.755), metrics(0.75), PARAMS)
    assert not d.promote
    assert any("+0.0050 (< min_improvement 0.0100)" in r for r in d.reasons)


def test_improvement_exactly_at_the_threshold_passes_despite_float_noise():
    assert 0.95 - 0.90 < 0.05  # the binary floating-point trap
    assert decide(metrics(0.95), metrics(0.90), PromoteParams(0.5, 0.05)).promote


def test_candidate_above_champion_but_below_floor_is_refused():
    d = decide(metrics(0.58), metrics(0.40), PARAMS)
    assert not d.promote and any("< min_accuracy" in r for r in d.reasons)


@pytest.mark.parametrize("candidate", [None, {}, {"classes": CLASSES}, metrics(math.nan),
                                       metrics(math.inf), metrics("0.9"), metrics(True)])
def test_missing_or_non_finite_candidate_metrics_never_promote(candidate):
    for champion in (None, metrics(0.1)):
        d = decide(candidate, champion, PromoteParams(0.0, -1.0))
        assert not d.promote and "unusable" in d.reasons[0]


def test_different_class_list_is_refused():
    d = decide(metrics(0.99, classes=["cat", "fox"]), metrics(0.7), PARAMS)
    assert not d.promote
    assert any("differ from the champion's" in r for r in d.reasons)


def test_champion_without_usable_accuracy_is_not_replaced_silently():
    d = decide(metrics(0.99), {}, PARAMS)
    assert not d.promote and any("champion metrics have no usable accuracy" in r
                                 for r in d.reasons)


def test_metrics_of_another_model_file_are_refused():
    d = decide(metrics(0.9, model_sha256="a" * 64), None, PARAMS, candidate_model_sha256="b" * 64)
    assert not d.promote and "another model.keras" in d.reasons[0]


def test_different_test_set_is_noted():
    d = decide(metrics(0.9), metrics(0.8, test_data_sha256="u" * 64), PARAMS)
    assert d.promote and any("different test set" in r for r in d.reasons)


def test_params_are_validated():
    with pytest.raises(ParamsError):
        PromoteParams(min_accuracy=1.5)


# --------------------------------------------------------------------------- promote (files)

def make_candidate(root: Path, name: str, accuracy, classes=CLASSES) -> tuple[Path, Path]:
    """A model dir (model.keras + model.json) and the metrics.json evaluate wrote for it."""
    model_dir = root / name
    model_dir.mkdir(parents=True)
    payload = f"weights of {name}".encode()
    (model_dir / "model.keras").write_bytes(payload)
    (model_dir / "model.json").write_text(json.dumps({"classes": classes, "image_size": 67}))
    metrics_path = root / f"{name}-metrics.json"
    metrics_path.write_text(json.dumps(metrics(
        accuracy, classes, model_sha256=hashlib.sha256(payload).hexdigest())))
    return model_dir, metrics_path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_promote_installs_first_champion_then_keeps_it_against_a_worse_one(tmp_path):
    champion, report = tmp_path / "models" / "champion", tmp_path / "reports" / "promotion.json"
    v1, m1 = make_candidate(tmp_path, "v1", 0.7)
    assert promote(v1, m1, champion, report, PARAMS).promote
    assert snapshot(champion) == {"metrics.json": m1.read_bytes(),
                                  "model.json": (v1 / "model.json").read_bytes(),
                                  "model.keras": b"weights of v1"}
    first = json.loads(report.read_text())
    assert first["promoted"] is True and first["champion"] is None
    assert first["candidate_accuracy"] == 0.7

    before = snapshot(champion)
    v2, m2 = make_candidate(tmp_path, "v2", 0.705)
    decision = promote(v2, m2, champion, report, PARAMS)
    assert not decision.promote
    assert snapshot(champion) == before  # the old champion is intact after a refusal
    out = json.loads(report.read_text())
    assert out == {"promoted": False, "reasons": decision.reasons, "candidate_accuracy": 0.705,
                   "champion_accuracy": 0.7,
                   "params": {"min_accuracy": 0.6, "min_improvement": 0.01},
                   "candidate": out["candidate"], "champion": out["champion"]}
    assert out["champion"]["accuracy"] == 0.7 and out["candidate"]["n_test"] == 100
    assert sorted(p.name for p in champion.parent.iterdir()) == ["champion"]  # no leftovers


def test_promote_replaces_champion_with_a_better_model(tmp_path):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    promote(*make_candidate(tmp_path, "v1", 0.7), champion, report, PARAMS)
    v2, m2 = make_candidate(tmp_path, "v2", 0.8)
    assert promote(v2, m2, champion, report, PARAMS).promote
    assert (champion / "model.keras").read_bytes() == b"weights of v2"
    assert json.loads((champion / "metrics.json").read_text())["accuracy"] == 0.8
    assert json.loads(report.read_text())["champion"]["accuracy"] == 0.7  # the one replaced


def test_promote_refuses_nan_metrics_and_other_classes_leaving_champion_intact(tmp_path):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    promote(*make_candidate(tmp_path, "v1", 0.7), champion, report, PARAMS)
    before = snapshot(champion)
    nan_dir, nan_metrics = make_candidate(tmp_path, "nan", math.nan)
    assert not promote(nan_dir, nan_metrics, champion, report, PARAMS).promote
    assert json.loads(report.read_text())["candidate_accuracy"] is None  # strict JSON, no NaN
    fox_dir, fox_metrics = make_candidate(tmp_path, "fox", 0.99, classes=["cat", "fox"])
    assert not promote(fox_dir, fox_metrics, champion, report, PARAMS).promote
    missing = tmp_path / "nowhere.json"
    assert not promote(fox_dir, missing, champion, report, PARAMS).promote
    assert snapshot(champion) == before


def test_promote_refuses_metrics_that_belong_to_another_model(tmp_path):
    v1, m1 = make_candidate(tmp_path, "v1", 0.9)
    (v1 / "model.keras").write_bytes(b"retrained after evaluate")
    d = promote(v1, m1, tmp_path / "champion", tmp_path / "promotion.json", PARAMS)
    assert not d.promote and not any((tmp_path / "champion").iterdir())  # no champion yet


def test_crash_mid_copy_leaves_old_champion_and_next_run_cleans_up(tmp_path):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    promote(*make_candidate(tmp_path, "v1", 0.7), champion, report, PARAMS)
    before = snapshot(champion)
    v2, _ = make_candidate(tmp_path, "v2", 0.9)
    with pytest.raises(FileNotFoundError):  # metrics vanish after model files were staged
        install_champion(v2, tmp_path / "gone.json", champion)
    assert snapshot(champion) == before
    assert (tmp_path / ".champion.staging").is_dir()
    assert promote(v2, tmp_path / "v2-metrics.json", champion, report, PARAMS).promote
    assert not (tmp_path / ".champion.staging").exists()
    assert (champion / "model.keras").read_bytes() == b"weights of v2"


def test_crash_between_renames_is_recovered(tmp_path):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    promote(*make_candidate(tmp_path, "v1", 0.7), champion, report, PARAMS)
    before = snapshot(champion)
    champion.rename(tmp_path / ".champion.previous")  # state after the first rename
    v2, m2 = make_candidate(tmp_path, "v2", 0.705)
    assert not promote(v2, m2, champion, report, PARAMS).promote  # compared with the restored one
    assert snapshot(champion) == before
    assert not (tmp_path / ".champion.previous").exists()
