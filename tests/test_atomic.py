"""Atomic outputs: a folder version becomes visible only when complete; a failed write leaves the old one."""

import pytest

from rlhfkit.atomic import versioned_dir, write_text


def test_versioned_dir_switches_only_on_success(tmp_path):
    link = tmp_path / "model"
    with versioned_dir(link) as d:
        (d / "w.txt").write_text("v1")
    assert (link / "w.txt").read_text() == "v1"
    with pytest.raises(RuntimeError), versioned_dir(link) as d:
        (d / "w.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert (link / "w.txt").read_text() == "v1"  # still the last complete version
    with versioned_dir(link) as d:
        (d / "w.txt").write_text("v2")
    assert (link / "w.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model-v2", "model"]  # stale versions removed


def test_write_text_replaces(tmp_path):
    write_text(tmp_path / "a.json", "1")
    write_text(tmp_path / "a.json", "2")
    assert (tmp_path / "a.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
