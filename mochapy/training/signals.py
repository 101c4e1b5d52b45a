"""Stop signals that end a run cleanly: the iteration finishes, then a snapshot is written."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def deferred_stop_signals(received: list[int]) -> Iterator[None]:
    """SIGTERM and Ctrl-C only note the signal: the loop ends the iteration (a solver update is
    never cut in half) and then snapshots. Only the main thread may install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        number: signal.signal(number, lambda sig, frame: received.append(sig))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
