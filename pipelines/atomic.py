"""Atomic directory output: build in a hidden sibling, then swap it in with renames.

Every staging name carries the pid of the process that made it
(``.<name>.tmp-<pid>-<rand>``, ``.<name>.old-<pid>-<rand>``, ``.staged-<pid>-<rand>``), so
the next run finds what a killed one left behind (its process is gone) and removes it,
while the staging of a run still going on is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STAGING = re.compile(r"^\.(?:staged|.+\.(?:tmp|old))-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")
_LEGACY_AGE_SECONDS = 3_600  # staging without a pid (older versions): stale after an hour


def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_staging(directory: Path) -> list[Path]:
    """Remove staging entries in ``directory`` left by processes that no longer run
    (killed runs); return what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        m = _STAGING.match(entry.name)
        if m is None:
            continue
        pid = m.group("pid")
        if pid is not None:
            stale = not _alive(int(pid))
        else:
            stale = time.time() - entry.stat().st_mtime > _LEGACY_AGE_SECONDS
        if stale:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` onto ``out_dir``; an existing ``out_dir`` is dropped only after."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{_tag()}"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(out_dir: Path) -> Path:
    """A new, empty staging directory beside ``out_dir`` (stale ones are removed first)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir.parent)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{_tag()}"
    tmp.mkdir()
    return tmp


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp directory next to ``out_dir``; on success it replaces ``out_dir``, on any
    error it is removed and ``out_dir`` keeps its previous content."""
    tmp = staging_dir(out_dir)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, Path(out_dir))


OWNED_BY_RUN = ("features", "artifacts", "quarantine", "_run.json")


@contextmanager
def staged_entries(out_dir: Path, entries: tuple[str, ...]) -> Iterator[Path]:
    """Like ``staged_dir``, but ``out_dir`` is shared (a project's data directory holds
    the registry, raw sources, logs...): on success only ``entries`` are swapped in, each
    atomically, and an entry the new output lacks is removed; nothing else is touched."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out_dir)
    tmp = out_dir / f".staged-{_tag()}"
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
