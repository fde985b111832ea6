"""What every benchmark here shares: a header naming the machine, and printing + recording a report."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch


def header(script: str, extra: str = "") -> str:
    return (f"# bench/{script}  ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}{', ' + extra if extra else ''})")


def report(lines: list[str], out: Path | None) -> None:
    """Print the report and, with --out, record it (creating the folder)."""
    text = "\n".join(lines)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
