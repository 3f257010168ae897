"""The worker's resume state, without horovodrun: checkpoints, early stopping, warm-up."""

import json

import numpy as np
import pytest
import tensorflow as tf

from alexnet.distributed import (BEST_WEIGHTS, STATE_FILE, EpochCheckpoint, LinearWarmup,
                                 ResumedEarlyStopping, read_state)

# val_accuracy per epoch: best at epoch 2 (0.7), then 3 epochs without improvement.
CURVE = [0.5, 0.7, 0.6, 0.65, 0.6, 0.9, 0.95]


def tiny_model():
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def epochs(model, callbacks, start, curve):
    """Drive callbacks as Model.fit does, from epoch `start`; returns the epochs run."""
    for cb in callbacks:
        cb.set_model(model)
        cb.on_train_begin()
    model.stop_training = False
    ran = []
    for epoch in range(start, len(curve)):
        for cb in callbacks:
            cb.on_epoch_end(epoch, {"val_accuracy": curve[epoch]})
        ran.append(epoch)
        if model.stop_training:
            break
    return ran


def run(tmp_path, start=0, stop_after=None, curve=CURVE, patience=3):
    """One run of early stopping + checkpointing; `stop_after` epochs simulates a kill."""
    model = tiny_model()
    state = read_state(tmp_path, "fp") or {"fingerprint": "fp", "epoch": 0}
    ckpt = tf.train.Checkpoint(model=model)
    callbacks = [ResumedEarlyStopping(state, monitor="val_accuracy", patience=patience),
                 EpochCheckpoint(tmp_path, ckpt, "val_accuracy", state)]
    return epochs(model, callbacks, start, curve[:stop_after] if stop_after else curve)


def test_early_stopping_counts_on_across_a_resume(tmp_path):
    whole = run(tmp_path / "whole")
    assert whole == [0, 1, 2, 3, 4]  # 3 epochs after the best one (epoch index 1)
    (tmp_path / "resumed").mkdir()
    first = run(tmp_path / "resumed", stop_after=4)  # killed after 4 epochs
    state = json.loads((tmp_path / "resumed" / STATE_FILE).read_text())
    assert first == [0, 1, 2, 3] and state["epoch"] == 4 and not state["stopped_early"]
    second = run(tmp_path / "resumed", start=state["epoch"])
    assert first + second == whole  # a fresh EarlyStopping would train on to epoch index 6
    final = json.loads((tmp_path / "resumed" / STATE_FILE).read_text())
    assert final["stopped_early"] and final["best_epoch"] == 2 and final["epoch"] == 5


def test_best_weights_live_in_the_epoch_checkpoint(tmp_path):
    (tmp_path / "ck").mkdir()
    run(tmp_path / "ck", patience=10)
    state = json.loads((tmp_path / "ck" / STATE_FILE).read_text())
    folders = sorted(p.name for p in (tmp_path / "ck").glob("epoch-*"))
    assert folders == ["epoch-0007"] and state["checkpoint"].startswith("epoch-0007/")
    assert (tmp_path / "ck/epoch-0007" / BEST_WEIGHTS).is_file()
    assert not (tmp_path / "ck" / BEST_WEIGHTS).exists()  # no best file outside a checkpoint


def test_warmup_ramps_linearly_then_holds():
    schedule = LinearWarmup(0.1, warmup_steps=4)
    lrs = [float(schedule(step)) for step in range(6)]
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    again = tf.keras.optimizers.schedules.deserialize(
        tf.keras.optimizers.schedules.serialize(schedule))
    assert float(again(1)) == pytest.approx(0.05)


def test_a_checkpoint_is_valid_for_what_auto_resolved_to(tmp_path):
    """`auto` resolves per host: a checkpoint trained in bfloat16 (or by 2 workers) must not be
    resumed by a run whose `auto` resolves to float32 (or 1 worker), and is resumed by the same
    settings given explicitly."""
    from alexnet.cache import INDEX
    from alexnet.distributed import checkpoint_params, fingerprint
    from alexnet.params import TrainParams

    (tmp_path / INDEX).write_text(json.dumps({"classes": ["a", "b"], "image_size": 67}))
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        np.save(tmp_path / split / "sha256.npy", np.array(["0" * 64, "1" * 64]))
    auto = TrainParams(workers="auto", mixed_precision="auto")

    def fp(p, size, precision):
        return fingerprint(checkpoint_params(p, size, precision), tmp_path)

    assert fp(auto, 1, "bfloat16") != fp(auto, 1, "float32")
    assert fp(auto, 1, "bfloat16") != fp(auto, 2, "bfloat16")
    assert fp(auto, 1, "bfloat16") == fp(TrainParams(workers=1, mixed_precision="bfloat16"), 1,
                                          "bfloat16")


def _report(rank, host, precision):
    return {"rank": rank, "host": host, "machine": host, "precision": precision}


def test_every_rank_trains_in_rank_0s_precision():
    """`auto` resolves per host; the ranks must not train in different precisions (fp16 loss
    scaling on some ranks only), and rank 0's is the one the checkpoint and model.json record."""
    from alexnet.distributed import agreed_precision

    same = [_report(0, "a", "bfloat16"), _report(1, "a", "bfloat16")]
    assert agreed_precision(same) == ("bfloat16", None)
    mixed = [_report(2, "gpu2", "float16"), _report(0, "cpu1", "bfloat16"),
             _report(1, "cpu1", "bfloat16"), _report(3, "gpu2", "float16")]
    precision, warning = agreed_precision(mixed)
    assert precision == "bfloat16"
    assert "host gpu2 (ranks 2, 3)" in warning and "float16" in warning
    assert "host cpu1 (rank 0)" in warning
    assert agreed_precision(list(reversed(mixed)))[0] == "bfloat16"  # rank 0's, in any order


def test_the_saved_model_is_float32_whatever_the_training_policy():
    """The final model is built under float32: loaded for evaluate/promote/predict, it must not
    compute in the training host's precision (emulated bf16 elsewhere, fp16 on a CPU)."""
    from alexnet.distributed import float32_policy
    from alexnet.model import build_alexnet

    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with float32_policy():
            model = build_alexnet(2, 67, 0.5)
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # restored
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
