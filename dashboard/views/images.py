"""Images page: the scheduled images next to the all-compute reference for the calibration prompts,
with an amplified difference, from the thumbnails the store keeps. Each row is captioned with its
prompt and seed (recorded with the study), and small images are enlarged with nearest-neighbour
sampling: a 16-pixel thumbnail shows its pixels instead of a blur."""

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
    """Caption per thumbnail: "prompt · seed N" from the (prompt, seed) pairs the search recorded
    (`thumbnails` in the study config); for older studies the prompts the config lists (a list under
    `prompts`, also one level down); else `image i`."""
    pairs = config.get("thumbnails")
    if isinstance(pairs, list) and pairs:
        texts = [f"{p.get('prompt', '')} · seed {p.get('seed', '?')}" if isinstance(p, dict) else str(p)
                 for p in pairs]
    else:
        found: Any = config.get("prompts")
        if not isinstance(found, list):
            for value in config.values():
                if isinstance(value, dict) and isinstance(value.get("prompts"), list):
                    found = value["prompts"]
                    break
        texts = [str(p) for p in found] if isinstance(found, list) else []
    return [texts[i] if i < len(texts) else f"image {i}" for i in range(n)]


def enlarged(png: bytes, width: int) -> tuple[bytes, int]:
    """The image scaled up by the largest whole factor that fits `width`, nearest-neighbour (pixels
    stay sharp; the browser then shows it at its own size), and that size."""
    try:
        img = Image.open(io.BytesIO(png))
        img.load()
    except (UnidentifiedImageError, OSError):
        return png, width
    factor = max(1, width // max(1, img.width))
    if factor == 1:
        return png, min(width, img.width)
    big = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, format="PNG")
    return out.getvalue(), big.width


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
        body, shown = enlarged(png, width)
        col.image(body, width=shown)
    else:
        col.caption(missing)
