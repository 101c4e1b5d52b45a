"""RunLock: one run at a time in a run directory."""

from __future__ import annotations

import fcntl
import os
import platform
from typing import Any

from mochapy.errors import MochaError


class RunLock:
    """An exclusive lock on a run directory, so two runs never interleave their files."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, ".lock")
        self.handle: Any = None
        self.previous: str | None = None  # what the file held before (None: this call made it)

    def __enter__(self) -> RunLock:
        existed = os.path.exists(self.path)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "another process"
            self.handle.close()
            raise MochaError(
                f"run directory {os.path.dirname(self.path)} is in use by {owner}; "
                "wait for it or choose another --out"
            ) from None
        self.handle.seek(0)
        self.previous = self.handle.read() if existed else None
        try:  # unbuffered, so a full disk fails here and not again when the file is closed
            os.ftruncate(self.handle.fileno(), 0)
            os.write(self.handle.fileno(), f"pid {os.getpid()} on {platform.node()}".encode())
        except OSError as exc:  # we hold the lock, so no other run uses this file
            os.unlink(self.path)
            self.__exit__()
            raise OSError(exc.errno, exc.strerror, self.path) from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    def undo(self) -> None:
        """Leave the lock file as it was before (removed if this call made it): for a run
        refused before it started, which must change nothing in the folder."""
        if self.previous is None:
            os.unlink(self.path)
        else:
            os.ftruncate(self.handle.fileno(), 0)
            os.write(self.handle.fileno(), self.previous.encode())
