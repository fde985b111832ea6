"""The frame around every page: database URL, sidebar (page, study, objectives, live refresh), the
page itself, and the error boundary that turns any failure into a message instead of a traceback."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable

import streamlit as st

from schedules.objectives import COST_LABELS, COST_NAMES, QUALITY
from store import StudyInfo, StudySummary
from store import database_url as normalize_url

from . import data, state
from .frames import EvalTable, quality_metrics

log = logging.getLogger("cachesearch.dashboard")
LIVE_EVERY = 5.0      # seconds between automatic redraws while a study is running


@dataclass
class Context:
    """What a page needs: where the store is, which studies exist, and the user's current choices."""

    url: str
    summaries: list[StudySummary]
    infos: dict[str, StudyInfo]
    study: str | None
    quality: str
    cost: str

    def version(self, study: str) -> data.Version:
        for s in self.summaries:
            if s.name == study:
                return data.version(s)
        raise data.DashboardError("error", f"study '{study}' is no longer in the database {self.url}")

    def table(self, study: str) -> EvalTable:
        """The study's evaluations (re-read only when the study changed)."""
        return data.evaluations(self.url, study, self.version(study))

    def front(self, study: str) -> list[int]:
        """Front ids on the chosen objectives, by cost ascending."""
        return data.front_ids(self.url, study, self.quality, self.cost, self.version(study))

    @property
    def info(self) -> StudyInfo | None:
        return self.infos.get(self.study) if self.study else None


def database_url(argv: list[str] | None = None) -> str:
    """`--db URL` after `streamlit run app.py --`, else `$CACHESEARCH_DB`, else the default file."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--db" and i + 1 < len(args):
            return normalize_url(args[i + 1])
        if arg.startswith("--db="):
            return normalize_url(arg.split("=", 1)[1])
    return normalize_url(None)   # $CACHESEARCH_DB, else the default file


def show_problem(problem: data.DashboardError, url: str) -> None:
    """A store problem as a page: what is wrong and what to do about it."""
    hints = {
        "missing": "Start a search to create it (`cachesearch search CONFIG`), or point the dashboard at "
                   "another database: `cachesearch dashboard --db sqlite:///path/to/results.db`.",
        "version": "This dashboard cannot read that file. Open it with the cachesearch release that wrote "
                   "it, or start a new database.",
        "not_store": "The file exists but is not a cachesearch results database.",
        "busy": "Nothing is lost: the page retries on its own.",
    }
    titles = {"missing": "No database", "version": "Database from another cachesearch version",
              "not_store": "Not a cachesearch database", "busy": "Database busy"}
    st.error(f"**{titles.get(problem.kind, 'Cannot read the database')}** — {problem.message}")
    if problem.kind in hints:
        st.info(hints[problem.kind])
    st.caption(f"Database: `{url}`")


def _sidebar(url: str, summaries: list[StudySummary], infos: dict[str, StudyInfo]) -> Context:
    sb = st.sidebar
    sb.title("cachesearch")
    sb.radio("Page", state.PAGES, key="page")
    names = [s.name for s in summaries]
    now = time.time()
    shown = {s.name: s.display_status(now) for s in summaries}
    state.choose("study", names)
    if names:
        sb.selectbox("Study", names, key="study",
                     format_func=lambda n: f"{n} ({infos[n].searcher}, {shown[n]})")
    study = st.session_state.get("study")
    tables = [data.evaluations(url, study, data.version(next(s for s in summaries if s.name == study)))] \
        if study else []
    metrics = quality_metrics([infos[study]] if study else list(infos.values()), tables) or ["psnr"]
    state.choose("quality", metrics, infos[study].quality if study and _has_quality(infos[study]) else None)
    sb.selectbox("Quality metric", metrics, key="quality")
    state.choose("cost", list(COST_NAMES), infos[study].cost if study and _has_cost(infos[study]) else None)
    sb.radio("Speedup", list(COST_NAMES), key="cost", format_func=lambda c: f"{COST_LABELS[c]} (x)",
             help="MAC speedup: all-compute MACs / schedule MACs; latency speedup: measured seconds, all compute "
                  "/ schedule, on the same worker; modelled latency speedup: the latency cost model's prediction")
    running = any(status == "running" for status in shown.values())
    st.session_state.setdefault("live", running)
    sb.toggle(f"Live refresh (every {LIVE_EVERY:g} s)", key="live",
              help="Redraw the page with fresh data while a search writes to the database.")
    if sb.button("Refresh now"):
        data.clear()
    sb.caption(f"Database: `{url}`  \nRead {time.strftime('%H:%M:%S')} · read-only")
    return Context(url, summaries, infos, study, st.session_state["quality"], st.session_state["cost"])


def _has_quality(info: StudyInfo) -> bool:
    return any(o.role == QUALITY for o in info.objectives)


def _has_cost(info: StudyInfo) -> bool:
    return any(o.role != QUALITY for o in info.objectives)


def _guard(render: Callable[[Context], None], ctx: Context) -> None:
    try:
        ctx.summaries, ctx.infos = data.studies(ctx.url)    # fresh counts on every live redraw
        render(ctx)
    except data.DashboardError as problem:
        show_problem(problem, ctx.url)
    except Exception as exc:        # last resort: a message, and the traceback in the server log
        log.exception("dashboard page %s failed", st.session_state.get("page"))
        st.error(f"This page failed: {exc.__class__.__name__}: {exc}. The data is untouched; "
                 "the server log has the details.")


#: The page body redrawn on a timer (only the page, not the sidebar, so choices are not disturbed).
_live = st.fragment(run_every=LIVE_EVERY)(_guard)


def main(views: dict[str, Callable[[Context], None]]) -> None:
    st.set_page_config(page_title="cachesearch", page_icon=":material/speed:", layout="wide")
    state.start_run()
    url = database_url()
    try:
        summaries, infos = data.studies(url)
        ctx = _sidebar(url, summaries, infos)
    except data.DashboardError as problem:
        st.sidebar.title("cachesearch")
        if st.sidebar.button("Retry"):
            data.clear()
        show_problem(problem, url)
        return
    except Exception as exc:        # never a traceback on the page; the log keeps it
        log.exception("dashboard sidebar failed")
        st.error(f"The dashboard failed to read {url}: {exc.__class__.__name__}: {exc}")
        return
    state.sync_query_params()
    render = views[st.session_state.get("page", state.PAGES[0])]
    if st.session_state.get("live"):
        _live(render, ctx)
    else:
        _guard(render, ctx)
