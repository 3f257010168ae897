"""A fresh clone has no kept twins (data/.raw.kept, data/.cache.kept: untracked), and `dvc repro`
deletes data/raw and data/cache before their stages run. So before `dvc repro` of ingest or
preprocess, the flow keeps the pulled output as the twin (tasks/stages.py), and the stage reuses
it: the first run after new data reads and decodes only the new images."""

import shutil

from PIL import Image

from alexnet.ingest import ingest
from alexnet.io import OUTPUT_MARKER
from alexnet.params import IngestParams
from tasks.stages import keep_checked_out


def image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, "JPEG")


def test_a_pulled_output_without_twin_is_kept_before_dvc_repro_removes_it(tmp_path):
    src, raw, manifest = tmp_path / "src", tmp_path / "data/raw", tmp_path / "data/manifest.csv"
    for i in range(2):
        image(src / "cats" / f"{i}.jpg", (50 + i, 0, 0))
    args = (raw, manifest, tmp_path / "reports/ingest.json", IngestParams())
    ingest(src, *args)
    shutil.rmtree(tmp_path / "data/.raw.kept")  # a fresh clone after `dvc pull`: no twin
    [pack] = raw.glob("*.tar")
    inode = pack.stat().st_ino

    assert keep_checked_out("ingest", tmp_path) == tmp_path / "data/.raw.kept"
    shutil.rmtree(raw)  # what `dvc repro` does to data/raw before ingest runs
    image(src / "cats/new.jpg", (99, 99, 0))
    ingest(src, *args)
    assert pack.stat().st_ino == inode  # linked from the twin, not written again


def test_only_a_marked_output_without_any_twin_is_kept(tmp_path):
    """Nothing to do for other stages, an absent or foreign output, or a twin already there
    (even one alexnet did not write: it is left as it is)."""
    assert keep_checked_out("train", tmp_path) is None
    assert keep_checked_out("preprocess", tmp_path) is None  # no data/cache
    cache = tmp_path / "data/cache"
    cache.mkdir(parents=True)
    (cache / "x.npy").write_bytes(b"x")
    assert keep_checked_out("preprocess", tmp_path) is None  # not written by alexnet
    (cache / OUTPUT_MARKER).write_text("")
    twin = tmp_path / "data/.cache.kept"
    twin.mkdir()
    (twin / "mine.txt").write_text("the user's")
    assert keep_checked_out("preprocess", tmp_path) is None
    assert sorted(p.name for p in twin.iterdir()) == ["mine.txt"]
    twin.rename(tmp_path / "moved")
    assert keep_checked_out("preprocess", tmp_path) == twin and (twin / "x.npy").is_file()
