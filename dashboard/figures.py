"""Plotly figure builders: pure functions of schedules, frames and histories (no Streamlit, no store),
so they are unit-tested and benchmarked on their own.

Conventions: speedup on x and quality on y (the trade-off curve people read); a plan is drawn with
steps top to bottom and blocks left to right, one panel per component, with the same three colours
everywhere (compute dark, reuse pale, skip red) so a glance tells how much of the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from schedules import COMPUTE, MODE_TABLE, SKIP, Schedule
from schedules.objectives import COST_LABELS, COST_NAMES, COST_UNIT
from schedules.objectives import label as objective_label
from schedules.provenance import ORIGIN_LABELS

from store.validation import ValidationPair

from .frames import column

# the schedule's mode table, in table order: code i is the i-th mode (an unknown character is a KeyError)
MODE_CODE = {char: i for i, char in enumerate(MODE_TABLE)}
MODE_NAME = {char: mode.name for char, mode in MODE_TABLE.items()}
MODE_COLOR = {mode.name: mode.colour for mode in MODE_TABLE.values()}
_MODE_LABELS = [mode.label for mode in MODE_TABLE.values()]
_MODE_COLORS = [mode.colour for mode in MODE_TABLE.values()]
DIFF_NAMES = ("same: not computed", "same: computed", "only this one computes",
              "only the other computes", "differ (skip involved)")
DIFF_COLORS = ("#f2f2f2", "#b9c2cc", "#1f77b4", "#ff7f0e", "#d62728")
PALETTE = qualitative.Plotly
def axis_title(objective: str) -> str:
    """An axis title without a study at hand: costs with their unit ('MAC speedup (x)'), metrics as
    named (pages use `frames.axis_label`, which knows the study's units)."""
    return f"{objective_label(objective)} ({COST_UNIT})" if objective in COST_NAMES else objective


def _discrete_scale(colors: Sequence[str]) -> list[list[object]]:
    """A colour scale with one flat band per integer code 0..n-1 (zmin=-0.5, zmax=n-0.5)."""
    n = len(colors)
    scale: list[list[object]] = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def _legend_swatches(fig: go.Figure, names: Sequence[str], colors: Sequence[str]) -> None:
    """Heatmaps have no legend entries; invisible square markers give the colour key."""
    for name, color in zip(names, colors):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=True,
                                 marker=dict(symbol="square", size=12, color=color,
                                             line=dict(width=1, color="#888"))))


# ------------------------------------------------------------------------------------------- frontier
@dataclass(frozen=True)
class FrontierSeries:
    """One study on the frontier plot: its plottable evaluations and the ids on its front."""

    label: str
    points: pd.DataFrame          # `EvalTable.points(quality, cost)`
    front_ids: Sequence[int]


#: Colours of who found a point (`schedules.provenance` origins), for "colour by provenance".
ORIGIN_COLORS = {"heuristic": "#ff7f0e", "search": "#1f77b4", "seed": "#2ca02c", "imported": "#9467bd",
                 "unknown": "#7f7f7f"}
_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross", "x")


def _custom(points: pd.DataFrame, quality_col: str) -> np.ndarray:
    """Hover/selection payload per point: id, short hash, fraction computed, the cost figures, quality,
    who found it. An object array, so ids stay integers and figures stay numbers in the JSON sent to
    the browser; figures rounded to 5 significant digits (hover shows 4), which halves that JSON for
    10,000 points."""
    figures = ("compute_fraction", *COST_NAMES, quality_col)
    out = np.empty((len(points), 3 + len(figures)), dtype=object)
    if len(points):
        out[:, 0] = points["id"].to_numpy()
        out[:, 1] = points["schedule_hash"].str.slice(0, 12).to_numpy()
        for j, col in enumerate(figures, start=2):
            out[:, j] = [float(f"{v:.5g}") if np.isfinite(v) else None for v in points[col].to_numpy(dtype=float)]
        out[:, -1] = points["found_by"].to_numpy() if "found_by" in points else ""
    return out


def _hover() -> str:
    """Hover text: the evaluation, quality (its axis title rides in `meta`), every cost figure, who found it."""
    costs = "<br>".join(f"{COST_LABELS[name]} %{{customdata[{3 + i}]:.2f}}x" for i, name in enumerate(COST_NAMES))
    quality = 3 + len(COST_NAMES)
    return ("<b>evaluation %{customdata[0]}</b> · %{customdata[1]}<br>%{meta}: %{customdata[" + str(quality) + "]:.4g}"
            f"<br>{costs}<br>computed %{{customdata[2]:.1%}}<br>found by %{{customdata[{quality + 1}]}}"
            "<extra>%{fullData.name}</extra>")


