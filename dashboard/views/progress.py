"""Progress page: hypervolume against evaluations for every study (searcher) of one model, on the same
objectives and each study's fixed reference point, so equal budgets can be compared."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from schedules.objectives import COST_LABELS

from .. import data
from ..figures import hypervolume_figure
from ..frames import model_labels
from ..shell import Context
from .common import need_study


def render(ctx: Context) -> None:
    st.header("Progress")
    if not need_study(ctx):
        return
    assert ctx.info is not None
    names = model_labels(ctx.infos)                     # signature -> a unique display name
    signature_of = {label: sig for sig, label in names.items()}
    ss = st.session_state
    if ss.get("_progress_for") != ctx.study or ss.get("progress_model") not in signature_of:
        ss["progress_model"], ss["_progress_for"] = names[ctx.info.model_signature], ctx.study
    chosen = st.selectbox("Model", sorted(signature_of), key="progress_model",
                          help="Studies of one model, each against its own fixed reference point")
    model = signature_of[chosen]
    studies = [s for s in ctx.summaries if ctx.infos[s.name].model_signature == model]
    histories, rows, problems = [], [], []
    for s in studies:
        history = data.hypervolume(ctx.url, s.name, ctx.quality, ctx.cost, ctx.version(s.name))
        if isinstance(history, str):
            problems.append(f"`{s.name}`: {history}")
            continue
        info = ctx.infos[s.name]
        histories.append((f"{s.name} ({info.searcher})", [(p.n_evaluations, p.hypervolume) for p in history]))
        rows.append({"study": s.name, "searcher": info.searcher, "status": s.status,
                     "evaluations": len(history), "hypervolume": history[-1].hypervolume if history else 0.0,
                     "reference point": ", ".join(f"{k}={v:g}" for k, v in sorted(info.reference_point.items()))})
    for p in problems:
        st.warning(f"No hypervolume for {p}")
    if not histories:
        st.info("No study of this model has a hypervolume history on these objectives yet.")
        return
    st.plotly_chart(hypervolume_figure(histories, ctx.quality, ctx.cost), key="hv_chart",
                    config={"displaylogo": False})
    st.caption(f"Hypervolume of the {ctx.quality} vs {COST_LABELS.get(ctx.cost, ctx.cost)} front after each "
               "finished evaluation (failures count toward the budget and add nothing).")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"hypervolume": st.column_config.NumberColumn(format="%.5g")})
