"""params.yaml is parsed into typed blocks; typos and wrong types fail loudly."""

from pathlib import Path

import pytest
import yaml

from alexnet.params import ParamsError, apply_overrides, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_are_the_reference_defaults():
    p = load_params(REPO / "params.yaml")
    assert (p.preprocess.image_size, p.train.optimizer, p.train.learning_rate) == (227, "sgd", 0.1)
    assert (p.train.batch_size, p.train.epochs, p.train.dropout) == (128, 100, 0.5)
    a = p.train.augment
    assert (a.rotation, a.width_shift, a.height_shift, a.horizontal_flip) == (5.0, 0.1, 0.1, True)


@pytest.mark.parametrize("data, message", [
    ({"trian": {"epochs": 3}}, "Unknown params key(s): trian"),
    ({"train": {"epoch": 3}}, "train.epoch"),
    ({"train": {"augment": {"rotate": 5}}}, "train.augment.rotate"),
    ({"train": {"epochs": "3"}}, "train.epochs: expected an integer"),
    ({"train": {"epochs": True}}, "train.epochs: expected an integer"),
    ({"train": {"deterministic": "yes"}}, "expected true or false"),
    ({"train": {"optimizer": "rmsprop"}}, "'rmsprop' is not one of"),
    ({"preprocess": {"image_size": 64}}, "at least 67"),
    ({"split": {"val_fraction": 0.5, "test_fraction": 0.5}}, "sum to less than 1"),
    ({"train": {"workers": 4, "batch_size": 2}}, "global batch"),
    ({"train": {"workers": 3, "batch_size": 128}}, "must be a multiple of train.workers"),
    ({"train": {"workers": "many"}}, "train.workers: expected an integer or 'auto'"),
    ({"train": {"workers": 0}}, "train.workers must be at least 1"),
    ({"train": {"workers": 1.5}}, "train.workers: expected an integer or 'auto'"),
    ({"train": {"mixed_precision": "fp8"}}, "train.mixed_precision: expected"),
    ({"train": {"mixed_precision": 1}}, "train.mixed_precision: expected"),
])
def test_bad_params_are_rejected(data, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_params(data)


def test_auto_defaults_and_explicit_values_are_accepted():
    p = load_params(REPO / "params.yaml").train
    assert (p.workers, p.mixed_precision) == ("auto", "float32")
    for value in (True, False, "auto", "float32", "bfloat16", "float16"):
        assert parse_params({"train": {"mixed_precision": value}}).train.mixed_precision == value
    assert parse_params({"train": {"workers": 2}}).train.workers == 2


def test_numbers_are_coerced_where_safe():
    assert parse_params({"train": {"learning_rate": 1}}).train.learning_rate == 1.0


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epocs: 1\n")
    with pytest.raises(ParamsError, match=str(path)):
        load_params(path)
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")


def test_overrides_are_validated_and_do_not_mutate():
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    out = apply_overrides(data, {"train.epochs": 3, "train.augment.rotation": 0})
    assert out["train"]["epochs"] == 3 and data["train"]["epochs"] == 100
    assert parse_params(out).train.augment.rotation == 0.0
    with pytest.raises(ParamsError, match="train.epoks"):
        apply_overrides(data, {"train.epoks": 3})
