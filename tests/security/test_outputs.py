"""Output paths: only a directory the pipeline wrote is replaced, and a concurrent run's
temporary directory is never deleted (temp names carry their owner's pid)."""

import os
import subprocess
import sys
import textwrap

import pytest

from alexnet.cli import main
from alexnet.errors import EXIT_CONFIG, OutputError
from alexnet.io import atomic_dir
from alexnet.sample_data import generate_sample_data


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_regular_file_as_output_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate_sample_data(tmp_path / "images", per_class=3, seed=0)
    (tmp_path / "params.yaml").write_text("ingest: {source: images}\n")
    (tmp_path / "notes.txt").write_text("my notes")
    before = listing(tmp_path)
    assert main(["ingest", "--raw", "notes.txt"]) == EXIT_CONFIG
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert listing(tmp_path) == before  # nothing renamed away, no hidden temp left


def test_a_link_as_output_directory_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="not a directory"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out").is_symlink() and listing(elsewhere) == ["keep.txt"]
    assert listing(tmp_path) == ["elsewhere", "out"]


def test_temp_dir_names_carry_the_owner_pid(tmp_path):
    with atomic_dir(tmp_path / "raw") as tmp:
        assert tmp.name.startswith(f".raw.tmp-{os.getpid()}-")


HOLD = textwrap.dedent("""
    import sys
    from alexnet.io import atomic_dir
    with atomic_dir(sys.argv[1]) as tmp:
        (tmp / "half-written").write_text("x")
        print(tmp, flush=True)
        sys.stdin.readline()   # hold it until the test says so
        (tmp / "done").write_text("x")
""")


def test_a_concurrent_runs_temp_dir_is_left_alone(tmp_path):
    out = tmp_path / "raw"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        theirs = tmp_path / os.path.basename(other.stdout.readline().strip())
        assert theirs.is_dir()
        with atomic_dir(out) as tmp:  # this run must not delete the other run's temp dir
            (tmp / "mine").write_text("x")
        assert theirs.is_dir() and (theirs / "half-written").is_file()
        other.communicate("go\n", timeout=60)
        assert other.returncode == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert listing(out) == [".alexnet-output", "done", "half-written"]  # the last writer wins


def test_a_dead_runs_temp_dir_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".raw.tmp-{dead.pid}-abcd1234"
    stale.mkdir()
    (stale / "big.npy").write_text("x")
    old = tmp_path / f".raw.tmp-old-{dead.pid}"
    old.mkdir()
    with atomic_dir(tmp_path / "raw"):
        pass
    assert listing(tmp_path) == ["raw"]
