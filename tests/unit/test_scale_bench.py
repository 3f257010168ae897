"""The scale bench (benchmarks/scale.py) deletes only the workspace it created: `--data` may be
a folder of the user's, and a `ws` in it is not the bench's to remove."""

from benchmarks.scale import scratch_workspace


def test_the_bench_removes_its_own_workspace_and_nothing_else(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws/mine.txt").write_text("the user's")
    with scratch_workspace(tmp_path) as ws:
        assert not ws.exists() and tmp_path in ws.parents
        ws.mkdir()
        (ws / "data").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]
    assert (tmp_path / "ws/mine.txt").read_text() == "the user's"
