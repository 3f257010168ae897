"""`dvc repro` runs the whole pipeline; a second run does nothing; a param change reruns only
the stages that read it."""

import json

import pytest
import yaml

import numpy as np

from alexnet.cache import open_split
from alexnet.io import read_csv
from alexnet.sample_data import make_image
from tests.conftest import dvc_up_to_date, run, stages_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_repro_then_noop_then_one_param(workspace):
    first = run(["dvc", "repro"], workspace)
    assert stages_run(first.stdout) == ["ingest", "validate", "split", "preprocess", "train",
                                 "evaluate", "promote", "report"]
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for out in stage.get("outs", []) + stage.get("metrics", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            assert (workspace / out).exists(), out
    assert open_split(workspace / "data/cache", "train").shards[0].dtype == "uint8"
    assert (workspace / "models/champion/model.keras").is_file()

    # The plots declared in dvc.yaml render out of the box.
    for command in ("show", "diff"):
        plots = json.loads(run(["dvc", "plots", command, "--json"], workspace).stdout)
        assert set(plots["data"]) == {"Accuracy per epoch", "Loss per epoch",
                                      "Confusion matrix (test)", "ROC (test)"}
        assert not plots.get("errors"), plots["errors"]

    # The champion classifies files and folders; a corrupt file is reported, the rest classified.
    (workspace / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = sorted((workspace / "data/sample/stripes").glob("*.jpg"))[0]
    predicted = run(["alexnet", "predict", str(good), "data/sample/disks", "broken.jpg",
                     "--format", "json"], workspace, check=False)
    assert predicted.returncode == 65, predicted.stderr
    out = json.loads(predicted.stdout)
    assert len(out["results"]) == 1 + 40 and [e["file"] for e in out["errors"]] == ["broken.jpg"]
    (workspace / "broken.jpg").unlink()

    # Nothing changed: ingest runs (it reads the source folder itself, dvc.yaml), finds nothing
    # new, and nothing after it runs.
    second = run(["dvc", "repro"], workspace)
    assert stages_run(second.stdout) == ["ingest"]
    assert dvc_up_to_date(workspace)

    # data/raw changed by hand (a pack replaced, as an editor saves: same name, other bytes):
    # validate and preprocess depend on the manifest, not on data/raw (dvc.yaml), so it is
    # ingest that restores it from the source; the content is the recorded one again, and
    # nothing downstream reruns.
    [pack] = (workspace / "data/raw").glob("*.tar")
    original = pack.read_bytes()
    pack.unlink()
    pack.write_bytes(original[:1000] + b"not the recorded images" + original[1023:])
    assert "data/raw" in run(["dvc", "status"], workspace).stdout
    restored = run(["dvc", "repro"], workspace)
    assert stages_run(restored.stdout) == ["ingest"]
    assert pack.read_bytes() == original
    assert dvc_up_to_date(workspace)

    # The documented way to change a param (README, "Overrides").
    third = run(["dvc", "exp", "run", "-S", "evaluate.batch_size=64"], workspace)
    assert stages_run(third.stdout)[:2] == ["ingest", "evaluate"]  # ingest always runs (dvc.yaml)
    assert not {"validate", "split", "preprocess", "train"} & set(stages_run(third.stdout))
    assert dvc_up_to_date(workspace)

    # New labelled images arrive: only they are copied, validated and preprocessed, and no
    # image already in a split moves to another one.
    old_splits = {r["path"]: r["split"] for r in read_csv(workspace / "data/splits.csv")}
    rng = np.random.default_rng(5)
    for i in range(4):
        make_image("disks", rng).save(workspace / f"data/sample/disks/new.{i}.jpg", quality=90)
    # Up to preprocess, the last stage that reads the images (a full rerun on new images, training
    # included, is test_cache_links.py's and test_promote_gate.py's).
    fourth = run(["dvc", "repro", "preprocess"], workspace)
    assert stages_run(fourth.stdout) == ["ingest", "validate", "split", "preprocess"]
    log = fourth.stdout + fourth.stderr
    assert "4 file(s) decoded" in log and "4 image(s) decoded" in log
    assert f"{len(old_splits)} kept in its shards" in log  # the old shards were not rewritten
    assert f"({len(old_splits)} unchanged since the last run)" in log
    new_splits = {r["path"]: r["split"] for r in read_csv(workspace / "data/splits.csv")}
    assert {p: new_splits[p] for p in old_splits} == old_splits and len(new_splits) == 84


def test_raw_source_is_never_modified(workspace):
    source = workspace / "data/sample"
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    run(["dvc", "repro", "split"], workspace)
    after = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert before == after
