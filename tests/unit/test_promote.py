"""Tests for alexnet.promote: the pure gate, and the champion swap on real files.

The file-level tests use real (tiny) Keras models and real caches: promote scores the champion
again on the current test split with alexnet.evaluate.score. Each model looks at mean colour:
red -> cat, blue -> dog, and green -> whatever its kind says (a tie, i.e. cat, by default).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from alexnet.errors import OutputError
from alexnet.evaluate import dataset_sha256, score
from alexnet.io import write_json
from alexnet.params import ParamsError, PromoteParams
from alexnet.promote import Decision, class_set_id, decide, install_champion, promote
from alexnet.model import save_model
from tests.unit.test_evaluate import BLUE, RED, SIZE, colour_image, make_cache
from tests.unit.test_evaluate import colour_model as colour_keras_model

GREEN = (0, 255, 0)

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


def test_champion_scored_on_another_test_set_is_not_compared():
    """Accuracies on two different test sets say nothing about which model is better."""
    d = decide(metrics(0.9), metrics(0.8, test_data_sha256="u" * 64), PARAMS)
    assert not d.promote and any("different test sets" in r for r in d.reasons)


def test_candidate_metrics_for_another_test_split_are_refused():
    d = decide(metrics(0.9), None, PARAMS, test_data_sha256="u" * 64)
    assert not d.promote and "another test split" in d.reasons[0]


def test_params_are_validated():
    with pytest.raises(ParamsError):
        PromoteParams(min_accuracy=1.5)


# --------------------------------------------------------------------------- promote (files)

def colour_model(model_dir: Path, classes=CLASSES, green: int | None = None,
                 constant: bool = False) -> Path:
    """test_evaluate's mean-colour model, saved in `model_dir` as training saves one."""
    model_dir.mkdir(parents=True)
    save_model(colour_keras_model(classes, SIZE, green, constant), model_dir,
               {"classes": list(classes), "image_size": SIZE, "resize": "squash"})
    return model_dir


def colour_cache(root: Path, colours_and_labels, classes=CLASSES) -> Path:
    colours, labels = zip(*colours_and_labels)
    return make_cache(root, np.stack([colour_image(c) for c in colours]), labels,
                      classes=classes)


def make_candidate(root: Path, name: str, cache: Path, classes=CLASSES,
                   **kind) -> tuple[Path, Path]:
    """A model dir and the metrics.json evaluate writes for it on `cache` (batch size 3)."""
    model_dir = colour_model(root / name, classes, **kind)
    metrics_path = root / f"{name}-metrics.json"
    write_json(metrics_path, score(model_dir, cache, 3).metrics)
    return model_dir, metrics_path


# 8 test images: the colour model gets 6 right (0.75), the green one 8 (1.0), the constant 4 (0.5).
EIGHT = [(RED, 0)] * 4 + [(BLUE, 1)] * 2 + [(GREEN, 1)] * 2


@pytest.fixture
def cache(tmp_path):
    return colour_cache(tmp_path / "data", EIGHT)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def gate(model_dir, metrics_path, champion, report, cache, params=PARAMS):
    return promote(model_dir, metrics_path, champion, report, params, cache_dir=cache)


def test_promote_installs_first_champion_then_keeps_it_against_a_worse_one(tmp_path, cache):
    champion, report = tmp_path / "models" / "champion", tmp_path / "reports" / "promotion.json"
    v1, m1 = make_candidate(tmp_path, "v1", cache)
    assert gate(v1, m1, champion, report, cache).promote
    assert snapshot(champion) == {"metrics.json": m1.read_bytes(),
                                  "model.json": (v1 / "model.json").read_bytes(),
                                  "model.keras": (v1 / "model.keras").read_bytes()}
    first = json.loads(report.read_text())
    assert first["promoted"] is True and first["champion"] is None
    assert first["candidate_accuracy"] == 0.75 and first["first_of_class_set"] is True

    before = snapshot(champion)
    v2, m2 = make_candidate(tmp_path, "v2", cache, constant=True)
    decision = gate(v2, m2, champion, report, cache)
    assert not decision.promote
    assert snapshot(champion) == before  # the old champion is intact after a refusal
    out = json.loads(report.read_text())
    assert out["promoted"] is False and out["reasons"] == decision.reasons
    assert (out["candidate_accuracy"], out["champion_accuracy"]) == (0.5, 0.75)
    assert out["champion"]["accuracy"] == 0.75 and out["candidate"]["n_test"] == 8
    assert out["first_of_class_set"] is False and out["set_aside"] is None
    assert out["test_data_sha256"] == json.loads(m2.read_text())["test_data_sha256"]
    assert sorted(p.name for p in champion.parent.iterdir()) == ["champion", "champions"]


