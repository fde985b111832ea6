"""Export page: download the selected schedule exactly as `cachesearch export` writes it (the
contract's JSON with measured metrics and provenance), and as a cache-dit config when the plan fits
cache-dit's static steps mask (otherwise the reason it does not)."""

from __future__ import annotations

import streamlit as st

from store import PICK_HELP

from .. import data, state
from ..shell import Context
from .common import need_study, pick_evaluation, record_metrics


def _pick_by_rule(ctx: Context) -> None:
    assert ctx.study is not None
    with st.form("pick_rule"):
        rule = st.text_input("Pick by rule", value="knee", help=PICK_HELP)
        if st.form_submit_button("Select"):
            picked = data.pick(ctx.url, ctx.study, rule, ctx.quality, ctx.cost)
            if isinstance(picked, str):
                st.warning(picked)
            else:
                state.select(picked)
                st.rerun()


def render(ctx: Context) -> None:
    st.header("Export")
    if not need_study(ctx):
        return
    assert ctx.study is not None
    _pick_by_rule(ctx)
    record = pick_evaluation(ctx, "export")
    if record is None:
        return
    record_metrics(record, ctx.quality, ctx.info)
    if record.status != "done":
        st.warning(f"Evaluation #{record.id} is {record.status}; its file would carry no measured metrics.")
    left, right = st.columns(2)
    with left:
        st.subheader("cachesearch JSON")
        made = data.export_file(ctx.url, ctx.study, record.id, "cachesearch", ctx.quality, ctx.cost)
        if isinstance(made, str):
            st.error(made)
        else:
            body, name = made
            st.download_button(f"Download {name}", body, file_name=name, mime="application/json",
                               key="download_json", type="primary")
            st.caption("Apply it with `apply_schedule(pipe, load_schedule(path))`.")
            with st.expander("Preview"):
                st.code(body.decode("utf-8")[:20000], language="json")
    with right:
        st.subheader("cache-dit config")
        made = data.export_file(ctx.url, ctx.study, record.id, "cache-dit", ctx.quality, ctx.cost)
        if isinstance(made, str):
            st.warning(f"Not available for this schedule: {made}")
        else:
            body, name = made
            st.download_button(f"Download {name}", body, file_name=name, mime="application/x-yaml",
                               key="download_cachedit")
            st.caption("Load it with `cache_dit.enable_cache(pipe, **cache_dit.load_configs(path))`.")
            with st.expander("Preview"):
                st.code(body.decode("utf-8"), language="yaml")
