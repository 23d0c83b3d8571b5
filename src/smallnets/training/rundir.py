"""Run directories are claimed by one process at a time: an exclusive lock on ``RUN/.lock``.

The lock is the kernel's (``flock``; ``msvcrt.locking`` on Windows), so it ends with the process
that holds it, however that process ends: a run killed with SIGKILL leaves no lock to break, only
the file, which the next claim reuses. The file holds the owner's pid and host for the message a
second claimant gets.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"
# what smallnets._io.atomic_path leaves behind when its process dies mid-write: .NAME.XXXXXXXX.tmp.SUFFIX
TEMP_FILE = re.compile(r"^\..+\.tmp(\.[^.]+)?$")


class RunDirectoryInUse(FileExistsError):
    """Another live process has claimed the run directory."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _release(fd: int, path: Path) -> None:
    # removed while still locked, so that no one can lock the old file after it is gone (see claim)
    try:
        path.unlink()
    except OSError:
        pass
    os.close(fd)


class RunLock:
    """The claim on one run directory; ``release()`` (or the end of the process) gives it up."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._finalizer = weakref.finalize(self, _release, fd, self.path)

    @property
    def held(self) -> bool:
        return self._finalizer.alive

    def release(self) -> None:
        self._finalizer()

    @classmethod
    def claim(cls, run_dir: str | os.PathLike) -> RunLock:
        """Lock ``run_dir`` (which must exist) or raise :class:`RunDirectoryInUse` naming the owner."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                raise RunDirectoryInUse(f"run directory {str(run_dir)!r} is in use by {describe_owner(run_dir)}; "
                                        f"wait for it to end, or choose another --name")  # fmt: skip
            # the previous owner may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else sees; try again with the one that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": _dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        return cls(run_dir, fd)


def describe_owner(run_dir: Path) -> str:
    try:
        owner = json.loads((Path(run_dir) / LOCK_NAME).read_text())
        return f"process {owner['pid']} on {owner['host']} (since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def remove_temp_files(run_dir: str | os.PathLike) -> list[str]:
    """Delete the unfinished temporary files a killed writer left in ``run_dir``; their names.

    Only call this while holding the directory's lock: then no writer is alive to own them.
    """
    removed = []
    for p in sorted(Path(run_dir).iterdir()):
        if TEMP_FILE.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
