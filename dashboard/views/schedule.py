"""Schedule page: what a schedule does step by step (plan heatmap, fractions computed per step and per
block), how it differs from another schedule, and its metric on every calibration (prompt, seed)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schedules import Schedule

from .. import data
from ..figures import (
    diff_heatmap, fractions_figure, mode_fractions, per_prompt_figure, plan_diff, plan_heatmap, timesteps_strip,
)
from ..shell import Context
from .common import need_study, pick_evaluation, record_metrics, row_label

ALL_COMPUTE = "all-compute (the reference)"
_CHART = {"displaylogo": False}


def _diff_section(ctx: Context, schedule: Schedule, record_id: int) -> None:
    assert ctx.study is not None
    table = ctx.table(ctx.study)
    by_id = table.frame.set_index("id", drop=False)
    front = list(reversed(ctx.front(ctx.study)))
    options: list[object] = ["none", ALL_COMPUTE] + [i for i in front if i != record_id]
    ss = st.session_state
    if ss.get("diff_with") not in options:
        ss["diff_with"] = "none"
    other = st.selectbox("Compare with", options, key="diff_with", format_func=lambda o: o if isinstance(o, str)
                         else row_label(by_id.loc[o] if o in by_id.index else None, int(o), ctx.quality, ctx.cost))
    if other == "none":
        return
    if other == ALL_COMPUTE:
        b = Schedule.all_compute(schedule.model, schedule.sampling)
    else:
        b = data.schedule(ctx.url, str(by_id.loc[other, "schedule_hash"]))
    try:
        codes = plan_diff(schedule, b)
    except ValueError as exc:
        st.warning(str(exc))
        return
    n = sum(int((v >= 2).sum()) for v in codes.values())
    total = sum(v.size for v in codes.values())
    st.write(f"**{n}** of {total} (step, block, component) cells differ from {b.short_hash} "
             f"({b.compute_fraction():.1%} computed there, {schedule.compute_fraction():.1%} here).")
    st.plotly_chart(diff_heatmap(schedule, b), key="diff_chart", config=_CHART)


def _per_prompt_section(ctx: Context, per_prompt: dict[str, list[float]]) -> None:
    if not per_prompt:
        st.info("This evaluation stored no per-prompt values.")
        return
    metrics = sorted(per_prompt)
    ss = st.session_state
    if ss.get("per_prompt_metric") not in metrics:
        ss["per_prompt_metric"] = ctx.quality if ctx.quality in metrics else metrics[0]
    metric = st.selectbox("Metric", metrics, key="per_prompt_metric")
    st.plotly_chart(per_prompt_figure(per_prompt[metric], metric), key="per_prompt_chart", config=_CHART)
    longest = max(len(v) for v in per_prompt.values())
    frame = pd.DataFrame({m: list(v) + [None] * (longest - len(v)) for m, v in per_prompt.items()})
    st.dataframe(frame.rename_axis("(prompt, seed)"), width="stretch", height=min(400, 40 + 35 * longest))


def _provenance_section(ctx: Context, provenance: dict) -> None:
    """Who found it, in one line, its parents as evaluation ids of this study, and the raw provenance."""
    assert ctx.study is not None
    parents = provenance.get("parents") or []
    if parents:
        frame = ctx.table(ctx.study).frame
        ids = {h: int(i) for h, i in zip(frame["schedule_hash"], frame["id"])}
        st.caption("Parents: " + ", ".join(f"#{ids[h]} ({h[:8]})" if h in ids else h[:8] for h in parents))
    with st.expander("Provenance"):
        st.json(provenance or {})


def _steps_text(schedule: Schedule, provenance: dict) -> str:
    """'12 steps at explicit timesteps (the study runs 20)', or 'N steps' on the scheduler's spacing."""
    explicit = schedule.sampling.explicit
    if explicit is None:
        return f"{schedule.num_steps} steps"
    reference = (provenance or {}).get("reference_steps")
    return (f"{schedule.num_steps} steps at explicit {explicit[0]}"
            + (f" (the study runs {reference})" if reference else ""))


def render(ctx: Context) -> None:
    st.header("Schedule")
    if not need_study(ctx):
        return
    record = pick_evaluation(ctx, "schedule")
    if record is None:
        return
    schedule = data.schedule(ctx.url, record.schedule_hash)
    record_metrics(record, ctx.quality, ctx.info)
    steps = _steps_text(schedule, record.provenance)
    st.caption(f"Schedule `{schedule.hash}` · {schedule.model.transformer_class} · {steps} · "
               f"searcher step {record.step if record.step is not None else '–'} · worker {record.worker or '–'}")
    _provenance_section(ctx, record.provenance)
    tabs = st.tabs(["Plan", "Fractions computed", "Diff", "Metrics per prompt"])
    with tabs[0]:
        strip = timesteps_strip(schedule)
        if strip is not None:
            st.plotly_chart(strip, key="timesteps_chart", config=_CHART)
        st.plotly_chart(plan_heatmap(schedule), key="plan_chart", config=_CHART)
    with tabs[1]:
        st.plotly_chart(fractions_figure(schedule), key="fractions_chart", config=_CHART)
        st.dataframe(mode_fractions(schedule).style.format("{:.0%}"), width="content")
    with tabs[2]:
        _diff_section(ctx, schedule, record.id)
    with tabs[3]:
        _per_prompt_section(ctx, record.per_prompt)