def test_promote_replaces_champion_with_a_better_model(tmp_path, cache):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    gate(*make_candidate(tmp_path, "v1", cache), champion, report, cache)
    v2, m2 = make_candidate(tmp_path, "v2", cache, green=1)
    assert gate(v2, m2, champion, report, cache).promote
    assert (champion / "model.keras").read_bytes() == (v2 / "model.keras").read_bytes()
    assert json.loads((champion / "metrics.json").read_text())["accuracy"] == 1.0
    assert json.loads(report.read_text())["champion"]["accuracy"] == 0.75  # the one replaced


def test_promote_refuses_nan_metrics_and_other_classes_leaving_champion_intact(tmp_path, cache):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    gate(*make_candidate(tmp_path, "v1", cache), champion, report, cache)
    before = snapshot(champion)
    nan_dir, nan_metrics = make_candidate(tmp_path, "nan", cache, green=1)
    write_json(nan_metrics, {**json.loads(nan_metrics.read_text()), "accuracy": math.nan})
    assert not gate(nan_dir, nan_metrics, champion, report, cache).promote
    assert json.loads(report.read_text())["candidate_accuracy"] is None  # strict JSON, no NaN
    fox_dir, fox_metrics = make_candidate(tmp_path, "fox", cache, green=1)
    write_json(fox_metrics, {**json.loads(fox_metrics.read_text()), "classes": ["cat", "fox"]})
    assert not gate(fox_dir, fox_metrics, champion, report, cache).promote
    missing = tmp_path / "nowhere.json"
    assert not gate(fox_dir, missing, champion, report, cache).promote
    assert snapshot(champion) == before


def test_promote_refuses_metrics_that_belong_to_another_model(tmp_path, cache):
    v1, m1 = make_candidate(tmp_path, "v1", cache)
    (v1 / "model.keras").write_bytes(b"retrained after evaluate")
    d = gate(v1, m1, tmp_path / "champion", tmp_path / "promotion.json", cache)
    assert not d.promote and not any((tmp_path / "champion").iterdir())  # no champion yet


def test_crash_mid_copy_leaves_old_champion_and_next_run_cleans_up(tmp_path, cache):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    gate(*make_candidate(tmp_path, "v1", cache), champion, report, cache)
    before = snapshot(champion)
    v2, _ = make_candidate(tmp_path, "v2", cache, green=1)
    with pytest.raises(FileNotFoundError):  # metrics vanish after model files were staged
        install_champion(v2, tmp_path / "gone.json", champion)
    assert snapshot(champion) == before
    assert (tmp_path / ".champion.staging").is_dir()
    assert gate(v2, tmp_path / "v2-metrics.json", champion, report, cache).promote
    assert not (tmp_path / ".champion.staging").exists()
    assert (champion / "model.keras").read_bytes() == (v2 / "model.keras").read_bytes()


def test_crash_between_renames_is_recovered(tmp_path, cache):
    champion, report = tmp_path / "champion", tmp_path / "promotion.json"
    gate(*make_candidate(tmp_path, "v1", cache), champion, report, cache)
    before = snapshot(champion)
    champion.rename(tmp_path / ".champion.previous")  # state after the first rename
    v2, m2 = make_candidate(tmp_path, "v2", cache, constant=True)
    assert not gate(v2, m2, champion, report, cache).promote  # compared with the restored one
    assert snapshot(champion) == before
    assert not (tmp_path / ".champion.previous").exists()


# --------------------------------------------------------------------------- like with like

def test_gate_scores_the_champion_on_the_current_test_split(tmp_path, monkeypatch):
    """Champion on data v1; new images arrive and some land in test; the candidate trained on v2
    is compared with the champion's accuracy on v2's test split, not its recorded v1 figure."""
    from alexnet.cli import main

    v1_cache = colour_cache(tmp_path / "v1-data", [(RED, 0), (RED, 0), (BLUE, 1), (BLUE, 1)])
    champion, report = tmp_path / "models" / "champion", tmp_path / "reports" / "promotion.json"
    old, old_metrics = make_candidate(tmp_path, "old", v1_cache)
    assert gate(old, old_metrics, champion, report, v1_cache).promote
    assert json.loads(old_metrics.read_text())["accuracy"] == 1.0  # recorded on v1

    # v2: the same four images plus two green dogs the champion calls cats.
    v2_cache = colour_cache(tmp_path / "v2-data", [(RED, 0), (RED, 0), (BLUE, 1), (BLUE, 1),
                                              (GREEN, 1), (GREEN, 1)])
    new, new_metrics = make_candidate(tmp_path, "new", v2_cache, green=1)
    (tmp_path / "params.yaml").write_text("promote: {min_accuracy: 0.6, min_improvement: 0.01}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["promote", "--model-dir", str(new), "--metrics", str(new_metrics),
                 "--cache", str(v2_cache)]) == 0  # default champion and report paths

    out = json.loads(report.read_text())
    direct = score(old, v2_cache, 3).metrics  # the champion evaluated directly on v2's test split
    assert out["champion_accuracy"] == direct["accuracy"] == pytest.approx(4 / 6)
    assert out["champion_recorded_accuracy"] == 1.0 != out["champion_accuracy"]
    assert out["candidate_accuracy"] == 1.0 and out["promoted"] is True  # +0.33 on the same split
    assert out["test_data_sha256"] == direct["test_data_sha256"] == dataset_sha256(
        [f"{i:064x}" for i in range(6)])
    assert out["test_data_sha256"] != json.loads(old_metrics.read_text())["test_data_sha256"]
    assert out["n_test"] == 6 and out["champion"]["n_test"] == 6
    assert (champion / "model.keras").read_bytes() == (new / "model.keras").read_bytes()


