"""Ctrl-C for long runs: the first stops scheduling new work, the second exits at once.

``with StopOnInterrupt("synth") as stop:`` installs a SIGINT handler (main thread only; elsewhere it is
a plain flag). The runner polls ``stop.requested``, stops submitting, abandons in-flight calls (their
results are never written), flushes what is complete and marks the rest for resume. A second Ctrl-C
ends the process with status 130 without waiting for anything (the store's last flush is what counts:
every write is a committed transaction, and resume deletes half-written units).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

__all__ = ["StopOnInterrupt", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130


class StopOnInterrupt:
    def __init__(self, label: str):
        self.label = label
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.event.set()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            sys.stderr.write(f"\n{self.label}: second Ctrl-C: exiting now\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        self.event.set()
        sys.stderr.write(f"\n{self.label}: stopping (no new work; in-flight calls are abandoned); Ctrl-C again to exit at once\n")
        sys.stderr.flush()

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
