"""`train` deletes nothing it did not write: its kept output directories (checkpoints, DVCLive
logs) follow the rule of every other output. Only a directory carrying the pipeline's marker is
cleaned; any other non-empty one is refused with exit 78, its files left as they were."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from alexnet.errors import EXIT_CONFIG, OutputError
from alexnet.io import OUTPUT_MARKER, claim_output_dir
from flows.workspace import set_params
from tests.conftest import REPO, run


def foreign_checkpoints(path: Path) -> dict[str, str]:
    """A folder of the user's that happens to hold a state.json (of some other tool)."""
    files = {"state.json": json.dumps({"fingerprint": "someone else's", "epoch": 3}),
             "notes.txt": "keep me", "epoch-0001/ckpt.index": "not ours"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return files


def foreign_live(path: Path) -> dict[str, str]:
    """What DVCLive (resume off) would delete in a directory: params, metrics, dvc.yaml, plots."""
    files = {"params.yaml": "mine: 1\n", "metrics.json": "{}", "dvc.yaml": "stages: {}\n",
             "plots/metrics/loss.tsv": "step\tloss\n", "report.html": "<p>mine</p>"}
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return files


def assert_untouched(path: Path, files: dict[str, str]) -> None:
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == \
        sorted(files)
    assert all((path / name).read_text() == text for name, text in files.items())


def tiny_cache(cache: Path, per_split: int = 4, size: int = 67) -> None:
    """A real cache (alexnet.cache's layout) with train and val splits of a few images, so a
    guard that failed to refuse would go on to train, and to clean, as it would for real."""
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("train", "val"):
        (cache / split).mkdir(parents=True)
        name = f"{split}/images-00000.npy"
        np.save(cache / name, rng.integers(0, 255, (per_split, size, size, 3), dtype=np.uint8))
        np.save(cache / split / "labels.npy", np.arange(per_split, dtype=np.int32) % 2)
        np.save(cache / split / "sha256.npy",
                np.array([f"{split}{i:060d}" for i in range(per_split)]))
        np.save(cache / split / "paths.npy", np.array([f"{split}/{i}.jpg" for i in range(per_split)]))
        splits[split] = {"count": per_split, "shards": [name]}
    (cache / "index.json").write_text(json.dumps({
        "classes": ["a", "b"], "image_size": size, "resize": "squash", "shard_size": per_split,
        "splits": splits}))


@pytest.fixture
def ws(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy2(REPO / "params.yaml", ws / "params.yaml")
    set_params(ws, {"train.epochs": 1, "train.workers": 1, "train.batch_size": 2,
                    "preprocess.image_size": 67})
    tiny_cache(ws / "data/cache")
    return ws


@pytest.mark.parametrize("flag, make", [("--checkpoint-dir", foreign_checkpoints),
                                        ("--live-dir", foreign_live)])
def test_train_refuses_a_foreign_directory_and_deletes_nothing(ws, tmp_path, flag, make):
    mine = tmp_path / "mine"
    mine.mkdir()
    files = make(mine)
    proc = run(["alexnet", "train", flag, str(mine)], ws, check=False, timeout=300)
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    assert "not written by alexnet" in proc.stderr
    assert_untouched(mine, files)
    assert not (ws / "models").exists() or not any((ws / "models").rglob("*.keras"))


@pytest.mark.parametrize("which", ["checkpoint", "live"])
def test_worker_refuses_a_foreign_directory_itself(ws, tmp_path, which):
    # horovodrun ... python -m alexnet.distributed: the worker does not rely on the CLI's check.
    mine = tmp_path / "mine"
    mine.mkdir()
    files = (foreign_checkpoints if which == "checkpoint" else foreign_live)(mine)
    dirs = {"checkpoint": ws / "models/checkpoints", "live": ws / "dvclive", which: mine}
    proc = run([sys.executable, "-m", "alexnet.distributed", "--params", "params.yaml",
                "--cache", "data/cache", "--model-dir", "models/candidate",
                "--checkpoint-dir", str(dirs["checkpoint"]), "--live-dir", str(dirs["live"])],
               ws, check=False, timeout=300)
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-2000:]
    assert "not written by alexnet" in proc.stderr
    assert_untouched(mine, files)


def test_a_file_or_a_link_is_not_an_output_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for path in (tmp_path / "notes.txt", tmp_path / "link"):
        with pytest.raises(OutputError, match="not a directory"):
            claim_output_dir(path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not any((tmp_path / "elsewhere").iterdir())


def test_an_empty_or_marked_directory_is_claimed(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_output_dir(empty) / OUTPUT_MARKER).is_file()
    assert (claim_output_dir(tmp_path / "new/dir") / OUTPUT_MARKER).is_file()
    (empty / "state.json").write_text("{}")
    assert claim_output_dir(empty) == empty  # ours: used as it is
    assert (empty / "state.json").read_text() == "{}"


def test_launcher_reports_a_worker_refusal_as_a_config_error(ws, tmp_path):
    """A worker's 78 (here: a foreign checkpoint directory the worker refuses) stays a config
    error through the real horovodrun, not 'training failed' (65)."""
    from alexnet.params import load_params
    from alexnet.train import launch

    mine = tmp_path / "mine"
    mine.mkdir()
    files = foreign_checkpoints(mine)
    with pytest.raises(Exception) as caught:
        launch(load_params(ws / "params.yaml").train, ws / "params.yaml", ws / "data/cache",
               ws / "models/candidate", mine, ws / "dvclive")
    assert getattr(caught.value, "exit_code", None) == EXIT_CONFIG, caught.value
    assert "not written by alexnet" in str(caught.value)
    assert_untouched(mine, files)
