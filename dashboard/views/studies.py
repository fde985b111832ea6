"""Studies page: every study with its progress and the best speedup it reached at a quality bar."""

from __future__ import annotations

import time

import streamlit as st

from schedules.objectives import COST_LABELS

from .. import state
from ..frames import studies_frame
from ..shell import Context
from .common import need_study, quality_bar


def render(ctx: Context) -> None:
    st.header("Studies")
    if not need_study(ctx):
        return
    cost_label = COST_LABELS.get(ctx.cost, ctx.cost)
    quality_bar(ctx, "studies")
    tables = {s.name: ctx.table(s.name) for s in ctx.summaries}
    frame = studies_frame(ctx.summaries, ctx.infos, tables, ctx.quality, ctx.cost,
                          float(st.session_state["bar_threshold"]))
    best_col = f"best {ctx.cost} at {ctx.quality} bar"
    event = st.dataframe(
        frame, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
        key="studies_table",
        column_config={
            best_col: st.column_config.NumberColumn(f"best {cost_label} at bar", format="%.2fx"),
            "best quality": st.column_config.NumberColumn(format="%.4g"),
            "model": st.column_config.TextColumn(width="medium"),
        })
    now = time.time()
    running = [s.name for s in ctx.summaries if s.display_status(now) == "running"]
    stale = [s.name for s in ctx.summaries if s.display_status(now).startswith("stale")]
    st.caption(f"{len(ctx.summaries)} studies · {sum(s.n_evaluations for s in ctx.summaries)} finished "
               f"evaluations · {len(running)} running" + (f" · {len(stale)} stale (their run stopped; continue "
                                                         "with `cachesearch search CONFIG --resume STUDY`)"
                                                         if stale else "")
               + (" · live refresh is on" if st.session_state.get("live") else ""))
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows:
        name = str(frame.iloc[rows[0]]["study"])
        st.write(f"Selected **{name}**.")
        cols = st.columns(4)
        if cols[0].button("Open its frontier", key="open_frontier"):
            state.request(study=name, page="Frontier", eval_id=None)
        if cols[1].button("Its hypervolume progress", key="open_progress"):
            state.request(study=name, page="Progress")
