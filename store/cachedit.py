"""Translate a schedule into a cache-dit DBCache config with a static steps computation mask, or say
exactly why it cannot be one.

What cache-dit's static mask can express (read from cache-dit's `DBCacheConfig`, `load_configs` and
cache manager): one list of transformer blocks; at a step whose mask entry is 1 every block computes;
at a step whose entry is 0 the first `Fn_compute_blocks` blocks (at least 1) and the last
`Bn_compute_blocks` compute and the blocks between them are replaced by the residual they added at the
last computed step. So a plan fits when
- it samples the scheduler's own timesteps: cache-dit configures caching only, never which
  timesteps or sigmas the scheduler samples, so a schedule with explicit ones has no cache-dit form;
- the model has a single block group (FLUX's dual + single lists and UNets do not map);
- every cell computes ('1') or reuses ('0'): a skip, a forecast or any other mode of the table has no
  place in a static mask (cache-dit's calibrators forecast every non-computed block, never chosen
  cells), and within a block all components agree at every step (cache-dit reuses whole blocks, not
  attention or feed-forward alone);
- every step computes all blocks, or computes exactly the same leading Fn >= 1 and trailing Bn blocks
  and reuses the contiguous range between them.
The reuse itself differs: cache-dit adds back the middle range's cached residual, cachesearch reuses
each component's pre-gate output and re-applies the current gate. The measured metrics in a cache-dit
file are cachesearch's and will not match cache-dit's numerically; the header comment says so.

Load the written file with `cache_dit.enable_cache(pipe, **cache_dit.load_configs(path))`.
"""

from __future__ import annotations

from typing import Any

from schedules import COMPUTE, MODE_TABLE, REUSE, Schedule

from .errors import ExportError


def _block_modes(schedule: Schedule, group: str, components: tuple[str, ...], step: int) -> str:
    """One mode character per block at `step`, requiring all components of a block to agree."""
    rows = {c: schedule.plan[group][c][step] for c in components}
    num_blocks = len(next(iter(rows.values())))
    out = []
    for block in range(num_blocks):
        modes = {c: rows[c][block] for c in components}
        other = {c: m for c, m in modes.items() if m not in (COMPUTE, REUSE)}
        if other:
            named = ", ".join(f"{c} '{m}' ({MODE_TABLE[m].name})" for c, m in other.items())
            raise ExportError(f"does not fit cache-dit: step {step}, block {block}: {named}; cache-dit's static "
                              "mask only computes or reuses blocks")
        if len(set(modes.values())) > 1:
            comp = [c for c, m in modes.items() if m == COMPUTE]
            reuse = [c for c, m in modes.items() if m == REUSE]
            raise ExportError(f"does not fit cache-dit: step {step}, block {block} computes {comp} but reuses "
                              f"{reuse}; cache-dit reuses whole blocks, so all components of a block must agree")
        out.append(next(iter(modes.values())))
    return "".join(out)


def _split(row: str) -> tuple[int, int] | None:
    """(Fn, Bn) for a row '1'*Fn + '0'*m + '1'*Bn with m >= 1; None for an all-compute row."""
    if REUSE not in row:
        return None
    first, last = row.index(REUSE), row.rindex(REUSE)
    if COMPUTE in row[first:last + 1]:
        inner = [i for i in range(first, last + 1) if row[i] == COMPUTE]
        raise ValueError(f"computes block(s) {inner} between reused blocks {first} and {last}")
    return first, len(row) - 1 - last


def cache_dit_config(schedule: Schedule) -> dict[str, Any]:
    """The `cache_config` section for cache-dit's `load_configs`, or `ExportError` saying why not."""
    groups = schedule.model.block_groups
    if schedule.sampling.explicit is not None:
        kind, values = schedule.sampling.explicit
        raise ExportError(f"does not fit cache-dit: the schedule samples {len(values)} explicit {kind} "
                          f"({', '.join(f'{v:g}' for v in values[:3])}, ...) and cache-dit configures caching only, "
                          "not which timesteps the scheduler samples; export it as a cachesearch schedule, which "
                          "apply_schedule makes the pipeline sample")
    if schedule.model.family == "unet":
        raise ExportError("does not fit cache-dit: cache-dit caches lists of transformer blocks, and this "
                          f"schedule is for a UNet ({schedule.model.transformer_class}) planned per down/mid/up block")
    if len(groups) != 1:
        raise ExportError(f"does not fit cache-dit: the plan has {len(groups)} block groups "
                          f"({', '.join(g.name for g in groups)}) and a static cache-dit mask is written here for "
                          "models with one transformer block list")
    group = groups[0]
    mask: list[int] = []
    split: tuple[int, int] | None = None
    split_step = -1
    for step in range(schedule.num_steps):
        row = _block_modes(schedule, group.name, group.components, step)
        try:
            fb = _split(row)
        except ValueError as exc:
            raise ExportError(f"does not fit cache-dit: step {step} {exc}; cache-dit reuses one contiguous "
                              "range of middle blocks") from None
        if fb is None:
            mask.append(1)
            continue
        if fb[0] < 1:
            raise ExportError(f"does not fit cache-dit: step {step} reuses block 0; cache-dit always computes at "
                              "least the first block (Fn_compute_blocks >= 1)")
        if split is not None and fb != split:
            raise ExportError(
                f"does not fit cache-dit: step {split_step} computes the first {split[0]} and last {split[1]} "
                f"blocks but step {step} computes the first {fb[0]} and last {fb[1]}; cache-dit uses one "
                "Fn_compute_blocks/Bn_compute_blocks for all steps")
        split, split_step = fb, step
        mask.append(0)
    fn, bn = split if split is not None else (1, 0)
    leading = next((i for i, m in enumerate(mask) if m == 0), len(mask))
    return {
        "Fn_compute_blocks": fn,
        "Bn_compute_blocks": bn,
        "num_inference_steps": schedule.num_steps,
        "steps_computation_mask": mask,
        "steps_computation_policy": "static",
        "max_warmup_steps": leading,
        "warmup_interval": 1,
        "max_cached_steps": -1,
        "max_continuous_cached_steps": -1,
        "enable_separate_cfg": schedule.sampling.cfg == "sequential",
    }


def cache_dit_yaml(schedule: Schedule, header: list[str]) -> str:
    """The YAML file text: comment header (provenance, metrics, caveat) and the `cache_config` section."""
    import yaml

    lines = [f"# {h}" for h in header]
    lines += [
        "# Load: cache_dit.enable_cache(pipe, **cache_dit.load_configs('<this file>'))",
        "# Note: cache-dit reuses the cached residual of the middle blocks; cachesearch measured the metrics",
        "# above with its own per-component reuse, so cache-dit's quality will be close but not identical.",
    ]
    body = yaml.safe_dump({"cache_config": cache_dit_config(schedule)}, sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body
