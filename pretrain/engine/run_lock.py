"""One live run per output directory: a lock file that names its owner (pid, host, command).

The file is held with ``flock`` for the life of the run, so the kernel frees it when the owner
dies, even by SIGKILL: a second run while the owner lives is refused with an error naming the
owner; a file left by a dead owner is taken over with a warning. Under torchrun only rank 0
holds it. On a filesystem without ``flock`` the check is skipped, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

import torch.distributed as dist

from .. import distributed as du
from ..log_names import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunLockError(RuntimeError):
    """The output directory is in use by another live run."""


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown owner"
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}"


class RunLock:
    """``OUTPUT_DIR/<name>``, locked while the run lives; a context manager."""

    def __init__(self, output_dir: str | Path, name: str) -> None:
        self.path = Path(output_dir) / name
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockError` naming the live owner."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in _NO_FLOCK:
                    logger.warning(
                        "%s: the filesystem does not support locks (%s); not checking for "
                        "another run in this directory",
                        self.path,
                        err.strerror,
                    )
                    return self
                raise RunLockError(
                    f"output directory {self.path.parent} is in use by another run: "
                    f"{_owner_text(self.path)} (lock file {self.path}); wait for it to finish, "
                    "stop it, or choose another OUTPUT_DIR"
                ) from None
            # The file may have been removed by its releasing owner between open and flock.
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        if os.fstat(fd).st_size:
            logger.warning(
                "%s: taking over the lock of %s, which is no longer running",
                self.path,
                _owner_text(self.path),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and free the lock (a no-op when not held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_on_main(output_dir: str | Path, name: str) -> RunLock | None:
    """Rank 0 takes the lock (the only rank that writes); when it is refused, every rank raises
    :class:`RunLockError`, so that no rank is left waiting for the others."""
    lock, error = None, None
    if du.is_main_process():
        try:
            lock = RunLock(output_dir, name).acquire()
        except RunLockError as err:
            error = str(err)
    if du.is_distributed():
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise RunLockError(error)
    return lock
