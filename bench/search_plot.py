"""A small line chart drawn with Pillow (a dependency already), so the benchmark needs no plotting
package: hypervolume against evaluations, one mean line per searcher with a min-max band; and the one
way the search benchmarks write their results (json, markdown, png)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = {"ecad": (214, 39, 40), "dp": (31, 119, 180), "bayes": (44, 160, 44), "random": (127, 127, 127),
          "heuristics": (255, 127, 14)}
PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
W, H, L, R, T, B = 900, 560, 80, 170, 50, 60


def _color(name: str, index: int) -> tuple[int, int, int]:
    return COLORS.get(name) or PALETTE[index % len(PALETTE)]


def line_chart(curves: Mapping[str, Sequence[Sequence[float]]], path: Path, title: str,
               xlabel: str = "evaluations", ylabel: str = "hypervolume") -> Path:
    """`curves[name]` = one hypervolume-per-evaluation list per searcher seed."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xmax = max(len(c) for runs in curves.values() for c in runs)
    ymax = max(max(c) for runs in curves.values() for c in runs if c) or 1.0
    ymax *= 1.05

    def px(i: float, v: float) -> tuple[float, float]:
        return L + (W - L - R) * i / max(1, xmax), H - B - (H - T - B) * v / ymax

    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(6):
        v = ymax * k / 5
        x0, y = px(0, v)
        d.line([L - 4, y, L, y], fill="black")
        d.text((8, y - 6), f"{v:.3g}", fill="black", font=font)
        d.line([L, y, W - R, y], fill=(230, 230, 230))
    for k in range(6):
        i = xmax * k / 5
        x, y0 = px(i, 0)
        d.line([x, H - B, x, H - B + 4], fill="black")
        d.text((x - 8, H - B + 8), f"{i:.0f}", fill="black", font=font)
    d.text((W / 2 - 40, H - 25), xlabel, fill="black", font=font)
    d.text((8, T - 30), ylabel, fill="black", font=font)
    d.text((L, 12), title, fill="black", font=font)
    stats = {}
    for name, runs in curves.items():
        length = max(len(c) for c in runs)
        cols = [[c[min(i, len(c) - 1)] for c in runs if c] for i in range(length)]
        stats[name] = ([min(v) for v in cols], [max(v) for v in cols], [sum(v) / len(v) for v in cols])
    for n, (name, runs) in enumerate(curves.items()):   # bands first, so no band hides another line
        lo, hi, _ = stats[name]
        band = [px(i + 1, v) for i, v in enumerate(hi)] + [px(i + 1, v) for i, v in reversed(list(enumerate(lo)))]
        if len(runs) > 1 and len(band) > 2:
            color = _color(name, n)
            d.polygon(band, fill=tuple(int(c + (255 - c) * 0.85) for c in color))
    widths = {name: max(2, 2 * (len(curves) - n)) for n, name in enumerate(curves)}
    for n, (name, runs) in enumerate(curves.items()):   # earlier curves wider: one that a later curve
        color = _color(name, n)                          # repeats (dp+ecad starts as dp) still shows
        d.line([px(i + 1, v) for i, v in enumerate(stats[name][2])], fill=color, width=widths[name])
        ly = T + 10 + 20 * n
        d.line([W - R + 12, ly + 6, W - R + 40, ly + 6], fill=color, width=min(6, widths[name]))
        d.text((W - R + 46, ly), f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def add_study_arguments(ap: argparse.ArgumentParser, root: Path) -> None:
    """The evaluation and output options every search benchmark shares."""
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--image-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--reference", type=float, default=15.0, help="PSNR hypervolume reference")
    ap.add_argument("--out", type=Path, default=root / "bench" / "results")
    ap.add_argument("--db", default=None, help="keep the studies in this database (default: a temp file)")


def run_meta(script: str, t0: float, load0: tuple[float, ...], pool: object, **extra: object) -> dict:
    """What a search benchmark records about its run: the command, date, machine load, timing, memo."""
    return {"command": (f"python bench/{script} " + " ".join(sys.argv[1:])).strip(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_avg_start": load0, "load_avg_end": os.getloadavg(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "total_s": time.time() - t0,
            "memo_hits": getattr(pool, "hits", None), "memo_misses": getattr(pool, "misses", None), **extra}


def write_results(out: Path, stem: str, doc: dict, markdown: str, title: str) -> None:
    """`out/stem.json` (everything measured: `doc`, whose "runs" map a name to runs with a hypervolume
    "curve" each), `out/stem.md` (the report) and `out/stem.png` (the curves)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    (out / f"{stem}.md").write_text(markdown)
    curves = {name: [r["curve"] for r in runs] for name, runs in doc.get("runs", {}).items()}
    if curves:
        line_chart(curves, out / f"{stem}.png", title)