_HOVER = _hover()


def frontier_figure(series: Sequence[FrontierSeries], quality: str, cost: str,
                    selected: int | None = None, height: int = 560, *, knee: int | None = None,
                    bar: float | None = None, color_by: str = "study",
                    titles: tuple[str, str] | None = None,
                    peers: Sequence[tuple[str, float, float]] = ()) -> go.Figure:
    """Every evaluation faint (WebGL, so 10,000 points stay fluid), each front as a bold line, the knee
    starred, the quality bar dashed, the selected evaluation ringed. `color_by="provenance"` colours
    the points by who found them (heuristic, the search, seeds, imports) instead of by study. Point
    `customdata[0]` is the evaluation id (for selection events); `titles` are the axes' (with units).
    `peers`: (label, cost, quality) of peer methods the study scored, drawn as grey diamonds (not
    selectable: they are not schedules)."""
    qcol, ccol = column(quality), column(cost)
    x_title, y_title = titles or (axis_title(cost), axis_title(quality))
    fig = go.Figure()
    ring: tuple[float, float] | None = None
    star: tuple[float, float] | None = None
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = s.points
        if color_by == "provenance" and "origin" in pts:
            for origin, group in pts.groupby("origin", sort=False):
                fig.add_trace(go.Scattergl(
                    x=group[ccol], y=group[qcol], mode="markers",
                    name=f"{s.label} · {ORIGIN_LABELS.get(origin, origin)} ({len(group)})", legendgroup=s.label,
                    marker=dict(color=ORIGIN_COLORS.get(origin, ORIGIN_COLORS["unknown"]), size=7, opacity=0.55,
                                symbol=_SYMBOLS[i % len(_SYMBOLS)]),
                    customdata=_custom(group, qcol), meta=y_title, hovertemplate=_HOVER))
        else:
            fig.add_trace(go.Scattergl(
                x=pts[ccol], y=pts[qcol], mode="markers", name=f"{s.label} · all ({len(pts)})",
                legendgroup=s.label, marker=dict(color=color, size=6, opacity=0.28),
                customdata=_custom(pts, qcol), meta=y_title, hovertemplate=_HOVER))
        front = pts[pts["id"].isin(set(s.front_ids))].sort_values(ccol)
        fig.add_trace(go.Scatter(
            x=front[ccol], y=front[qcol], mode="lines+markers", name=f"{s.label} · front ({len(front)})",
            legendgroup=s.label, line=dict(color=color, width=2.5),
            marker=dict(color=color, size=10, line=dict(width=1.5, color="white")),
            customdata=_custom(front, qcol), meta=y_title, hovertemplate=_HOVER))
        for target, name in ((selected, "ring"), (knee, "star")):
            hit = pts[pts["id"] == target] if target is not None else pts.iloc[0:0]
            if len(hit) and name == "ring" and ring is None:
                ring = (float(hit[ccol].iloc[0]), float(hit[qcol].iloc[0]))
            if len(hit) and name == "star" and star is None:
                star = (float(hit[ccol].iloc[0]), float(hit[qcol].iloc[0]))
    if peers:
        fig.add_trace(go.Scatter(
            x=[p[1] for p in peers], y=[p[2] for p in peers], mode="markers", name=f"peer methods ({len(peers)})",
            text=[p[0] for p in peers], marker=dict(symbol="diamond", size=11, color="#555",
                                                    line=dict(width=1, color="white")),
            hovertemplate="%{text}<br>%{x:.2f}x · %{y:.4g}<extra>peer method</extra>"))
    if bar is not None and np.isfinite(bar):
        fig.add_hline(y=float(bar), line_dash="dash", line_color="#888",
                      annotation_text=f"quality bar {bar:.4g}", annotation_position="bottom left")
    if star is not None:
        fig.add_trace(go.Scatter(x=[star[0]], y=[star[1]], mode="markers+text", name=f"knee #{knee}",
                                 text=["knee"], textposition="top center", hoverinfo="skip",
                                 marker=dict(size=20, symbol="star", color="gold",
                                             line=dict(width=1.5, color="black"))))
    if ring is not None:
        fig.add_trace(go.Scatter(x=[ring[0]], y=[ring[1]], mode="markers", name=f"selected #{selected}",
                                 hoverinfo="skip", marker=dict(size=22, symbol="circle-open",
                                                               color="black", line=dict(width=3))))
    fig.update_layout(
        height=height, xaxis_title=x_title, yaxis_title=y_title,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(l=60, r=20, t=60, b=50),
        hovermode="closest", clickmode="event+select", uirevision="frontier", template="plotly_white")
    return fig


