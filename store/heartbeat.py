"""`Heartbeat`: a running study says it is alive, so a killed run is seen as stale, not `running`
forever (Optuna's `heartbeat_interval` / `fail_stale_trials` pattern, per study).

    with Heartbeat(store, "embedded-quick", interval_s=30):   # claims the study (StudyBusy if live elsewhere)
        ...long work...                                        # a daemon thread beats every 30 s

The beat comes from a thread, not from the search loop, because one evaluation (or the evaluator's
start-up) can take longer than any sensible interval. A run that ends normally releases the study;
a killed one leaves its last beat, and readers show "stale (last seen ...)" once it is older than
`records.STALE_AFTER_INTERVALS` intervals; `--resume` then takes the study over.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable

from .errors import StudyNotFound
from .records import RunInfo

DEFAULT_INTERVAL_S = 30.0


def this_process() -> str:
    """The owner name of a run: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(self, store: Any, study: str, interval_s: float = DEFAULT_INTERVAL_S, *, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.study, self.interval_s = store, study, float(interval_s)
        self.owner = owner or this_process()
        self.clock = clock
        self.beats = 0
        self.lost = False            # another run took the study over (this one was seen as stale)
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RunInfo:
        run = self.store.claim_run(self.study, self.owner, self.interval_s, now=self.clock())
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat:{self.study}", daemon=True)
        self._thread.start()
        return run

    def beat(self) -> None:
        """One heartbeat now (the thread calls this every interval)."""
        try:
            if not self.store.beat(self.study, self.owner, now=self.clock()):
                self.lost = True
            self.beats += 1
        except Exception as exc:   # a busy or briefly unreachable database: try again next interval
            self.last_error = exc

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if not self.lost:
                try:
                    self.store.release_run(self.study, self.owner)
                except StudyNotFound:   # deleted meanwhile (a failed start-up removes the study it created),
                    pass                # and its run row with it: raising here would hide why it failed

    def __enter__(self) -> "Heartbeat":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
