"""Peer methods scored in a study (`evaluators.baselines` via `Evaluator.evaluate_baseline`): stored
beside the study's evaluations in their own table (`models.BaselineRun`), never in a front.

The comparison a user asks for -- "is my front better than just turning on X?" -- lives here too
(`compare`): for every peer setting, our best front quality at a speedup at least the peer's, on
MACs and on measured latency, and the margin. The CLI (`cachesearch compare`, `front`) and the
dashboard read it from here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from schedules import BaselineResult

from . import codec
from .models import BaselineRun, Study
from .records import DONE, FAILED


@dataclass
class BaselineRecord(BaselineResult):
    id: int = 0
    study: str = ""
    recorded_at: float | None = None


def record_baseline(session: Session, study_id: int, result: BaselineResult) -> int:
    """Write (or replace) the result of one peer setting on one prompt set; returns its id."""
    if result.status not in (DONE, FAILED):
        raise ValueError(f"a baseline result must be '{DONE}' or '{FAILED}', got {result.status!r}")
    prompt_set = result.prompt_set_hash or ""
    row = session.scalars(select(BaselineRun).where(
        BaselineRun.study_id == study_id, BaselineRun.label == result.label,
        BaselineRun.prompt_set_hash == prompt_set)).first()
    if row is None:
        row = BaselineRun(study_id=study_id, label=result.label, prompt_set_hash=prompt_set)
        session.add(row)
    row.method, row.status, row.error, row.worker = result.method, result.status, result.error, result.worker
    row.settings = codec.check({k: v for k, v in result.settings.items() if k != "mag_ratios"}, "settings")
    row.metrics = codec.check(dict(result.metrics), "metrics")
    row.per_prompt = codec.check({k: list(v) for k, v in result.per_prompt.items()}, "per_prompt")
    row.macs = int(result.macs) if result.macs is not None else None
    row.mac_speedup, row.latency_s, row.latency_speedup = result.mac_speedup, result.latency_s, result.latency_speedup
    row.hooked = list(result.hooked)
    row.finished_at = result.finished_at
    row.recorded_at = time.time()
    session.execute(update(Study).where(Study.id == study_id).values(updated_at=row.recorded_at))
    session.flush()
    return row.id


def read_baselines(session: Session, study_id: int, study: str) -> list[BaselineRecord]:
    rows = session.scalars(select(BaselineRun).where(BaselineRun.study_id == study_id).order_by(BaselineRun.id))
    return [BaselineRecord(method=r.method, settings=dict(r.settings), label=r.label, status=r.status,
                           metrics=dict(r.metrics), per_prompt=dict(r.per_prompt), macs=r.macs,
                           mac_speedup=r.mac_speedup, latency_s=r.latency_s, latency_speedup=r.latency_speedup,
                           hooked=list(r.hooked), error=r.error, worker=r.worker,
                           prompt_set_hash=r.prompt_set_hash or None, finished_at=r.finished_at,
                           id=r.id, study=study, recorded_at=r.recorded_at) for r in rows]


# ------------------------------------------------------------------------------ the comparison
@dataclass(frozen=True)
class Margin:
    """Our best quality at a speedup at least the peer's, on one speed axis (None: nothing that fast)."""

    cost: str
    peer_speed: float | None
    ours_id: int | None
    ours_quality: float | None
    ours_speed: float | None
    margin: float | None          # ours - peer, in the quality's unit (sign flipped for lower-is-better)


@dataclass(frozen=True)
class Comparison:
    baseline: BaselineRecord
    quality: str
    peer_quality: float | None
    by_cost: dict[str, Margin]


def margin_at(front: Sequence[Any], quality: Any, cost: str, peer: BaselineRecord) -> Margin:
    speed = peer.objective(cost)
    q_peer = peer.objective(quality.name)
    if speed is None or q_peer is None:
        return Margin(cost, speed, None, None, None, None)
    faster = [r for r in front if (r.objective(cost) or -math.inf) >= speed and r.objective(quality.name) is not None]
    if not faster:
        return Margin(cost, speed, None, None, None, None)
    sign = 1.0 if quality.maximize else -1.0
    best = max(faster, key=lambda r: sign * r.objective(quality.name))
    q = best.objective(quality.name)
    return Margin(cost, speed, best.id, q, best.objective(cost), sign * (q - q_peer))


def compare(store: Any, study: str, quality: str | None = None,
            costs: Sequence[str] = ("mac_speedup", "latency_speedup")) -> list[Comparison]:
    """For every peer setting of the study: our front's best quality at >= its speed, per cost axis
    (each axis uses the study's front on that axis, so a latency comparison uses measured latency)."""
    info = store.get_study(study)
    q = info.pair(quality, None)[0]
    fronts = {c: store.front(study, q.name, c) for c in costs}
    out = []
    for peer in store.baselines(study):
        margins = {c: margin_at(fronts[c], q, c, peer) for c in costs} if peer.ok else {}
        out.append(Comparison(peer, q.name, peer.objective(q.name) if peer.ok else None, margins))
    return out
