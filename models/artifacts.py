"""Atomic directory writes: build in a temporary sibling, rename into place on success.

A crash or a bad input never leaves a half-written artifact where a reader would find it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` when the block succeeds.

    On an exception the temporary directory is removed and ``final`` is left untouched.
    Replacing an existing directory renames it aside first, so readers see either the old
    or the new contents, never a mix.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
