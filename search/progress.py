"""Live progress of a search on the terminal (rich): evaluations done/total, front size, hypervolume,
ETA. Silent when disabled (tests, pipes), so the loop never depends on a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn


class SearchProgress:
    def __init__(self, total: int | None, description: str, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("front [cyan]{task.fields[front]}[/] · HV [green]{task.fields[hv]}[/] · {task.fields[note]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False)
        self._task = self._progress.add_task(description, total=total, front=0, hv="-", note="")

    def __enter__(self) -> "SearchProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, done: int, front: int, hv: float, note: str = "") -> None:
        self._progress.update(self._task, completed=done, front=front, hv=f"{hv:.4g}", note=note)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.log(message)
