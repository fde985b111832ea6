"""Frontier page: quality against speedup for one or several studies, every evaluation faint and each
front bold, the knee starred and the quality bar dashed; clicking a point (or picking it below)
selects that schedule. Only comparable studies (same model and prompt set) are overlaid by default."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schedules.objectives import KNEE_HELP
from store.validation import DEFAULT_MAX_DROP

from .. import data, state
from ..figures import FrontierSeries, frontier_figure, plan_heatmap, validation_figure
from ..frames import axis_label, comparable
from ..shell import Context
from .common import goto_buttons, need_study, pick_evaluation, quality_bar, record_metrics

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


def _comparable_with(ctx: Context, names: list[str]) -> list[str]:
    assert ctx.study is not None and ctx.info is not None
    mine = ctx.table(ctx.study)
    return [n for n in names if n == ctx.study or comparable(ctx.info, mine, ctx.infos[n], ctx.table(n))]


def render(ctx: Context) -> None:
    st.header("Frontier")
    if not need_study(ctx):
        return
    assert ctx.study is not None and ctx.info is not None
    names = [s.name for s in ctx.summaries]
    ss = st.session_state
    if ss.get("_compare_for") != ctx.study:         # a new study: overlay the studies comparable with it
        ss["compare"], ss["_compare_for"] = _comparable_with(ctx, names), ctx.study
    ss["compare"] = [n for n in ss.get("compare", []) if n in names] or [ctx.study]
    top = st.columns([4, 2])
    top[0].multiselect("Studies to overlay", names, key="compare",
                       help="Studies of the same model scored on the same prompts and seeds are comparable: they "
                            "are overlaid by default, each in its own colour. Others can be added, but their "
                            "figures come from another model or other prompts.")
    top[1].radio("Colour points by", ["study", "provenance"], key="color_by", horizontal=True,
                 help="provenance: who found each point (a hand-made heuristic, the search itself, a seed, an import)")
    others = [n for n in ss["compare"] if n not in _comparable_with(ctx, ss["compare"])]
    if others:
        st.warning(f"Not comparable with `{ctx.study}` (another model or other prompts): "
                   + ", ".join(f"`{n}`" for n in others))
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
    bar = quality_bar(ctx, "frontier")
    knee = data.knee(ctx.url, ctx.study, ctx.quality, ctx.cost, ctx.version(ctx.study))
    chart = st.container()      # drawn after the picker below, so the ring shows this run's choice
    st.caption(f"★ {KNEE_HELP}. Dashed line: the quality bar. Click a point to select it (box or lasso select "
               "works too); hover shows its figures and who found it.")
    st.subheader("Selected schedule")
    record = pick_evaluation(ctx, "frontier")
    with chart:
        peers = [(p.label, p.objective(ctx.cost), p.objective(ctx.quality))
                 for p in data.baselines(ctx.url, ctx.study, ctx.version(ctx.study)) if p.ok]
        peers = [p for p in peers if p[1] is not None and p[2] is not None]
        fig = frontier_figure(series, ctx.quality, ctx.cost, selected=state.selected_id(), knee=knee, bar=bar,
                              color_by=ss.get("color_by", "study"), peers=peers,
                              titles=(axis_label(ctx.info, ctx.cost), axis_label(ctx.info, ctx.quality)))
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
    _validation(ctx)
    if record is None:
        return
    record_metrics(record, ctx.quality, ctx.info)
    goto_buttons("frontier")
    with st.expander("Plan at a glance", expanded=True):
        st.plotly_chart(plan_heatmap(data.schedule(ctx.url, record.schedule_hash), height_per_row=260),
                        key="frontier_plan", config={"displaylogo": False})


def _validation(ctx: Context) -> None:
    """Calibration vs held-out quality of the front (`cachesearch validate`), members that drop flagged."""
    assert ctx.study is not None and ctx.info is not None
    pairs, sets = data.validation(ctx.url, ctx.study, ctx.quality, ctx.version(ctx.study))
    if not sets:
        st.caption(f"Held-out validation: none yet. `cachesearch validate {ctx.study}` re-scores the front on "
                   "prompts the search did not see.")
        return
    held = sets[0]
    where = f" at {held['resolution']}" if held.get("resolution") else ""
    with st.expander(f"Held-out validation ({held['prompts']}{where}, {held['results']} results)", expanded=True):
        max_drop = st.number_input("Flag a drop of more than", min_value=0.0, value=DEFAULT_MAX_DROP, step=0.5,
                                   key="max_drop", help="quality lost on held-out prompts, in the quality's unit")
        flagged = [p.original.id for p in pairs if p.flagged(max_drop)]
        if flagged:
            st.warning(f"{len(flagged)} front member(s) lose more than {max_drop:g} on held-out prompts: "
                       + ", ".join(f"#{i}" for i in flagged))
        missing = [p.original.id for p in pairs if p.heldout is None]
        if missing:
            st.caption("Not validated on this set: " + ", ".join(f"#{i}" for i in missing))
        st.plotly_chart(validation_figure(pairs, ctx.cost, (axis_label(ctx.info, ctx.cost),
                                                            axis_label(ctx.info, ctx.quality)), max_drop),
                        key="validation_chart", config={"displaylogo": False})
        st.dataframe(pd.DataFrame([{"id": p.original.id, ctx.cost: p.original.objective(ctx.cost),
                                    "calibration": p.calibration_quality, "held-out": p.heldout_quality,
                                    "drop": p.drop, "flagged": p.flagged(max_drop)} for p in pairs]),
                     hide_index=True, key="validation_table")
