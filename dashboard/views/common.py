"""Pieces several pages share: the empty-database message, labels, and the evaluation picker."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from schedules.objectives import COST_LABELS, COST_NAMES
from schedules.provenance import describe
from store import EvaluationRecord, StudyInfo

from .. import data, state
from ..frames import axis_label, column, unit
from ..shell import Context


def need_study(ctx: Context) -> bool:
    """False (after saying so) when there is nothing to show yet."""
    if not ctx.summaries:
        st.info(f"The database `{ctx.url}` holds no studies yet. Start one with `cachesearch search "
                "CONFIG`; with live refresh on, its results appear here as they are recorded.")
        return False
    if ctx.study is None:
        st.info("Choose a study in the sidebar.")
        return False
    return True


def fmt(value: float | None, spec: str = ".4g", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def row_label(row: pd.Series | None, evaluation_id: int, quality: str, cost: str) -> str:
    """`#12 · psnr 31.2 · MAC speedup 2.41x · 3fa9c0d1`, for pickers."""
    if row is None:
        return f"#{evaluation_id}"
    q, c = row.get(column(quality)), row.get(column(cost))
    found = str(row.get("found_by") or "")
    return (f"#{evaluation_id} · {quality} {fmt(q)} · {COST_LABELS.get(cost, cost)} {fmt(c, '.2f', 'x')} · "
            f"{str(row['schedule_hash'])[:8]}" + (f" · {found}" if found else ""))


def _default_id(ctx: Context, front: list[int], done_ids: list[int]) -> int | None:
    assert ctx.study is not None
    knee = data.knee(ctx.url, ctx.study, ctx.quality, ctx.cost, ctx.version(ctx.study))
    if knee is not None:
        return knee
    return front[0] if front else (done_ids[-1] if done_ids else None)


def pick_evaluation(ctx: Context, where: str) -> EvaluationRecord | None:
    """The selected evaluation of the current study (the knee of its front until the user picks one),
    with a picker over the front members and a box to jump to any id or schedule hash."""
    assert ctx.study is not None
    table = ctx.table(ctx.study)
    frame = table.frame
    if frame.empty:
        st.info(f"Study `{ctx.study}` has no evaluations yet.")
        return None
    front = ctx.front(ctx.study)
    done_ids = [int(i) for i in table.done()["id"]]
    by_id = frame.set_index("id", drop=False)
    chosen = state.selected_id()
    if chosen not in by_id.index:
        chosen = _default_id(ctx, front, done_ids) or int(frame["id"].iloc[-1])
        state.select(chosen)
    options = list(reversed(front))            # fastest first
    if chosen not in options:
        options.insert(0, chosen)
    left, right = st.columns([3, 1])
    picked = left.selectbox(
        f"Evaluation ({len(front)} on the front of {ctx.quality} vs {COST_LABELS.get(ctx.cost, ctx.cost)})",
        options, index=options.index(chosen),
        format_func=lambda i: row_label(by_id.loc[i] if i in by_id.index else None, i, ctx.quality, ctx.cost)
        + ("" if i in front else " (not on the front)"))
    state.select(picked)
    jump = right.text_input("Jump to id or hash", key=f"jump_{where}", placeholder="e.g. 42 or 3fa9c0d1")
    if jump:
        target = _resolve(frame, jump.strip())
        if target is None:
            right.warning(f"No evaluation `{jump}` in study `{ctx.study}`.")
        elif target != picked:
            state.select(target)
            st.session_state.pop(f"jump_{where}", None)
            st.rerun()
    return data.evaluation(ctx.url, int(state.selected_id() or picked))


def _resolve(frame: pd.DataFrame, text: str) -> int | None:
    if text.lstrip("#").isdigit() and int(text.lstrip("#")) in set(frame["id"]):
        return int(text.lstrip("#"))
    hits = frame[frame["schedule_hash"].str.startswith(text.lower())] if len(text) >= 4 else frame.iloc[0:0]
    return int(hits["id"].iloc[0]) if len(hits) else None


def record_metrics(record: EvaluationRecord, quality: str, info: StudyInfo | None = None) -> None:
    """The headline figures of one evaluation as a row of `st.metric`s (units included), and who found it."""
    cols = st.columns(3 + len(COST_NAMES))
    q_unit = unit(info, quality)
    cols[0].metric(quality, fmt(record.objective(quality), ".4g", f" {q_unit}" if q_unit else ""))
    for col, name in zip(cols[1:], COST_NAMES):
        col.metric(COST_LABELS[name], fmt(record.objective(name), ".2f", "x"))
    cols[-2].metric("computed", fmt(record.compute_fraction, ".1%"))
    cols[-1].metric("status", record.status)
    others = {k: v for k, v in sorted(record.metrics.items()) if k != quality}
    if others:
        st.caption(" · ".join(f"{k} {fmt(v)}{' ' + unit(info, k) if unit(info, k) else ''}"
                              for k, v in others.items()))
    st.caption(f"Evaluation #{record.id} · found by {describe(record.provenance)}")
    if record.error:
        st.warning(f"Evaluation failed: {record.error}")


def _default_bar(ctx: Context) -> float:
    """A quality bar to start from: the median quality of the selected study's done evaluations, so
    it separates studies and schedules (the hypervolume reference value would admit nearly everything)."""
    if ctx.study:
        values = ctx.table(ctx.study).done().get(column(ctx.quality))
        if values is not None:
            finite = values.to_numpy(dtype=float)
            finite = finite[np.isfinite(finite)]
            if len(finite):
                return float(np.median(finite))
    return 0.0


def quality_bar(ctx: Context, where: str) -> float:
    """The quality bar (one value shared by the Studies and Frontier pages), with its input."""
    ss = st.session_state
    if ss.get("_bar_for") != ctx.quality or not math.isfinite(ss.get("bar_threshold", math.nan)):
        ss["bar_threshold"], ss["_bar_for"] = _default_bar(ctx), ctx.quality   # new metric, new scale
    direction = "at least" if ctx.info is None or ctx.info.maximize(ctx.quality) else "at most"
    label = "Quality bar" if where == "frontier" else (
        f"Quality bar: best {COST_LABELS.get(ctx.cost, ctx.cost)} among evaluations with {ctx.quality} {direction}")
    st.number_input(label, key="bar_threshold", format="%.4g",
                    help=f"{axis_label(ctx.info, ctx.quality)} {direction} this value")
    return float(ss["bar_threshold"])


def goto_buttons(where: str, pages: tuple[str, ...] = ("Schedule", "Images", "Export")) -> None:
    cols = st.columns(len(pages) + 2)
    for col, page in zip(cols, pages):
        if col.button(f"Open in {page}", key=f"goto_{where}_{page}"):
            state.request(page=page)
