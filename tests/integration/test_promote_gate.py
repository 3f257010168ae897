"""The real pipeline (`dvc repro`, tiny settings, one worker): when new images arrive and some land
in the test split, the gate compares the candidate with the champion's accuracy on the new test
split, not with the accuracy recorded when the champion was promoted."""

import json
import shutil

import pytest

from alexnet.evaluate import score
from alexnet.io import file_sha256
from alexnet.params import load_params
from alexnet.predict import predict
from alexnet.sample_data import generate_sample_data
from alexnet.split import assign_split
from tests.conftest import dvc_up_to_date, make_workspace, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gate_scores_the_champion_on_the_grown_test_split(tmp_path):
    ws = make_workspace(tmp_path / "ws", {"train.workers": 1})
    run(["dvc", "repro"], ws)
    first = json.loads((ws / "reports/promotion.json").read_text())
    assert first["promoted"] is True and first["first_of_class_set"] is True
    champion_v1 = tmp_path / "champion-v1"
    shutil.copytree(ws / "models/champion", champion_v1)
    recorded = json.loads((champion_v1 / "metrics.json").read_text())

    # New images arrive. Those the split sends to test are filed under the class the champion
    # does not predict for them, so its accuracy on the grown test split must change.
    params = load_params(ws / "params.yaml")
    extra = tmp_path / "extra"
    generate_sample_data(extra, per_class=15, seed=1)
    files = sorted(extra.glob("*/*.jpg"))
    results, errors = predict(files, champion_v1)
    assert not errors
    new_in_test = 0
    for path, row in zip(files, results):
        label = path.parent.name
        split = assign_split(file_sha256(path), params.split.val_fraction,
                             params.split.test_fraction, params.split.seed)
        if split == "test":
            label = next(c for c in recorded["classes"] if c != row["label"])
            new_in_test += 1
        shutil.copy(path, ws / "data/sample" / label / f"new.{path.parent.name}.{path.name}")
    assert new_in_test > 0

    run(["dvc", "repro"], ws)  # retrains on v2; promote reruns because data/cache changed
    out = json.loads((ws / "reports/promotion.json").read_text())
    candidate = json.loads((ws / "reports/metrics.json").read_text())
    direct = score(champion_v1, ws / "data/cache", params.evaluate.batch_size).metrics
    assert direct["model_sha256"] == recorded["model_sha256"]
    assert out["champion_accuracy"] == direct["accuracy"]
    assert out["champion_recorded_accuracy"] == recorded["accuracy"] != out["champion_accuracy"]
    assert out["test_data_sha256"] == direct["test_data_sha256"] == candidate["test_data_sha256"]
    assert out["test_data_sha256"] != recorded["test_data_sha256"]
    assert out["n_test"] == recorded["n_test"] + new_in_test == candidate["n_test"]
    assert out["first_of_class_set"] is False and out["set_aside"] is None
    assert dvc_up_to_date(ws)