# ------------------------------------------------------------------------------------------- plans
def mode_codes(schedule: Schedule, group: str, component: str) -> np.ndarray:
    """steps x blocks array of `MODE_CODE` values."""
    rows = schedule.rows(group, component)
    return np.array([[MODE_CODE[ch] for ch in row] for row in rows], dtype=np.int8)


def _panel_grid(schedule: Schedule) -> tuple[int, int, list[tuple[int, int, str, str]]]:
    """Rows = block groups, columns = components: (rows, cols, [(row, col, group, component)])."""
    groups = schedule.model.block_groups
    cols = max(len(g.components) for g in groups)
    cells = [(r + 1, c + 1, g.name, comp) for r, g in enumerate(groups) for c, comp in enumerate(g.components)]
    return len(groups), cols, cells


def _panels(schedule: Schedule, titles: dict[tuple[str, str], str] | None = None,
            height_per_row: int | None = None) -> tuple[go.Figure, list[tuple[int, int, str, str]]]:
    rows, cols, cells = _panel_grid(schedule)
    names = [""] * (rows * cols)
    for r, c, g, comp in cells:
        names[(r - 1) * cols + (c - 1)] = (titles or {}).get((g, comp), f"{g}.{comp}")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.04,
                        vertical_spacing=min(0.12, 0.3 / rows))
    per_row = height_per_row or max(220, min(520, 14 * schedule.num_steps + 80))
    fig.update_layout(height=per_row * rows + 110, template="plotly_white",
                      margin=dict(l=50, r=20, t=60, b=90),
                      legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0))
    return fig, cells


def step_labels(schedule: Schedule) -> list[str] | None:
    """'3 · t=849' per step when the schedule lists explicit timesteps ('σ=' for sigmas), else None."""
    explicit = schedule.sampling.explicit
    if explicit is None:
        return None
    symbol = "t" if explicit[0] == "timesteps" else "σ"
    return [f"{s} · {symbol}={v:.4g}" for s, v in enumerate(explicit[1])]


def timesteps_strip(schedule: Schedule) -> go.Figure | None:
    """Where the schedule's steps sit on the noise axis (noise left, data right), one marker per step
    run, labelled by step: the strip above the plan. None for a schedule on the scheduler's own spacing."""
    explicit = schedule.sampling.explicit
    if explicit is None:
        return None
    kind, values = explicit
    steps = list(range(len(values)))
    gaps = [None] + [a - b for a, b in zip(values, values[1:])]
    fig = go.Figure(go.Scatter(
        x=list(values), y=[0] * len(values), mode="markers+text", text=[str(s) for s in steps],
        textposition="top center", name=kind, marker=dict(size=11, color=MODE_COLOR["compute"], symbol="line-ns",
                                                          line=dict(width=3, color=MODE_COLOR["compute"])),
        customdata=[[s, g if g is not None else float("nan")] for s, g in zip(steps, gaps)],
        hovertemplate=f"step %{{customdata[0]}}: {kind[:-1]} %{{x:.4g}}<br>gap to the previous %{{customdata[1]:.4g}}"
                      "<extra></extra>"))
    fig.update_xaxes(autorange="reversed", title_text=f"{kind} ({len(values)} steps run; noise → data)",
                     showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, range=[-0.5, 1.2])
    fig.update_layout(height=150, template="plotly_white", margin=dict(l=50, r=20, t=10, b=45), showlegend=False)
    return fig


