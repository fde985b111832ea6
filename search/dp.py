"""Dynamic programming for cache and timestep schedules: pure functions on numpy arrays.

Cache (CacheQuant-style segmentation): a unit (a component of one block, or of all blocks together)
computes at steps 0 = c_0 < c_1 < ... < c_{k-1} and reuses in between. A segment "compute at a, reuse
until b" costs the sum over its reuse steps of the profiled distance, C[a, b] = sum_{a<s<b} D[a, s].
The Bellman recurrence F_k(b) = min_a F_{k-1}(a) + C[a, b] gives the best plan for *every* compute
budget k at once, in O(k N^2).

With forecasts allowed, a served step s between computes a and b may also extrapolate from the two
last computes (p, a), so its cost depends on p too: `served_costs` takes the best of reuse and each
forecast per cell, and `bellman_two_history` runs the recurrence over the last two computes,
G_k(a, b) = min_p G_{k-1}(p, a) + S[p, a, b], in O(k N^3) — for every budget at once, like the first.

Combining units under a MAC budget is a multiple-choice knapsack: each unit picks one k, costing
k * macs_u and erring e_u(k). The Lagrangian sweep solves min sum e_u(k_u) + lambda * MACs exactly
for every lambda by walking the units' lower convex hulls in order of decreasing error saved per MAC
(every prefix is a Lagrangian optimum); the knapsack DP over binned MACs also finds the points off
the hulls.

Timesteps (BOSS-style): choose K of M fine-grid timesteps, index 0 first; a jump i -> j costs
J[i, j] (one solver step from grid point i straight to j, against the fine trajectory; j = M is the
end of sampling). The path with exactly K jumps from 0 to M is another Bellman recurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def segment_costs(distance: np.ndarray) -> np.ndarray:
    """C[a, b] (0 <= a < b <= N): cost of computing at a and reusing at a+1..b-1; inf elsewhere."""
    d = np.asarray(distance, dtype=float)
    n = d.shape[0]
    upper = np.triu(d, k=1)                                    # only s > a counts
    cs = np.concatenate([np.zeros((n, 1)), np.cumsum(upper, axis=1)], axis=1)   # cs[a, j] = sum_{s<j}
    c = np.full((n + 1, n + 1), np.inf)
    for a in range(n):
        c[a, a + 1:] = cs[a, a + 1:n + 1] - cs[a, a + 1]
    return c


def bellman_all_budgets(costs: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Best cost and compute steps for every budget k = 1..N (index k-1) given C from `segment_costs`."""
    n = costs.shape[0] - 1
    f = np.full((n + 1, n + 1), np.inf)        # f[k, j]: k segments covering [0, j)
    arg = np.zeros((n + 1, n + 1), dtype=int)
    f[1, 1:] = costs[0, 1:]
    for k in range(2, n + 1):
        total = f[k - 1][:, None] + costs       # [a, b]
        arg[k] = np.argmin(total, axis=0)
        f[k] = total[arg[k], np.arange(n + 1)]
    best = f[1:, n]
    paths = []
    for k in range(1, n + 1):
        steps, j = [], n
        for kk in range(k, 1, -1):
            j = int(arg[kk, j])
            steps.append(j)
        paths.append([0] + sorted(steps))
    return best, paths


