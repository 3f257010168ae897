"""Stored state follows the code: alexnet.fingerprint, and the reuse it guards in validate's
verdict memo and ingest's hard links. Code changes are real edits of a copy of the package, run
in a subprocess with PYTHONPATH pointing at the copy (as an editable install or PYTHONPATH would
make it the code that runs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from alexnet.fingerprint import code_digest, fingerprint, module_closure, module_file
from alexnet.ingest import MANIFEST_COLUMNS
from alexnet.io import read_csv, write_csv
from alexnet.params import IngestParams, ValidateParams
from alexnet.validate import validate

from tests.unit.corpus import pack_images

REPO = Path(__file__).resolve().parents[2]


def code_copy(tmp_path: Path) -> Path:
    """A copy of the alexnet package, importable with PYTHONPATH=<returned path>."""
    root = tmp_path / "code"
    shutil.copytree(REPO / "alexnet", root / "alexnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(path: Path) -> None:
    """Change the code of a module (add a function; what it computes stays the same)."""
    path.write_text(path.read_text() + "\n\ndef _added_by_test():\n    return 1\n")


def python(code: Path, args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_closure_follows_lazy_imports_and_subprocess_workers():
    evaluate = module_closure("alexnet.evaluate")
    assert {"alexnet.model", "alexnet.cache", "alexnet"} <= set(evaluate)  # imported in a function
    assert "alexnet.distributed" in module_closure("alexnet.train")  # `python -m alexnet.distributed`
    assert all(name.split(".")[0] == "alexnet" for name in module_closure("alexnet.distributed"))
    assert set(module_closure("flows.check_new_data")) >= {"flows", "alexnet.io", "alexnet.params"}
    assert module_file("alexnet.images") == REPO / "alexnet/images.py"


def test_fingerprint_changes_with_params_and_inputs():
    base = fingerprint("alexnet.validate", ValidateParams())
    assert base == fingerprint("alexnet.validate", ValidateParams())
    assert base != fingerprint("alexnet.validate", ValidateParams(min_side=33))
    assert base != fingerprint("alexnet.validate", ValidateParams(), inputs={"a": "1"})
    assert base != fingerprint("alexnet.split", ValidateParams())  # other code


def test_code_digest_hashes_the_files_that_run_not_the_cwd(tmp_path):
    code = code_copy(tmp_path)
    digest = ["-c", "import sys; from alexnet.fingerprint import code_digest; "
              "print(code_digest(sys.argv[1]))"]
    before = python(code, [*digest, "alexnet.preprocess"], cwd=tmp_path).strip()
    assert before == code_digest("alexnet.preprocess")  # a copy of the same files
    edit(code / "alexnet/split.py")  # not imported by preprocess
    assert python(code, [*digest, "alexnet.preprocess"], cwd=tmp_path).strip() == before
    edit(code / "alexnet/images.py")  # imported by preprocess
    elsewhere = tmp_path / "elsewhere"  # a working directory without the package
    elsewhere.mkdir()
    assert python(code, [*digest, "alexnet.preprocess"], cwd=elsewhere).strip() != before


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 40), colour).save(path, "JPEG")


def _params_file(tmp_path: Path, source: str) -> Path:
    params = REPO / "params.yaml"
    path = tmp_path / "params.yaml"
    path.write_text(params.read_text().replace("source: data/sample", f"source: {source}", 1))
    return path


def test_ingest_reuse_does_not_survive_a_code_change(tmp_path):
    code = code_copy(tmp_path)
    for i in range(3):
        _image(tmp_path / "src/cats" / f"{i}.jpg", (60 + 60 * i, 0, 0))
        _image(tmp_path / "src/dogs" / f"{i}.jpg", (0, 60 + 60 * i, 0))
    params = _params_file(tmp_path, "src")
    ingest = ["-m", "alexnet.cli", "ingest", "--params", str(params), "--raw", "raw",
              "--manifest", "manifest.csv", "--summary", "ingest.json"]
    python(code, ingest, cwd=tmp_path)
    assert "(6 unchanged since the last run)" in python(code, ingest, cwd=tmp_path)
    edit(code / "alexnet/io.py")  # imported by ingest: the copies may be made differently now
    assert "(0 unchanged since the last run)" in python(code, ingest, cwd=tmp_path)
    assert "(6 unchanged since the last run)" in python(code, ingest, cwd=tmp_path)
    # Other params (a copy of the folder, same sizes and mtimes): nothing reused either.
    shutil.copytree(tmp_path / "src", tmp_path / "src2")
    ingest[4] = str(_params_file(tmp_path, "src2"))
    assert "(0 unchanged since the last run)" in python(code, ingest, cwd=tmp_path)


def _validate_inputs(tmp_path: Path) -> None:
    images = {}
    for i in range(3):
        for label, colour in (("a", (60 + 60 * i, 0, 0)), ("b", (0, 60 + 60 * i, 0))):
            _image(tmp_path / "img" / label / f"{i}.jpg", colour)
            images[f"{label}/{i}.jpg"] = (tmp_path / "img" / label / f"{i}.jpg").read_bytes()
    write_csv(tmp_path / "manifest.csv", MANIFEST_COLUMNS, pack_images(tmp_path / "raw", images))


def test_validate_memo_does_not_survive_a_code_change(tmp_path):
    code = code_copy(tmp_path)
    _validate_inputs(tmp_path)
    params = _params_file(tmp_path, "src")
    params.write_text(params.read_text().replace("min_per_class: 10", "min_per_class: 1"))
    cmd = ["-m", "alexnet.cli", "validate", "--params", str(params), "--raw", "raw",
           "--manifest", "manifest.csv", "--validated", "validated.csv", "--quarantine",
           "quarantine.csv", "--summary", "validation.json", "--verdicts", "verdicts.csv",
           "--workers", "1"]
    assert "6 file(s) decoded, 0 verdict(s) reused" in python(code, cmd, cwd=tmp_path)
    assert "0 file(s) decoded, 6 verdict(s) reused" in python(code, cmd, cwd=tmp_path)
    edit(code / "alexnet/images.py")  # validate decodes through images.load_rgb
    assert "6 file(s) decoded, 0 verdict(s) reused" in python(code, cmd, cwd=tmp_path)
    assert "0 file(s) decoded, 6 verdict(s) reused" in python(code, cmd, cwd=tmp_path)


def test_a_memo_of_the_old_format_is_stale_not_an_error(tmp_path, caplog):
    _validate_inputs(tmp_path)
    memo = tmp_path / "verdicts.csv"
    # The memo as written before fingerprints: a "params" column, no "fingerprint".
    write_csv(memo, ["sha256", "suffix", "params", "ok", "reason", "detail", "width", "height",
                     "format", "notes"],
              [{"sha256": r["sha256"], "suffix": ".jpg", "params": "min_side=8;max_pixels=1",
                "ok": 0, "reason": "too small", "detail": "", "width": 1, "height": 1,
                "format": "JPEG", "notes": ""} for r in read_csv(tmp_path / "manifest.csv")])
    caplog.set_level("INFO", logger="alexnet.validate")
    summary = validate(tmp_path / "raw", tmp_path / "manifest.csv", tmp_path / "validated.csv",
                       tmp_path / "quarantine.csv", tmp_path / "validation.json",
                       ValidateParams(min_side=8, min_per_class=1), workers=1, memo_path=memo)
    assert summary["accepted"] == 6  # the old verdicts ("too small") were not reused
    assert "6 file(s) decoded, 0 verdict(s) reused" in caplog.text
    assert {r["fingerprint"] for r in read_csv(memo)} == {
        fingerprint("alexnet.validate", {"min_side": 8, "max_pixels": 89478485})}


def test_old_state_files_are_stale_not_an_error(tmp_path):
    """An ingest copy without a stamp, a cache index and a new-data state without a
    fingerprint: nothing is reused, nothing crashes."""
    from alexnet.ingest import ingest
    from alexnet.fingerprint import STAMP
    from flows.check_new_data import reusable_hashes, write_state

    for i in range(2):
        _image(tmp_path / "src/cats" / f"{i}.jpg", (60 + 60 * i, 0, 0))
    args = (tmp_path / "raw", tmp_path / "manifest.csv", tmp_path / "ingest.json",
            IngestParams())
    ingest(tmp_path / "src", *args)
    [pack] = (tmp_path / "raw").glob("*.tar")
    inode = pack.stat().st_ino
    (tmp_path / "raw" / STAMP).unlink()
    ingest(tmp_path / "src", *args)
    assert pack.stat().st_ino != inode  # written again, not linked

    files = {"cats/0.jpg": {"size": 1, "mtime_ns": 2, "sha256": "x"}}
    write_state(tmp_path, tmp_path / "src", files)
    assert reusable_hashes(tmp_path, tmp_path / "src") == files
    assert reusable_hashes(tmp_path, tmp_path / "other") == {}
    state = tmp_path / ".alexnet/source-state.json"
    state.write_text(json.dumps({"source": str(tmp_path / "src"), "files": files}))
    assert reusable_hashes(tmp_path, tmp_path / "src") == {}


@pytest.mark.parametrize("entry", ["alexnet.preprocess", "alexnet.distributed"])
def test_entries_fingerprint_their_own_module(entry):
    assert entry in module_closure(entry) and "alexnet.fingerprint" in module_closure(entry)
    assert re.fullmatch(r"[0-9a-f]{64}", code_digest(entry))
