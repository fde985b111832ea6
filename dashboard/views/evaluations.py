"""Evaluations page: every evaluation of the study in one table (what optuna-dashboard users look for
first): sortable by any column, filtered by status, who found it, searcher or text, downloadable as
CSV, and a click on a row opens that evaluation on the Schedule page."""

from __future__ import annotations

import streamlit as st

from store import safe_filename

from .. import state
from ..frames import evaluations_frame, filter_evaluations
from ..shell import Context
from .common import need_study

_TABLE = "evaluations_table"


def _options(frame, column: str, key: str) -> list[str]:
    """The column's values, and the filter's remembered choice kept to those (options change as a
    study runs; a widget must never be given a value that is not an option)."""
    options = sorted({str(v) for v in frame[column] if str(v)})
    st.session_state[key] = [v for v in st.session_state.get(key, []) if v in options]
    return options


def render(ctx: Context) -> None:
    st.header("Evaluations")
    if not need_study(ctx):
        return
    assert ctx.study is not None
    frame = evaluations_frame(ctx.table(ctx.study), ctx.info)
    if frame.empty:
        st.info(f"Study `{ctx.study}` has no evaluations yet.")
        return
    cols = st.columns([2, 2, 2, 3])
    statuses = cols[0].multiselect("Status", _options(frame, "status", "ev_status"), key="ev_status",
                                   placeholder="any")
    found = cols[1].multiselect("Found", _options(frame, "found", "ev_found"), key="ev_found", placeholder="anyone",
                                help="heuristic: a hand-made schedule (FORA, TGATE, ...); found by the search: "
                                     "proposed by the searcher itself; seed / imported: from another study or file")
    searchers = cols[2].multiselect("Searcher", _options(frame, "searcher", "ev_searcher"), key="ev_searcher",
                                    placeholder="any")
    text = cols[3].text_input("Contains", key="ev_text", placeholder="e.g. fora, generation 3, 3fa9c0d1, timeout")
    shown = filter_evaluations(frame, statuses, found, searchers, text or "")
    event = st.dataframe(
        shown, hide_index=True, width="stretch", height=min(640, 38 + 35 * max(1, len(shown))),
        on_select="rerun", selection_mode="single-row", key=_TABLE,
        column_config={
            "id": st.column_config.NumberColumn(format="%d", help="the evaluation id (as in `cachesearch front`)"),
            "computed": st.column_config.NumberColumn(format="percent"),
            "found by": st.column_config.TextColumn(width="medium"),
            "error": st.column_config.TextColumn(width="medium"),
        })
    left, right = st.columns([3, 1])
    left.caption(f"{len(shown)} of {len(frame)} evaluations · click a column header to sort · select a row to "
                 "open it on the Schedule page")
    right.download_button("Download CSV", shown.to_csv(index=False).encode("utf-8"), key="evaluations_csv",
                          file_name=f"{safe_filename(ctx.study)}_evaluations.csv", mime="text/csv")
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if rows and rows[0] < len(shown):
        state.request(page="Schedule", eval_id=int(shown.iloc[rows[0]]["id"]))