# --------------------------------------------------------------------------- class-set lines

def test_a_new_class_set_starts_its_own_line_and_the_old_champion_waits(tmp_path):
    """After the demo, the user's classes get their own champion (the demo's is kept aside), and
    returning to the demo classes brings the demo's champion back."""
    demo_classes, user_classes = ["disks", "stripes"], ["boot", "tshirt"]
    demo_cache = colour_cache(tmp_path / "demo-data", [(RED, 0), (BLUE, 1)], demo_classes)
    user_cache = colour_cache(tmp_path / "user-data", [(RED, 0), (BLUE, 1), (GREEN, 1), (GREEN, 1)],
                              user_classes)
    champion, champions = tmp_path / "models/champion", tmp_path / "models/champions"
    report = tmp_path / "promotion.json"
    demo, demo_metrics = make_candidate(tmp_path, "demo", demo_cache, demo_classes)
    assert gate(demo, demo_metrics, champion, report, demo_cache).promote  # 1.0

    mine, mine_metrics = make_candidate(tmp_path, "mine", user_cache, user_classes)  # 0.5
    decision = gate(mine, mine_metrics, champion, report, user_cache,
                    PromoteParams(min_accuracy=0.5, min_improvement=0.01))
    assert decision.promote
    out = json.loads(report.read_text())
    aside = champions / class_set_id(demo_classes)
    assert out["first_of_class_set"] is True and out["champion"] is None
    assert out["class_set"] == {"id": class_set_id(user_classes), "classes": user_classes}
    assert out["set_aside"] == {"id": class_set_id(demo_classes), "classes": demo_classes,
                                "path": str(aside)}
    assert any("no champion yet for classes ['boot', 'tshirt']" in r for r in out["reasons"])
    assert (champion / "model.keras").read_bytes() == (mine / "model.keras").read_bytes()
    assert (aside / "model.keras").read_bytes() == (demo / "model.keras").read_bytes()

    # Back to the demo data: its champion returns and is what a worse demo model is gated on.
    worse, worse_metrics = make_candidate(tmp_path, "worse", demo_cache, demo_classes,
                                          constant=True)
    assert not gate(worse, worse_metrics, champion, report, demo_cache).promote
    out = json.loads(report.read_text())
    assert out["restored_from"] == str(aside) and out["champion_accuracy"] == 1.0
    assert (champion / "model.keras").read_bytes() == (demo / "model.keras").read_bytes()
    mine_aside = champions / class_set_id(user_classes)
    assert (mine_aside / "model.keras").read_bytes() == (mine / "model.keras").read_bytes()
    assert sorted(p.name for p in champions.iterdir()) == [class_set_id(user_classes)]


def test_class_set_id_is_path_safe_and_order_sensitive():
    evil = ["../../etc", "a/b"]
    assert re.fullmatch(r"[0-9a-f]{12}", class_set_id(evil))
    assert class_set_id(["a", "b"]) != class_set_id(["b", "a"])


def test_setting_a_champion_aside_never_deletes_what_is_not_a_champion(tmp_path):
    demo_cache = colour_cache(tmp_path / "demo-data", [(RED, 0), (BLUE, 1)], ["disks", "stripes"])
    user_cache = colour_cache(tmp_path / "user-data", [(RED, 0), (BLUE, 1)], ["boot", "tshirt"])
    champion, report = tmp_path / "models/champion", tmp_path / "promotion.json"
    assert gate(*make_candidate(tmp_path, "demo", demo_cache, ["disks", "stripes"]), champion,
                report, demo_cache).promote
    squatter = tmp_path / "models/champions" / class_set_id(["disks", "stripes"])
    squatter.mkdir(parents=True)
    (squatter / "notes.txt").write_text("mine")
    mine = make_candidate(tmp_path, "mine", user_cache, ["boot", "tshirt"])
    with pytest.raises(OutputError, match="refusing to replace"):
        gate(*mine, champion, report, user_cache)
    assert (squatter / "notes.txt").read_text() == "mine"
    assert (champion / "model.keras").read_bytes() == \
        (tmp_path / "demo" / "model.keras").read_bytes()
