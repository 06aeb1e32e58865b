"""
Writing files and folders so that a kill at any moment leaves either the previous complete one or the new complete
one, never a half-written one: everything is written under a temporary name in the same folder (same file system),
flushed to disk, then renamed over the target in one step (``os.replace`` for a file; for a folder, an atomic exchange
where the system has one). A kill can leave the temporary file or folder behind (a name starting with ``.`` and
holding ``.tmp-``), never a broken target.
"""

import contextlib
import ctypes
import functools
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: ``renameat2``'s flag that swaps two paths in one step (Linux >= 3.15)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _temporary_name(target: Path) -> str:
    return f".{target.name}.tmp-"


def _mode(target: Path, default: int) -> int:
    """:return: ``target``'s permissions if it exists, else ``default`` less the umask (``mkstemp`` makes ``0o600``)"""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return default & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the system allows opening folders)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """
    Write a file atomically: the body writes the temporary path this yields (same folder, suffix ``.tmp``);
    when it returns, the file is flushed to disk and renamed to ``target``, replacing it in one step. If the body
    raises, the temporary file is removed and ``target`` is left as it was.

    :param target: The file to write (its folder is created if needed)
    :return: The temporary path to write
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # ".tmp" last: a kill's leftover never matches a pattern of the target's kind ("*.json", "*.zip")
    descriptor, name = tempfile.mkstemp(prefix=_temporary_name(target), suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.chmod(tmp, _mode(target, 0o666))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """
    Write a folder atomically: the body fills the temporary folder this yields (next to ``target``); when it returns,
    the folder takes ``target``'s place in one step (an exchange of the two names where the system has one, Linux's
    ``renameat2``; elsewhere two renames, with a window of a few microseconds in which ``target`` is missing), and the
    previous folder is deleted. If the body raises, the temporary folder is removed and ``target`` is left as it was.

    :param target: The folder to write (its parent is created if needed)
    :return: The temporary folder to fill
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_name(target), dir=target.parent))
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                with open(path, "rb+") as file:
                    os.fsync(file.fileno())
        os.chmod(tmp, _mode(target, 0o777))
        _replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(target.parent)


def _replace_folder(source: Path, target: Path) -> None:
    """Put ``source`` in ``target``'s place (``target`` may not exist), then delete what was at ``target``."""
    if not target.exists():
        os.rename(source, target)
        return
    if _exchange(source, target):
        shutil.rmtree(source)  # now the previous folder
        return
    previous = Path(tempfile.mkdtemp(prefix=_temporary_name(target), dir=target.parent))
    previous.rmdir()
    os.rename(target, previous)
    os.rename(source, target)
    shutil.rmtree(previous)


@functools.cache
def _renameat2() -> Any:
    """:return: The C library's ``renameat2`` (glibc >= 2.28), or ``None``; looked up once, in the running process"""
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> bool:
    """:return: Whether ``a`` and ``b`` were swapped in one step (Linux's ``renameat2`` with ``RENAME_EXCHANGE``)"""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    return bool(renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0)
