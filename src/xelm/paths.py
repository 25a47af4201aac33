"""Where xelm keeps downloads, and how it writes outputs without leaving half-written ones."""

from __future__ import annotations

import contextlib
import hashlib
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


def writable(out: str | Path, what: str = "folder") -> Path:
    """`out`, checked before any work: its parents exist (created) and `out` is not a file where
    a folder goes (or a folder where a file goes)."""
    from xelm.errors import XelmError

    out = Path(out)
    _writable_parent(out, what)
    if what == "folder" and out.exists() and not out.is_dir():
        raise XelmError(f"{out}: is a file, not a folder; choose another output path")
    if what == "file" and out.is_dir():
        raise XelmError(f"{out}: is a folder, not a file; choose another output path")
    return out


def _writable_parent(out: Path, what: str) -> None:
    """Create `out`'s parent folders; a path through a file is a one-line error."""
    from xelm.errors import XelmError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise XelmError(
            f"{out}: cannot write the {what} there: a part of the path is a file, not a folder"
        ) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_leftovers(out: Path) -> None:
    """Remove what killed writers of `out` left beside it (`.NAME.tmp-PID-*`, `.NAME.old-PID`)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, rest = path.name[len(out.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `out`; on success it replaces `out`, on failure it vanishes.

    Readers therefore only ever see a complete folder (or the previous one), never a half-built
    one, even if the process is killed midway; what a killed writer left is removed by the next.
    An existing *file* at `out` is never replaced by a folder.
    """
    from xelm.errors import XelmError

    out = Path(out)
    _writable_parent(out, "folder")
    if out.exists() and not out.is_dir():
        raise XelmError(f"{out}: is a file, not a folder; choose another output path")
    remove_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
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
    from xelm.errors import XelmError

    path = Path(path)
    _writable_parent(path, "file")
    if path.is_dir():
        raise XelmError(f"{path}: is a folder, not a file; choose another output path")
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

    folder = writable(folder)
    folder.mkdir(exist_ok=True)
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


def hf_ref(name: str | Path, what: str = "model") -> tuple[str, bool]:
    """(where to load from, is it local): a folder that exists, else a hub id (`hf:NAME` or a
    bare `org/name`). What looks like a local path (`./x`, `/x`, `~/x`, `a/b/c`, or `a/b` when
    `a/` exists here) and is missing is an error, not a hub look-up with its network retries."""
    from xelm.errors import XelmError

    text = str(name)
    if text.startswith("hf:"):
        return text[3:], False
    path = Path(text).expanduser()
    if path.exists():
        return str(path), True
    parts = Path(text).parts
    local = (
        text.startswith((".", "/", "~"))
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).is_dir())
    )
    if local:
        raise XelmError(f"{text}: no such {what} folder (a hub {what} is written hf:NAME)")
    return text, False


def relative_to(target: str | Path, folder: str | Path) -> str:
    """`target` as a record in `folder` stores it: relative to that folder, so the pair keeps
    working when their common tree is moved or used from another working directory."""
    return os.path.relpath(Path(target).resolve(), Path(folder).resolve())


def resolve_from(stored: str | Path, folder: str | Path) -> Path:
    """A path a record in `folder` stored (older records: relative to where they were made)."""
    path = Path(stored)
    if path.is_absolute():
        return path
    here = Path(os.path.normpath(Path(folder) / path))
    return here if here.exists() or not path.exists() else path


def link_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the folder `src` to `dst` as hard links where the filesystem allows, else as copies.

    Links cost no disk and are safe here: xelm never modifies a file it wrote in place, it
    replaces it (a new inode), so a later rewrite of `src` leaves `dst` as it was.
    """

    def link_or_copy(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(source, target)

    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path`, symbolic links followed, lies in `folder`'s tree."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def die_with_parent() -> None:
    """In a worker process: have the kernel kill it when its parent dies, even by SIGKILL
    (Linux `PR_SET_PDEATHSIG`; elsewhere a no-op). Idle pool workers would otherwise outlive a
    killed run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
