"""Where xelm keeps downloads, and how it writes outputs without leaving half-written ones."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The user's xelm cache (`$XELM_CACHE`, else `$XDG_CACHE_HOME/xelm`, else ~/.cache/xelm)."""
    root = (
        os.environ.get("XELM_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xelm"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on failure it vanishes.

    Readers therefore only ever see a complete folder (or the previous one), never a half-built
    one, even if the process is killed midway.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(out)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str = "run directory") -> Iterator[None]:
    """Hold `folder`'s lock for the block: a second writer gets a one-line error naming the
    holder's pid. The lock is the OS's (filelock on flock), so it dies with its process: a run
    that was killed leaves nothing to clean up."""
    from filelock import FileLock, Timeout

    from xelm.errors import XelmError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    owner = folder / ".xelm.lock.owner"
    lock = FileLock(folder / ".xelm.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner.read_text().strip() if owner.exists() else "another process"
        raise XelmError(
            f"{folder}: this {what} is in use by {holder}; wait for it to finish "
            "or use another one (--out)"
        ) from None
    try:
        owner.write_text(f"process {os.getpid()} ({' '.join(sys.argv[:3])})\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
