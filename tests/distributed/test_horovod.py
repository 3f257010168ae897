"""Real `horovodrun -np 2 --gloo` training: synchronised ranks, faults that end cleanly, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tensorflow as tf

from alexnet.errors import EXIT_DATA, EXIT_TRANSIENT
from flows.workspace import set_params
from tests.conftest import VENV_BIN, make_workspace, run, tool_env

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A workspace whose pipeline has run up to the cache (real dvc)."""
    ws = make_workspace(tmp_path_factory.mktemp("hvd") / "ws")
    run(["dvc", "repro", "preprocess"], ws)
    return ws


def fresh_copy(cached, tmp_path, overrides):
    """The cached workspace's cache + params, with overrides, in a new directory."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(cached, ws, ignore=shutil.ignore_patterns("models", "dvclive"))
    set_params(ws, overrides)
    return ws


def rank_weights(ws, out, workers, check=True):
    """`horovodrun -np WORKERS rank_weights.py`: train, save each rank's final weights in out."""
    out.mkdir(parents=True, exist_ok=True)
    return run([str(VENV_BIN / "horovodrun"), "-np", str(workers), "-H",
                f"localhost:{workers}", "--gloo", sys.executable, str(HERE / "rank_weights.py"),
                str(ws / "params.yaml"), str(ws / "data/cache"), str(out)],
               ws, timeout=600, check=check)


def test_two_workers_end_with_identical_weights(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 2, "train.workers": 2})
    out = tmp_path / "out"
    rank_weights(ws, out, 2)
    r0, r1 = np.load(out / "rank-0.npz"), np.load(out / "rank-1.npz")
    assert len(r0.files) == 16  # 8 layers with weights x (kernel, bias)
    assert all(np.array_equal(r0[k], r1[k]) for k in r0.files)
    meta = json.loads((out / "model/model.json").read_text())
    assert meta["world_size"] == 2 and meta["classes"] == ["disks", "stripes"]
    # The learning rate as given, not scaled by the world size; the warm-up (TINY: 1 epoch).
    assert meta["learning_rate"] == 0.0001
    steps = meta["steps_per_epoch"]
    assert meta["warmup"] == {"epochs": 1, "steps": steps, "from": pytest.approx(0.0001 / steps)}
    from alexnet.model import load_model  # loads only the sha256 that model.json records
    assert load_model(out / "model")[1]["model_sha256"] == meta["model_sha256"]
    assert list((out / "checkpoints/tensorboard").rglob("events.out.tfevents.*"))  # rank 0 only


# Deterministic, no dropout, no augmentation: what is left to differ between world sizes is the
# order of float additions (threads, allreduce), far below one step's change of the weights.
# float32 pinned: `auto` is bfloat16 on a CPU with AVX512_BF16, whose rounding is far coarser.
SAME_COMPUTATION = {"train.epochs": 2, "train.deterministic": True, "train.dropout": 0.0,
                    "train.mixed_precision": "float32",
                    "train.optimizer": "sgd", "train.learning_rate": 0.01, "train.momentum": 0.9,
                    "train.warmup_epochs": 1, "train.augment.rotation": 0.0,
                    "train.augment.width_shift": 0.0, "train.augment.height_shift": 0.0,
                    "train.augment.horizontal_flip": False}


def test_two_workers_train_the_model_one_worker_trains(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, SAME_COMPUTATION)
    rank_weights(ws, tmp_path / "one", 1)
    rank_weights(ws, tmp_path / "two", 2)
    one, two = np.load(tmp_path / "one/rank-0.npz"), np.load(tmp_path / "two/rank-0.npz")
    init = fresh_init_weights(ws)
    for k in one.files:
        moved = np.abs(one[k] - init[k]).max()
        assert moved > 0, k  # training changed every layer
        assert np.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), \
            f"{k}: max difference {np.abs(one[k] - two[k]).max():.3g} (the step moved {moved:.3g})"


def fresh_init_weights(ws):
    """The initial weights training starts from (build_alexnet with train.seed)."""
    from alexnet.cache import read_index
    from alexnet.model import build_alexnet
    from alexnet.params import load_params

    p, index = load_params(ws / "params.yaml").train, read_index(ws / "data/cache")
    model = build_alexnet(len(index["classes"]), index["image_size"], p.dropout, seed=p.seed)
    return {f"arr_{i}": w for i, w in enumerate(model.get_weights())}


