"""The one atomic-write helper (ms_gpt/paths.py): a reader sees the old file or the new one, never part of one."""
import os

import pytest

from ms_gpt.paths import atomic_directory, atomic_path, atomic_write


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]
    with atomic_write(str(path)) as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["a.json"]
    with atomic_path(str(tmp_path / "loss.png")) as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)  # writers that read the extension
        open(tmp, "wb").close()
    assert sorted(os.listdir(tmp_path)) == ["a.json", "loss.png"]


def test_atomic_directory_new_replace_and_merge(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_directory(str(target)) as tmp:
        (tmp_path / os.path.basename(tmp) / "w.bin").write_text("1")
        assert not target.exists()
    assert os.listdir(target) == ["w.bin"]
    (target / "keep.txt").write_text("k")
    with atomic_directory(str(target)) as tmp:  # merge=False: the old directory goes as a whole
        open(os.path.join(tmp, "w.bin"), "w").write("2")
    assert os.listdir(target) == ["w.bin"] and (target / "w.bin").read_text() == "2"
    (target / "keep.txt").write_text("k")
    order = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (order.append(os.path.basename(dst)), real_replace(src, dst)))
    with atomic_directory(str(target), merge=True, last=("config.json",)) as tmp:
        for name in ("config.json", "z.bin", "a.bin"):
            open(os.path.join(tmp, name), "w").write("3")
    assert order == ["a.bin", "z.bin", "config.json"]  # the config after the files it points at
    assert sorted(os.listdir(target)) == ["a.bin", "config.json", "keep.txt", "w.bin", "z.bin"]
    with pytest.raises(RuntimeError):
        with atomic_directory(str(target), merge=True) as tmp:
            open(os.path.join(tmp, "a.bin"), "w").write("half")
            raise RuntimeError("killed")
    assert (target / "a.bin").read_text() == "3" and os.listdir(tmp_path) == ["out"]