def served_costs(reuse: np.ndarray, forecasts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """cell[p + 1, a, s]: the cost of serving step s > a when the last computes were p < a (p = -1:
    only a) — the least of the reuse distance D[a, s] and each forecast's F_m[p, a, s] (inf where a
    forecast is undefined) — and choice[p + 1, a, s]: 0 for reuse, m + 1 for forecast m."""
    d = np.asarray(reuse, dtype=float)
    n = d.shape[0]
    options = [np.broadcast_to(d[None, :, :], (n + 1, n, n))]
    for f in forecasts:
        f = np.asarray(f, dtype=float)
        padded = np.full((n + 1, n, n), np.inf)
        padded[1:] = f                           # p = -1 (one compute so far) cannot forecast
        options.append(padded)
    stack = np.stack(options)                     # [m, p+1, a, s]
    choice = np.argmin(stack, axis=0)
    return np.take_along_axis(stack, choice[None], axis=0)[0], choice


def bellman_two_history(cell: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Best cost and compute steps for every budget k = 1..N, from `served_costs`' cell costs.

    State (k, p, a): k computes so far, the last at a, the one before at p (p = -1 for k = 1, whose
    only compute is step 0). h[k, p+1, a] = min_q h[k-1, q+1, p] + S[q+1, p, a], where S sums the
    served cells strictly between p and a; the plan ends serving a+1..N-1."""
    n = cell.shape[1]
    later = np.arange(n)[None, None, :] > np.arange(n)[None, :, None]              # s > a
    cs = np.concatenate([np.zeros((n + 1, n, 1)), np.cumsum(np.where(later, cell, 0.0), axis=2)], axis=2)
    seg = np.where(np.arange(n + 1)[None, None, :] > np.arange(n)[None, :, None], cs, np.inf)  # [q+1, p, b]
    h = np.full((n + 1, n + 1, n), np.inf)
    h[1, 0, 0] = 0.0
    arg = np.zeros((n + 1, n + 1, n), dtype=int)
    for k in range(2, n + 1):
        for p in range(n - 1):
            total = h[k - 1][:, p][:, None] + seg[:, p, :n]     # [q+1, a]
            best = np.argmin(total, axis=0)
            h[k, p + 1] = total[best, np.arange(n)]
            arg[k, p + 1] = best
    costs = np.full(n, np.inf)
    paths: list[list[int]] = []
    for k in range(1, n + 1):
        end = h[k] + seg[:, :, n]                              # [p+1, a]
        p1, a = np.unravel_index(int(np.argmin(end)), end.shape)
        costs[k - 1] = float(end[p1, a])
        steps, kk, p1, a = [int(a)], k, int(p1), int(a)
        while kk > 1:
            steps.append(p1 - 1)
            p1, a, kk = int(arg[kk, p1, a]), p1 - 1, kk - 1
        paths.append(sorted(steps))
    return costs, paths


def served_modes(choice: np.ndarray, steps: Sequence[int], n: int) -> dict[int, int]:
    """For a path's compute steps, the option `served_costs` chose at every served step (0 reuse,
    m + 1 forecast m)."""
    out: dict[int, int] = {}
    computes = sorted(steps)
    for i, a in enumerate(computes):
        p = computes[i - 1] if i else -1
        end = computes[i + 1] if i + 1 < len(computes) else n
        for s in range(a + 1, end):
            out[s] = int(choice[p + 1, a, s])
    return out


@dataclass(frozen=True)
class Unit:
    """One independently scheduled unit: its error for k = 1..N computes and its MACs per compute."""

    errors: np.ndarray          # [N], errors[k-1] = best error with k computes
    macs: float


def _lower_hull(errors: np.ndarray) -> list[int]:
    """Indices (k-1) on the lower convex hull of (k, error), from k=1 (cheapest) upward."""
    hull: list[int] = []
    for i in range(len(errors)):
        if not np.isfinite(errors[i]):
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the segment a -> i
            if (errors[b] - errors[a]) * (i - a) >= (errors[i] - errors[a]) * (b - a):
                hull.pop()
            else:
                break
        hull.append(i)
    # keep only the part where error decreases (more compute never pays otherwise)
    out = [hull[0]]
    for i in hull[1:]:
        if errors[i] < errors[out[-1]]:
            out.append(i)
    return out


def lagrangian_front(units: Sequence[Unit]) -> list[list[int]]:
    """Every Lagrangian-optimal choice (k per unit), from all-minimal compute to the full hull ends."""
    hulls = [_lower_hull(u.errors) for u in units]
    choice = [h[0] for h in hulls]
    edges = []
    for ui, (u, h) in enumerate(zip(units, hulls)):
        for a, b in zip(h, h[1:]):
            saved = (u.errors[a] - u.errors[b]) / max(u.macs * (b - a), 1e-30)
            edges.append((-saved, ui, a, b))
    edges.sort()
    out = [[c + 1 for c in choice]]
    for _, ui, a, b in edges:
        choice[ui] = b
        out.append([c + 1 for c in choice])
    return out


def knapsack_front(units: Sequence[Unit], bins: int = 400) -> list[list[int]]:
    """Multiple-choice knapsack over MACs binned into `bins`: the best choice for every total budget,
    keeping only budgets that strictly lower the error (a front, cheapest first)."""
    total = sum(u.macs * len(u.errors) for u in units)
    scale = bins / max(total, 1e-30)
    best = np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for u in units:
        n = len(u.errors)
        w = [max(1, int(round(u.macs * k * scale))) if u.macs > 0 else 0 for k in range(1, n + 1)]
        size = len(best) + max(w)
        nxt = np.full(size, np.inf)
        pick = np.zeros(size, dtype=int)
        for k in range(n):
            if not np.isfinite(u.errors[k]):
                continue
            cand = np.full(size, np.inf)
            cand[w[k]:w[k] + len(best)] = best + u.errors[k]
            better = cand < nxt
            nxt[better], pick[better] = cand[better], k
        back.append((pick, np.array(w)))
        best = nxt
    out, last = [], np.inf
    for budget in range(len(best)):
        if best[budget] < last - 1e-12:
            last = best[budget]
            choice, b = [], budget
            for pick, w in reversed(back):
                k = int(pick[b])
                choice.append(k + 1)
                b -= int(w[k])
            out.append(list(reversed(choice)))
    return _prune(units, out)


def _prune(units: Sequence[Unit], choices: list[list[int]]) -> list[list[int]]:
    """Drop choices dominated in (true MACs, error): binning can rank two equal-MAC choices apart."""
    scored = sorted(((sum(u.macs * k for u, k in zip(units, ch)), sum(u.errors[k - 1] for u, k in zip(units, ch)), ch)
                     for ch in choices), key=lambda t: (t[0], t[1]))
    out, last = [], np.inf
    for _, err, ch in scored:
        if err < last - 1e-12:
            out.append(ch)
            last = err
    return out


def boss_path(jumps: np.ndarray, k: int) -> tuple[float, list[int]]:
    """Exactly `k` jumps from grid index 0 to the end M = jumps.shape[0] - 1; returns (cost, the k
    visited grid indices, 0 first)."""
    m = jumps.shape[0] - 1
    if not 1 <= k <= m:
        raise ValueError(f"cannot choose {k} of {m} timesteps")
    f = np.full((k + 1, m + 1), np.inf)
    arg = np.zeros((k + 1, m + 1), dtype=int)
    f[0, 0] = 0.0
    j = np.asarray(jumps, dtype=float)
    for step in range(1, k + 1):
        total = f[step - 1][:, None] + j
        arg[step] = np.argmin(total, axis=0)
        f[step] = total[arg[step], np.arange(m + 1)]
    path, node = [], m
    for step in range(k, 0, -1):
        node = int(arg[step, node])
        path.append(node)
    return float(f[k, m]), sorted(path)


def spread(values: Sequence[float], count: int) -> list[int]:
    """Indices of up to `count` entries whose values are closest to evenly spaced targets between
    their minimum and maximum (distinct indices, in increasing value)."""
    v = np.asarray(values, dtype=float)
    if len(v) <= count:
        return list(np.argsort(v))
    targets = np.linspace(v.min(), v.max(), count)
    chosen: list[int] = []
    for t in targets:
        order = np.argsort(np.abs(v - t))
        for i in order:
            if int(i) not in chosen:
                chosen.append(int(i))
                break
    return sorted(chosen, key=lambda i: v[i])