def test_mixed_precision_auto_trains_with_two_workers_and_is_recorded(cached, tmp_path):
    from alexnet.hardware import host_cpu_flags, resolve_precision

    ws = fresh_copy(cached, tmp_path, {"train.epochs": 1, "train.workers": 2,
                                       "train.mixed_precision": "auto"})
    run(["alexnet", "train"], ws, timeout=600)
    expected = resolve_precision("auto", host_cpu_flags(), [])  # no GPU here
    meta = json.loads((ws / "models/candidate/model.json").read_text())
    assert meta["resolved"] == {"workers": 2, "mixed_precision": expected}
    assert meta["params"]["train"]["mixed_precision"] == "auto"
    model = tf.keras.models.load_model(ws / "models/candidate/model.keras", compile=False,
                                       safe_mode=True)
    # Trained in `expected`, saved in float32: evaluate/promote/predict do not compute in the
    # training host's precision (emulated bfloat16 on a CPU without it, float16 on a CPU).
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert model.output.dtype == tf.float32


def _rank_process(parent: int, rank: int, timeout: float = 120,
                  marker: str = "alexnet.distributed") -> psutil.Process:
    """The worker of `rank` among the descendants of `parent` (never another job's worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(parent).children(recursive=True):
            try:
                if marker in " ".join(proc.cmdline()) and \
                        proc.environ().get("HOROVOD_RANK") == str(rank):
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker with rank {rank} appeared")


def _wait_for_epoch(state: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= epoch:
            return
        time.sleep(0.1)
    raise AssertionError(f"training never completed epoch {epoch}")


def test_killed_worker_fails_fast_and_rerun_resumes(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 12, "train.workers": 2})
    state = ws / "models/checkpoints/state.json"
    first = subprocess.Popen(["dvc", "repro", "train"], cwd=ws, env=tool_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epoch(state, 2, first)
    _rank_process(first.pid, 1).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    output, _ = first.communicate(timeout=300)
    assert first.returncode != 0
    assert time.monotonic() - killed_at < 240  # bounded by the Gloo/stall timeouts, not a hang
    assert f"exited with {EXIT_TRANSIENT}" in output or "a training worker died" in output
    done = json.loads(state.read_text())["epoch"]
    assert 2 <= done < 12

    second = run(["dvc", "repro", "train"], ws, timeout=600)
    assert f"resuming from epoch {done} of 12" in second.stdout + second.stderr
    meta = json.loads((ws / "models/candidate/model.json").read_text())
    assert meta["epochs_completed"] == 12 and len(meta["history"]) == 12
    curve = (ws / "dvclive/plots/metrics/eval/accuracy.tsv").read_text().splitlines()
    assert len(curve) == 1 + 12  # header + one row per epoch, across both runs


def test_run_killed_inside_the_warmup_resumes_to_the_uninterrupted_weights(cached, tmp_path):
    # One worker, deterministic, dropout on (its masks must resume too), warm-up over 3 of the 4
    # epochs: the kill lands inside the ramp, which must continue where it was.
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 4, "train.workers": 1,
                                       "train.deterministic": True, "train.warmup_epochs": 3})
    rank_weights(ws, tmp_path / "whole", 1)

    out = tmp_path / "killed"
    out.mkdir()
    state = out / "checkpoints/state.json"
    first = subprocess.Popen([str(VENV_BIN / "horovodrun"), "-np", "1", "-H", "localhost:1",
                              "--gloo", sys.executable, str(HERE / "rank_weights.py"),
                              str(ws / "params.yaml"), str(ws / "data/cache"), str(out)],
                             cwd=ws, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    worker = _rank_process(first.pid, 0, marker="rank_weights.py")
    _wait_for_epoch(state, 1, first)
    worker.send_signal(signal.SIGKILL)
    first.communicate(timeout=300)
    assert first.returncode != 0 and not (out / "rank-0.npz").exists()
    assert json.loads(state.read_text())["epoch"] in (1, 2)  # killed inside the warm-up

    done = json.loads(state.read_text())["epoch"]
    second = rank_weights(ws, out, 1).stdout
    assert f"Epoch {done}/4" not in second and f"Epoch {done + 1}/4" in second  # resumed
    whole, resumed = np.load(tmp_path / "whole/rank-0.npz"), np.load(out / "rank-0.npz")
    assert len(whole.files) == 16
    for k in whole.files:
        assert np.array_equal(whole[k], resumed[k]), k
    # The saved model holds the best epoch's weights: the same epoch, the same weights.
    meta = [json.loads((d / "model/model.json").read_text()) for d in (tmp_path / "whole", out)]
    assert meta[0]["best_epoch"] == meta[1]["best_epoch"]
    assert meta[0]["history"] == meta[1]["history"]
    models = [tf.keras.models.load_model(d / "model/model.keras", compile=False, safe_mode=True)
              for d in (tmp_path / "whole", out)]
    assert all(np.array_equal(a, b) for a, b in zip(*(m.get_weights() for m in models)))


def test_nan_loss_fails_the_stage_and_writes_no_model(cached, tmp_path):
    # Measured: SGD at lr 10 with momentum 0.9 overflows to inf/NaN within two epochs here. (A huge
    # lr alone, e.g. 1e9, does not: it kills every ReLU and the loss sits at ln 2.)
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 3, "train.optimizer": "sgd",
                                       "train.learning_rate": 10.0, "train.momentum": 0.9})
    proc = run(["alexnet", "train"], ws, check=False, timeout=600)
    assert proc.returncode == EXIT_DATA, proc.stderr[-3000:]
    assert "training diverged" in proc.stdout + proc.stderr
    assert not (ws / "models/candidate").exists()


def test_deterministic_mode_reproduces_weights(cached, tmp_path):
    weights = []
    for i in range(2):
        ws = fresh_copy(cached, tmp_path / str(i), {"train.epochs": 2, "train.workers": 1,
                                                    "train.deterministic": True})
        run(["alexnet", "train"], ws, timeout=600)
        model = tf.keras.models.load_model(ws / "models/candidate/model.keras", compile=False,
                                           safe_mode=True)
        weights.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_checkpoints_of_other_params_are_dropped(cached, tmp_path):
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 1, "train.workers": 1})
    run(["alexnet", "train"], ws, timeout=600)
    set_params(ws, {"train.epochs": 2})  # another configuration: starts over, not a resume
    second = run(["alexnet", "train"], ws, timeout=600)
    assert "resuming" not in second.stdout + second.stderr
    kept = sorted(p.name for p in (ws / "models/checkpoints").glob("epoch-*"))
    assert kept == ["epoch-0002"]



@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_alexnet_train_stops_its_workers(cached, tmp_path, sig):
    """The signal goes to `alexnet train` alone (not its group): horovodrun and both workers,
    which run in sessions of their own, end too; the checkpoint stays, no model is written."""
    ws = fresh_copy(cached, tmp_path, {"train.epochs": 12, "train.workers": 2})
    state = ws / "models/checkpoints/state.json"
    train = subprocess.Popen(["alexnet", "train"], cwd=ws, env=tool_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        _wait_for_epoch(state, 1, train)
        workers = [_rank_process(train.pid, rank) for rank in (0, 1)]
        assert all(os.getpgid(w.pid) != os.getpgid(train.pid) for w in workers)  # own groups
        tree = [psutil.Process(train.pid), *psutil.Process(train.pid).children(recursive=True)]
        train.send_signal(sig)
        t0 = time.monotonic()
        output, _ = train.communicate(timeout=60)
        gone, alive = psutil.wait_procs(tree, timeout=30 - (time.monotonic() - t0))
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    finally:
        for proc in tree[1:]:  # whatever is left of a failed test, by pid
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
            train.wait()
    assert train.returncode == 128 + sig, output[-3000:]
    assert f"training stopped by {signal.Signals(sig).name}" in output
    assert not (ws / "models/candidate/model.keras").exists()
    assert 1 <= json.loads(state.read_text())["epoch"] < 12
