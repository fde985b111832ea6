"""Progress of a study on the terminal: the evaluator's start-up (model, MACs, references, timing, Ray
actors) and then the search (evaluations done/total, front size, hypervolume, ETA).

Two renderings of the same updates, chosen by whether the console is a terminal:
- a terminal gets rich progress bars (a bar for the reference runs, a spinner for phases of unknown
  length, then the search bar);
- a pipe or a log file gets plain, time-stamped lines, at most one per `log_every_s` per phase (plus
  every phase change and the last update), so `cachesearch search ... | tee log` shows progress.
Disabled (`--quiet`, tests) it prints nothing, so the loop never depends on a terminal.

The ETA comes from the study's budget (`loop.budget_eta`), not from rich's recent-speed estimate,
which shows nothing while one evaluation takes longer than its 30 s window.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

LOG_EVERY_S = 10.0


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Lines:
    """Plain progress lines, throttled per phase; `clock` is injectable for tests."""

    def __init__(self, console: Console, log_every_s: float, clock: Callable[[], float]) -> None:
        self.console, self.log_every_s, self.clock = console, log_every_s, clock
        self._last: dict[str, float] = {}
        self._said: dict[str, str] = {}

    def emit(self, key: str, text: str, force: bool = False) -> None:
        now = self.clock()
        last = self._last.get(key)
        if self._said.get(key) == text:
            return
        if force or last is None or now - last >= self.log_every_s:
            self._last[key], self._said[key] = now, text
            self.console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False,
                               soft_wrap=True)


class StartupProgress:
    """What the evaluator reports while it starts: `progress(phase, done, total)`, called by
    `evaluators.Evaluator` (and by the Ray pool while it waits for its actors). `total=None` is a
    phase of unknown length."""

    def __init__(self, enabled: bool = True, console: Console | None = None, *,
                 log_every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console()
        self.enabled = enabled
        self.terminal = enabled and self.console.is_terminal
        self._lines = _Lines(self.console, log_every_s, clock)
        self._phase: str | None = None
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                                  console=self.console, disable=not self.terminal, transient=False)
        self._tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: float | None = None, total: float | None = None) -> None:
        if not self.enabled:
            return
        count = f"{done:g}/{total:g}" if done is not None and total is not None else ""
        if self.terminal:
            if phase not in self._tasks:
                if self._phase in self._tasks:   # the previous phase is over: show it complete
                    self._complete(self._tasks[self._phase])
                self._progress.start()
                self._tasks[phase] = self._progress.add_task(escape(phase), total=total, count=count)
            self._progress.update(self._tasks[phase], completed=done or 0, total=total, count=count)
        else:
            self._lines.emit(phase, f"{phase} {count}".rstrip(), force=phase != self._phase or done == total)
        self._phase = phase

    def _complete(self, task: Any) -> None:
        total = next(t.total for t in self._progress.tasks if t.id == task) or 1
        self._progress.update(task, total=total, completed=total)
        self._progress.stop_task(task)

    def close(self) -> None:
        if self.terminal:
            for task in self._tasks.values():
                self._complete(task)
            self._progress.stop()


class SearchProgress:
    def __init__(self, total: int | None, description: str, enabled: bool = True, console: Console | None = None,
                 *, log_every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console()
        self.enabled = enabled
        self.terminal = enabled and self.console.is_terminal
        self.total, self.description = total, description
        self._lines = _Lines(self.console, log_every_s, clock)
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("front [cyan]{task.fields[front]}[/] · HV [green]{task.fields[hv]}[/] · {task.fields[note]}"),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=self.console, disable=not self.terminal, transient=False)
        self._task = self._progress.add_task(escape(description), total=total, front=0, hv="-", note="", eta="-")
        self._last_text = ""

    def __enter__(self) -> "SearchProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()
        if self.enabled and not self.terminal and self._last_text:
            self._lines.emit("search", self._last_text, force=True)

    def update(self, done: int, front: int, hv: float, note: str = "", eta_s: float | None = None) -> None:
        eta = format_eta(eta_s)
        self._progress.update(self._task, completed=done, front=front, hv=f"{hv:.4g}", note=note, eta=eta)
        if self.enabled and not self.terminal:
            of = f"/{self.total}" if self.total is not None else ""
            self._last_text = (f"{self.description}: {done}{of} evaluations, front {front}, HV {hv:.4g}, "
                               f"ETA {eta}" + (f" · {note}" if note else ""))
            self._lines.emit("search", self._last_text, force=self.total is not None and done >= self.total)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.log(message)
