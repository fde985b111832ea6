"""Frontier page: quality against speedup for one or several studies, every evaluation faint and each
front bold; clicking a point (or picking it below) selects that schedule."""

from __future__ import annotations

import streamlit as st

from .. import data, state
from ..figures import FrontierSeries, frontier_figure, plan_heatmap
from ..shell import Context
from .common import goto_buttons, need_study, pick_evaluation, record_metrics

_SEEN = "_frontier_selection"


def _clicked(event: object) -> list[int]:
    """Evaluation ids of the points selected in the chart (customdata[0]), in selection order."""
    selection = getattr(event, "selection", None) or {}
    points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    ids = []
    for p in points or []:
        custom = p.get("customdata") if isinstance(p, dict) else None
        if custom:
            try:
                ids.append(int(float(custom[0])))
            except (TypeError, ValueError):
                continue
    return ids


def render(ctx: Context) -> None:
    st.header("Frontier")
    if not need_study(ctx):
        return
    assert ctx.study is not None and ctx.info is not None
    names = [s.name for s in ctx.summaries]
    same_model = [n for n in names if ctx.infos[n].model_signature == ctx.info.model_signature]
    ss = st.session_state
    if ss.get("_compare_for") != ctx.study:         # a new study: compare with its model's other studies
        ss["compare"], ss["_compare_for"] = same_model, ctx.study
    ss["compare"] = [n for n in ss.get("compare", []) if n in names] or [ctx.study]
    st.multiselect("Studies to overlay", names, key="compare",
                   help="Studies of the same model and prompt set are comparable; each gets its own colour.")
    series, owner = [], {}
    for name in ss["compare"]:
        table = ctx.table(name)
        points = table.points(ctx.quality, ctx.cost)
        front = ctx.front(name) if len(points) else []
        series.append(FrontierSeries(f"{name} ({ctx.infos[name].searcher})", points, front))
        owner.update(dict.fromkeys(points["id"].tolist(), name))
    if not any(len(s.points) for s in series):
        st.info(f"No finished evaluation reports both {ctx.quality} and {ctx.cost} yet "
                f"(pick another quality metric or speedup in the sidebar, or wait for results).")
        return
    chart = st.container()      # drawn after the picker below, so the ring shows this run's choice
    st.caption("Click a point to select it (box or lasso select works too); hover shows the schedule's figures.")
    st.subheader("Selected schedule")
    record = pick_evaluation(ctx, "frontier")
    with chart:
        fig = frontier_figure(series, ctx.quality, ctx.cost, selected=state.selected_id())
        event = st.plotly_chart(fig, key="frontier_chart", on_select="rerun", selection_mode="points",
                                config={"displaylogo": False, "scrollZoom": True})
    clicked = _clicked(event)
    if clicked and tuple(clicked) != ss.get(_SEEN):
        ss[_SEEN] = tuple(clicked)
        target = clicked[0]
        state.select(target)
        if owner.get(target, ctx.study) != ctx.study:
            state.request(study=owner[target], eval_id=target)
        st.rerun()
    if record is None:
        return
    record_metrics(record, ctx.quality)
    goto_buttons("frontier")
    with st.expander("Plan at a glance", expanded=True):
        st.plotly_chart(plan_heatmap(data.schedule(ctx.url, record.schedule_hash), height_per_row=260),
                        key="frontier_plan", config={"displaylogo": False})
