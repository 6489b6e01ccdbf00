"""Atomic directory output: build in a hidden sibling, then swap it in with renames."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` onto ``out_dir``; an existing ``out_dir`` is dropped only after."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp directory next to ``out_dir``; on success it replaces ``out_dir``, on any
    error it is removed and ``out_dir`` keeps its previous content."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out_dir)


OWNED_BY_RUN = ("features", "artifacts", "quarantine", "_run.json")


@contextmanager
def staged_entries(out_dir: Path, entries: tuple[str, ...]) -> Iterator[Path]:
    """Like ``staged_dir``, but ``out_dir`` is shared (a project's data directory holds
    the registry, raw sources, logs...): on success only ``entries`` are swapped in, each
    atomically, and an entry the new output lacks is removed; nothing else is touched."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".staged-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for name in entries:
            new, old = tmp / name, out_dir / name
            if new.is_dir():
                replace_dir(new, old)
            elif new.exists():
                os.replace(new, old)
            elif old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