def plan_heatmap(schedule: Schedule, height_per_row: int | None = None) -> go.Figure:
    """The plan: one steps x blocks panel per (group, component), compute/reuse/skip coloured; one row
    per step run, labelled with its timestep (or sigma) when the schedule lists them."""
    titles = {(g, c): f"{g}.{c} · {schedule.compute_fraction(g, c):.0%} computed"
              for g, c in schedule.components()}
    labels = step_labels(schedule)
    fig, cells = _panels(schedule, titles, height_per_row)
    used = sorted({MODE_CODE[ch] for g, c in schedule.components() for row in schedule.rows(g, c) for ch in row})
    for r, c, g, comp in cells:
        z = mode_codes(schedule, g, comp)
        text = np.vectorize(lambda v: _MODE_LABELS[v])(z) if z.size else z
        fig.add_trace(go.Heatmap(z=z, zmin=-0.5, zmax=len(_MODE_COLORS) - 0.5, colorscale=_discrete_scale(_MODE_COLORS),
                                 showscale=False,
                                 xgap=1, ygap=1, text=text, name=f"{g}.{comp}",
                                 hovertemplate="step %{y}, block %{x}: %{text}<extra>%{fullData.name}</extra>"),
                      row=r, col=c)
        fig.update_yaxes(autorange="reversed", title_text="step" if c == 1 else None, row=r, col=c)
        if labels is not None and c == 1:
            fig.update_yaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, row=r, col=c)
        fig.update_xaxes(title_text="block", row=r, col=c)
    _legend_swatches(fig, [_MODE_LABELS[i] for i in used], [_MODE_COLORS[i] for i in used])
    return fig


def plan_diff(a: Schedule, b: Schedule) -> dict[tuple[str, str], np.ndarray]:
    """Per component, steps x blocks codes indexing `DIFF_NAMES` (a = this schedule, b = the other).
    Raises ValueError when the two do not share model layout and step count."""
    if a.model.block_groups != b.model.block_groups or a.num_steps != b.num_steps:
        raise ValueError(
            f"cannot diff: {a.short_hash} has {a.num_steps} steps over "
            f"{[(g.name, g.num_blocks) for g in a.model.block_groups]}, {b.short_hash} has {b.num_steps} over "
            f"{[(g.name, g.num_blocks) for g in b.model.block_groups]}")
    out = {}
    for g, comp in a.components():
        za, zb = mode_codes(a, g, comp), mode_codes(b, g, comp)
        code = np.where(za == MODE_CODE[COMPUTE], 1, 0).astype(np.int8)
        code[(za == MODE_CODE[COMPUTE]) & (zb != MODE_CODE[COMPUTE])] = 2
        code[(zb == MODE_CODE[COMPUTE]) & (za != MODE_CODE[COMPUTE])] = 3
        code[(za != zb) & ((za == MODE_CODE[SKIP]) | (zb == MODE_CODE[SKIP])) & (code < 2)] = 4
        out[(g, comp)] = code
    return out


def diff_heatmap(a: Schedule, b: Schedule, height_per_row: int | None = None) -> go.Figure:
    """Cells where the two plans differ, coloured by who computes; same cells stay grey."""
    codes = plan_diff(a, b)
    titles = {k: f"{k[0]}.{k[1]} · {int((v >= 2).sum())} cells differ" for k, v in codes.items()}
    fig, cells = _panels(a, titles, height_per_row)
    for r, c, g, comp in cells:
        z = codes[(g, comp)]
        text = np.vectorize(lambda v: DIFF_NAMES[v])(z) if z.size else z
        fig.add_trace(go.Heatmap(z=z, zmin=-0.5, zmax=len(DIFF_COLORS) - 0.5, showscale=False,
                                 colorscale=_discrete_scale(DIFF_COLORS), xgap=1, ygap=1, text=text,
                                 name=f"{g}.{comp}",
                                 hovertemplate="step %{y}, block %{x}: %{text}<extra>%{fullData.name}</extra>"),
                      row=r, col=c)
        fig.update_yaxes(autorange="reversed", title_text="step" if c == 1 else None, row=r, col=c)
        fig.update_xaxes(title_text="block", row=r, col=c)
    _legend_swatches(fig, DIFF_NAMES, DIFF_COLORS)
    return fig


def step_fractions(schedule: Schedule) -> pd.DataFrame:
    """Fraction of blocks computed at each step (rows) per `group.component` (columns)."""
    return pd.DataFrame({f"{g}.{c}": (mode_codes(schedule, g, c) == MODE_CODE[COMPUTE]).mean(axis=1)
                         for g, c in schedule.components()}).rename_axis("step")


def block_fractions(schedule: Schedule) -> dict[str, np.ndarray]:
    """Fraction of steps each block computes, per `group.component` (groups differ in block count)."""
    return {f"{g}.{c}": (mode_codes(schedule, g, c) == MODE_CODE[COMPUTE]).mean(axis=0)
            for g, c in schedule.components()}


