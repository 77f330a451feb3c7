"""Atomic writes: whole or absent, and with the permissions a plain open() would give."""

import os
import stat

import pytest

from mnist_study.files import atomic_path, read_json, write_json, write_text


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_keep_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "report.html", "<p>hello</p>")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "report.html").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "metrics.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk full")
    assert read_json(tmp_path / "metrics.json") == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
