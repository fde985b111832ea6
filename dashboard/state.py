"""What the user has chosen (page, study, objectives, selected evaluation), kept across reruns and pages.

Streamlit forgets a widget's value when the widget is not drawn in a run (e.g. on another page), and
refuses changes to a widget's value after it has been drawn in the same run. So choices live in
session state under fixed keys, are re-seeded from the URL's query parameters on a fresh session (a
shared link such as `?page=frontier&study=pixart-ecad` opens that view), and programmatic changes
(clicking a point, "open in Schedule") go through `request`, applied at the top of the next run before
any widget exists.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

PAGES = ("Studies", "Frontier", "Evaluations", "Schedule", "Images", "Progress", "Export")
#: Widget keys that must survive page switches (widgets on pages not drawn would drop them).
PERSIST = ("page", "study", "quality", "cost", "live", "compare", "diff_with", "per_prompt_metric",
           "bar_threshold", "progress_model", "color_by", "ev_status", "ev_found", "ev_searcher", "ev_text")
_PENDING = "_pending"
_QUERY_KEYS = ("page", "study", "eval")


def start_run() -> None:
    """Call first in every run: seed from the URL once, keep persisted keys, apply pending requests."""
    ss = st.session_state
    if "_seeded" not in ss:
        ss["_seeded"] = True
        qp = st.query_params
        page = str(qp.get("page", "")).capitalize()
        if page in PAGES:
            ss["page"] = page
        if qp.get("study"):
            ss["study"] = str(qp["study"])
        if str(qp.get("eval", "")).isdigit():
            ss["eval_id"] = int(qp["eval"])
    for key in PERSIST:
        if key in ss:
            ss[key] = ss[key]      # re-assigning marks the value as user state, so it outlives its widget
    pending = ss.pop(_PENDING, None)
    if pending:
        for key, value in pending.items():
            ss[key] = value


def request(rerun: bool = True, **changes: Any) -> None:
    """Change widget-backed choices (page, study, eval_id, ...) from code: applied on the next run."""
    st.session_state.setdefault(_PENDING, {}).update(changes)
    if rerun:
        st.rerun()


def selected_id() -> int | None:
    value = st.session_state.get("eval_id")
    return int(value) if value is not None else None


def select(evaluation_id: int | None) -> None:
    """Set the selected evaluation (a plain key, not a widget: safe at any point of a run)."""
    st.session_state["eval_id"] = None if evaluation_id is None else int(evaluation_id)


def choose(key: str, options: list[Any], default: Any = None) -> None:
    """Make a selectbox's session value valid before the widget is drawn (options change as studies
    and metrics appear), so no widget is ever given both a default and a session value."""
    ss = st.session_state
    if not options:
        ss.pop(key, None)
    elif ss.get(key) not in options:
        ss[key] = default if default in options else options[0]


def sync_query_params() -> None:
    """Mirror page, study and selected evaluation into the URL so a view can be linked to."""
    ss = st.session_state
    wanted = {"page": str(ss.get("page", PAGES[0])).lower(), "study": ss.get("study"), "eval": ss.get("eval_id")}
    for key in _QUERY_KEYS:
        value = wanted[key]
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)