def mode_fractions(schedule: Schedule) -> pd.DataFrame:
    """Fraction of each component's cells in every mode of the table (rows: `group.component`)."""
    return pd.DataFrame({MODE_TABLE[ch].label: {f"{g}.{c}": float((mode_codes(schedule, g, c) == code).mean())
                                                for g, c in schedule.components()}
                         for ch, code in MODE_CODE.items()})


def fractions_figure(schedule: Schedule) -> go.Figure:
    """Fraction computed per step (left) and per block (right), one line per component."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("computed per step", "computed per block"),
                        horizontal_spacing=0.08)
    per_step, per_block = step_fractions(schedule), block_fractions(schedule)
    for i, name in enumerate(per_step.columns):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=per_step.index, y=per_step[name], name=name, legendgroup=name,
                                 mode="lines+markers", line=dict(color=color)), row=1, col=1)
        fig.add_trace(go.Scatter(x=np.arange(len(per_block[name])), y=per_block[name], name=name,
                                 legendgroup=name, showlegend=False, mode="lines+markers",
                                 line=dict(color=color)), row=1, col=2)
    fig.update_yaxes(range=[-0.03, 1.03], tickformat=".0%")
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="block", row=1, col=2)
    fig.update_layout(height=340, template="plotly_white", margin=dict(l=50, r=20, t=50, b=40))
    return fig


# ------------------------------------------------------------------------------------------- metrics
def per_prompt_figure(values: Sequence[float], metric: str, labels: Sequence[str] | None = None) -> go.Figure:
    """One bar per (prompt, seed) with the mean as a dashed line: where a schedule loses quality."""
    y = np.asarray(values, dtype=float)
    x = list(labels) if labels is not None and len(labels) == len(y) else list(range(len(y)))
    fig = go.Figure(go.Bar(x=x, y=y, name=metric, marker_color=PALETTE[0],
                           hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    if len(y) and np.isfinite(y).any():
        fig.add_hline(y=float(np.nanmean(y)), line_dash="dash", annotation_text=f"mean {np.nanmean(y):.4g}")
    fig.update_layout(height=320, template="plotly_white", xaxis_title="(prompt, seed)", yaxis_title=metric,
                      margin=dict(l=50, r=20, t=30, b=40))
    return fig


def hypervolume_figure(histories: Sequence[tuple[str, Sequence[tuple[float, float]]]], quality: str,
                       cost: str, x_title: str = "evaluations") -> go.Figure:
    """Hypervolume after each finished evaluation, one line per study (searcher): who gets further
    with the same budget (of evaluations, or of images generated: `x_title`)."""
    fig = go.Figure()
    for i, (label, history) in enumerate(histories):
        xs = [p[0] for p in history]
        ys = [p[1] for p in history]
        fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name=label, line=dict(
            color=PALETTE[i % len(PALETTE)], width=2, shape="hv")))
    fig.update_layout(height=460, template="plotly_white", xaxis_title=x_title,
                      yaxis_title=f"hypervolume ({quality} x {axis_title(cost)})",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      margin=dict(l=60, r=20, t=50, b=50), uirevision="progress")
    return fig


def validation_figure(pairs: Sequence[ValidationPair], cost: str, titles: tuple[str, str],
                      max_drop: float) -> go.Figure:
    """Each front member's quality on the calibration prompts and on held-out prompts, against its
    speedup: two lines, a member losing more than `max_drop` marked with a red x."""
    x_title, y_title = titles
    done = [p for p in pairs if p.heldout_quality is not None]
    done.sort(key=lambda p: p.original.objective(cost) or 0.0)
    x = [p.original.objective(cost) for p in done]
    ids = [[p.original.id] for p in done]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[p.calibration_quality for p in done], mode="lines+markers",
                             name="calibration prompts", customdata=ids, line=dict(color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=x, y=[p.heldout_quality for p in done], mode="lines+markers",
                             name="held-out prompts", customdata=ids, line=dict(color=PALETTE[1], dash="dot")))
    bad = [p for p in done if p.flagged(max_drop)]
    if bad:
        fig.add_trace(go.Scatter(x=[p.original.objective(cost) for p in bad], y=[p.heldout_quality for p in bad],
                                 mode="markers", name=f"drops more than {max_drop:g}",
                                 marker=dict(symbol="x", size=12, color="red")))
    fig.update_layout(height=380, xaxis_title=x_title, yaxis_title=y_title, margin=dict(t=30, b=40),
                      legend=dict(orientation="h", y=1.12))
    return fig
