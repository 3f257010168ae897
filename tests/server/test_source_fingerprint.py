"""check-new-data's fingerprint: what counts as new data, and what is only re-hashed when needed.
(Pure functions, no server: seconds.)"""

from __future__ import annotations

import os
import shutil

from flows.check_new_data import compare, fingerprint, read_state, write_state


def test_only_content_changes_count(tmp_path):
    src = tmp_path / "src"
    (src / "cats").mkdir(parents=True)
    (src / "cats/a.jpg").write_bytes(b"a" * 10)
    (src / "cats/b.jpg").write_bytes(b"b" * 10)
    (src / ".hidden").write_text("x")
    base = fingerprint(src, {})
    assert sorted(base) == ["cats/a.jpg", "cats/b.jpg"]
    assert not compare(base, fingerprint(src, base))

    st = (src / "cats/a.jpg").stat()
    os.utime(src / "cats/a.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    assert not compare(base, fingerprint(src, base))

    (src / "cats/b.jpg").write_bytes(b"c" * 10)  # same size, new content
    os.utime(src / "cats/b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    (src / "cats/c.jpg").write_bytes(b"new")
    (src / "cats/a.jpg").unlink()
    change = compare(base, fingerprint(src, base))
    assert (change.added, change.removed, change.modified) == (["cats/c.jpg"], ["cats/a.jpg"],
                                                               ["cats/b.jpg"])


def test_os_litter_is_not_new_data(tmp_path):
    """What ingest ignores as system files (Thumbs.db, desktop.ini, __MACOSX/) must not start a
    retraining run that then ingests nothing new."""
    src = tmp_path / "src"
    (src / "cats").mkdir(parents=True)
    (src / "cats/a.jpg").write_bytes(b"a")
    base = fingerprint(src, {})
    (src / "cats/Thumbs.db").write_bytes(b"litter")
    (src / "desktop.ini").write_text("[.ShellClassInfo]")
    (src / "__MACOSX/cats").mkdir(parents=True)
    (src / "__MACOSX/cats/a.jpg").write_bytes(b"resource fork")
    assert not compare(base, fingerprint(src, base))


def test_unchanged_files_are_not_rehashed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"a")
    previous = {"a.jpg": {**fingerprint(src, {})["a.jpg"], "sha256": "from-the-state-file"}}
    assert fingerprint(src, previous)["a.jpg"]["sha256"] == "from-the-state-file"


def test_state_round_trips_and_stays_out_of_git(tmp_path):
    files = {"a.jpg": {"size": 1, "mtime_ns": 2, "sha256": "x"}}
    assert read_state(tmp_path) is None
    write_state(tmp_path, tmp_path / "src", files)
    assert read_state(tmp_path) == files
    assert (tmp_path / ".alexnet/.gitignore").read_text() == "*\n"


def test_missing_source_is_not_a_change(tmp_path):
    """Before the first training the built-in sample does not exist: no event, no state."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.check_new_data import check_new_data
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws")
    with prefect_test_harness(server_startup_timeout=120):
        first = check_new_data(workspace=str(ws))
        assert first["first_check"] and not first["changed"]
        (ws / "data/sample/disks/disks.0.jpg").unlink()
        assert check_new_data(workspace=str(ws))["removed"] == 1
        shutil.rmtree(ws / "data/sample")
        assert check_new_data(workspace=str(ws)) == {"changed": False, "first_check": False,
                                                     "added": 0, "removed": 0, "modified": 0}
    assert len(read_state(ws)) == 80  # the state of the last real check
