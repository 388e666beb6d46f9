"""Atomic artifacts: everything fsynced before the rename that publishes it."""

from __future__ import annotations

import os

import pytest

from models import artifacts
from models.artifacts import atomic_directory


def test_files_are_synced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(src, dst) -> None:
        events.append(f"rename {dst}")
        real_rename(src, dst)

    monkeypatch.setattr(artifacts.os, "fsync", fsync)
    monkeypatch.setattr(artifacts.os, "rename", rename)
    final = tmp_path / "bundle"
    with atomic_directory(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "a.npy").write_bytes(b"a")
        (tmp / "sub" / "b.json").write_text("{}")
    rename_at = events.index(f"rename {final}")
    synced = [e.split("/")[-1] for e in events[:rename_at] if e.startswith("fsync")]
    assert {"a.npy", "b.json", "sub"} <= set(synced)
    assert (final / "sub" / "b.json").read_text() == "{}"


def test_a_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "x") as tmp:
        (tmp / "half").write_text("written")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
