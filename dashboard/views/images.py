"""Images page: the scheduled images next to the all-compute reference for the calibration prompts,
with an amplified difference, from the thumbnails the store keeps."""

from __future__ import annotations

import io
from typing import Any

import streamlit as st
from PIL import Image, ImageChops, UnidentifiedImageError

from .. import data
from ..shell import Context
from .common import need_study, pick_evaluation


def difference(reference: bytes, scheduled: bytes, gain: float = 4.0) -> bytes | None:
    """|scheduled - reference| x gain as PNG, or None when the two cannot be compared."""
    try:
        a = Image.open(io.BytesIO(reference)).convert("RGB")
        b = Image.open(io.BytesIO(scheduled)).convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None
    if a.size != b.size:
        b = b.resize(a.size)
    diff = ImageChops.difference(a, b).point(lambda v: min(255, int(v * gain)))
    out = io.BytesIO()
    diff.save(out, format="PNG")
    return out.getvalue()


def prompt_texts(config: dict[str, Any], n: int) -> list[str]:
    """Prompt captions if the study config lists them (a list under `prompts`, also one level down),
    else `prompt i`."""
    found: Any = config.get("prompts")
    if not isinstance(found, list):
        for value in config.values():
            if isinstance(value, dict) and isinstance(value.get("prompts"), list):
                found = value["prompts"]
                break
    texts = [str(p) for p in found] if isinstance(found, list) else []
    return [texts[i] if i < len(texts) else f"prompt {i}" for i in range(n)]


def render(ctx: Context) -> None:
    st.header("Images")
    if not need_study(ctx):
        return
    assert ctx.study is not None and ctx.info is not None
    record = pick_evaluation(ctx, "images")
    if record is None:
        return
    reference = data.reference_thumbnails(ctx.url, ctx.study)
    scheduled = data.thumbnails(ctx.url, record.id, record.n_thumbnails)
    if not scheduled:
        with_images = ctx.table(ctx.study).frame.query("n_thumbnails > 0")["id"].tolist()
        st.info(f"Evaluation #{record.id} has no stored images (the search keeps thumbnails for "
                f"{len(with_images)} evaluations of this study" + (", e.g. #" + ", #".join(
                    map(str, with_images[-5:])) if with_images else "") + ").")
    if not reference:
        st.info("This study stored no reference (all-compute) images.")
    if not scheduled and not reference:
        return
    width = st.slider("Image width", 64, 512, 192, step=32, key="image_width")
    show_diff = st.toggle("Show difference (x4)", value=True, key="image_diff")
    n = max(len(reference), len(scheduled))
    captions = prompt_texts(ctx.info.config, n)
    header = st.columns([2, 3, 3, 3] if show_diff else [2, 3, 3])
    header[1].markdown("**reference (all compute)**")
    header[2].markdown(f"**evaluation #{record.id}** ({record.compute_fraction or 0:.0%} computed)")
    if show_diff:
        header[3].markdown("**difference**")
    for i in range(n):
        cols = st.columns([2, 3, 3, 3] if show_diff else [2, 3, 3])
        cols[0].write(captions[i])
        ref = reference[i] if i < len(reference) else None
        img = scheduled[i] if i < len(scheduled) else None
        _show(cols[1], ref, width, "no reference image")
        _show(cols[2], img, width, "no image")
        if show_diff:
            _show(cols[3], difference(ref, img) if ref and img else None, width, "–")


def _show(col: Any, png: bytes | None, width: int, missing: str) -> None:
    if png:
        col.image(png, width=width)
    else:
        col.caption(missing)
