"""Procedural shapes world: the images and captions the embedded model and its judge learn from.

Why geometric shapes: handwritten glyphs named in words were measured to learn slowly on this CPU
(~30% digit accuracy after 27 min), while flat colours learned at once.  Canonical anti-aliased shapes
with five compositional attributes (shape, colour, background, position, size) learn fast and still
give a caption space with real variety (~1.8k attribute combinations x several phrasings).

Held-out split (so the held-out prompt set measures generalisation, not memorisation):
* combinations: every (shape, colour, background) triple with ``(s + 2c + 3b) % 8 == 0`` never appears
  in any training image or caption.  The rule removes ~1/8 of the triples while every *pair* of those
  attributes still appears in training, so the held-out triples are new compositions of known parts.
* wordings: sentence templates and position/background phrasings are split into disjoint training and
  held-out sets; attribute words themselves are shared (the text encoder is frozen, not a thesaurus).

Everything here is deterministic given a ``numpy.random.Generator`` seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

IMAGE_SIZE = 24
_SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 175, 50),
    "cyan": (40, 210, 225),
    "blue": (40, 70, 230),
    "purple": (150, 50, 200),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (125, 125, 125),
    "white": (245, 245, 245),
    "brown": (105, 65, 30),
}
POSITIONS: tuple[str, ...] = ("center", "top left", "top right", "bottom left", "bottom right")
SIZES: tuple[str, ...] = ("small", "large")

#: attribute name -> ordered class names (the judge's heads use the same order)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "background": tuple(BACKGROUNDS),
    "position": POSITIONS,
    "size": SIZES,
}

_RADIUS = {"small": 3.6, "large": 6.2}  # half-extent in pixels


def is_valid(shape: int, color: int, background: int) -> bool:
    """A white shape on a white background is invisible: never generated, never prompted."""
    return not (ATTRIBUTES["color"][color] == "white" and ATTRIBUTES["background"][background] == "white")


def is_heldout_triple(shape: int, color: int, background: int) -> bool:
    """The combination split (see module docstring)."""
    return (shape + 2 * color + 3 * background) % 8 == 0


# ----------------------------------------------------------------------------------------- rendering


def render(attrs: Mapping[str, np.ndarray], rng: np.random.Generator) -> torch.Tensor:
    """Draw a batch of images (B x 3 x 24 x 24 float in [0, 1]) for integer attribute arrays.

    Shapes are rasterised on a 4x supersampled grid and box-filtered (anti-aliasing), with small
    jitter of position (+-0.7 px), size (+-0.4 px) and colours (+-12 levels) so the data is a
    distribution rather than 1.8k fixed pictures.
    """
    n = len(attrs["shape"])
    s = IMAGE_SIZE * _SUPERSAMPLE
    coords = (np.arange(s, dtype=np.float32) + 0.5) / _SUPERSAMPLE  # pixel units
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    radius = np.array([_RADIUS[SIZES[i]] for i in attrs["size"]], dtype=np.float32)
    radius = radius + rng.uniform(-0.4, 0.4, n).astype(np.float32)
    cx = np.empty(n, dtype=np.float32)
    cy = np.empty(n, dtype=np.float32)
    for i, (p, r) in enumerate(zip(attrs["position"], radius)):
        name = POSITIONS[p]
        lo, hi, mid = 1.0 + r, IMAGE_SIZE - 1.0 - r, IMAGE_SIZE / 2
        cx[i] = mid if name == "center" else (lo if "left" in name else hi)
        cy[i] = mid if name == "center" else (lo if "top" in name else hi)
    cx += rng.uniform(-0.7, 0.7, n).astype(np.float32)
    cy += rng.uniform(-0.7, 0.7, n).astype(np.float32)
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    r = radius[:, None, None]
    mask = np.zeros((n, s, s), dtype=bool)
    for k, shape in enumerate(SHAPES):
        idx = np.nonzero(attrs["shape"] == k)[0]
        if len(idx):
            mask[idx] = _SHAPE_MASKS[shape](dx[idx], dy[idx], r[idx])
    alpha = mask.reshape(n, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(2, 4))
    fg = np.array([COLORS[ATTRIBUTES["color"][c]] for c in attrs["color"]], dtype=np.float32)
    bg = np.array([BACKGROUNDS[ATTRIBUTES["background"][b]] for b in attrs["background"]], dtype=np.float32)
    fg = np.clip(fg + rng.uniform(-12, 12, fg.shape), 0, 255) / 255.0
    bg = np.clip(bg + rng.uniform(-12, 12, bg.shape), 0, 255) / 255.0
    img = alpha[:, None] * fg[:, :, None, None] + (1 - alpha[:, None]) * bg[:, :, None, None]
    return torch.from_numpy(img.astype(np.float32))


def _circle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return dx**2 + dy**2 <= r**2


def _square(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r


def _triangle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) * 0.58)


def _diamond(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.abs(dx) + np.abs(dy) <= 1.1 * r


def _cross(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    ax, ay, w = np.abs(dx), np.abs(dy), 0.34 * r
    return ((ax <= w) & (ay <= r)) | ((ay <= w) & (ax <= r))


def _ring(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    d2 = dx**2 + dy**2
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


_SHAPE_MASKS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "cross": _cross,
    "ring": _ring,
}


def sample_attributes(n: int, rng: np.random.Generator, split: str = "train") -> dict[str, np.ndarray]:
    """Sample ``n`` full attribute sets; ``split`` "train" avoids held-out triples, "heldout" uses only them,
    "any" allows every valid combination (used to test the judge on the whole space)."""
    out = {k: np.empty(n, dtype=np.int64) for k in ATTRIBUTES}
    i = 0
    while i < n:
        s, c, b = (int(rng.integers(len(ATTRIBUTES[k]))) for k in ("shape", "color", "background"))
        if not is_valid(s, c, b):
            continue
        held = is_heldout_triple(s, c, b)
        if (split == "train" and held) or (split == "heldout" and not held):
            continue
        out["shape"][i], out["color"][i], out["background"][i] = s, c, b
        out["position"][i] = rng.integers(len(POSITIONS))
        out["size"][i] = rng.integers(len(SIZES))
        i += 1
    return out


# ------------------------------------------------------------------------------------------ captions

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_CORNER_WORDS = {
    "top left": ("top left", "upper left"),
    "top right": ("top right", "upper right"),
    "bottom left": ("bottom left", "lower left"),
    "bottom right": ("bottom right", "lower right"),
}

# Phrasings of the position and background parts, split into training and held-out wordings.
_POS_PHRASES = {
    "train": {"corner": ("in the {p} corner", "at the {p}"), "center": ("in the center", "in the middle")},
    "heldout": {"corner": ("towards the {p}", "near the {p} corner"), "center": ("at the center", "centered")},
}
_BG_PHRASES = {
    "train": ("on a {b} background", "against a {b} background"),
    "heldout": ("over a {b} background", "in front of a {b} background"),
}

# Sentence templates: {np} = "[size] [colour] shape" (with article), {pos}, {bg} = phrases or "".
_TEMPLATES = {
    "train": (
        "{np} {pos} {bg}",
        "{np} {bg} {pos}",
        "a picture of {np} {pos} {bg}",
        "{bgcap}, {np} {pos}",
        "an image of {np} {bg} {pos}",
        "{np}",
    ),
    "heldout": (
        "there is {np} {pos} {bg}",
        "a drawing that shows {np} {bg} {pos}",
        "{bgcap}: {np} {pos}",
    ),
}


@dataclass(frozen=True)
class Caption:
    """A caption and the attributes it states (unstated attributes are absent from ``stated``)."""

    text: str
    stated: dict[str, int]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(
    attrs: Mapping[str, int], mention: Mapping[str, bool], rng: np.random.Generator, wording: str = "train"
) -> Caption:
    """Phrase one attribute set; ``mention`` says which of colour/size/position/background to state."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    shape = SHAPES[attrs["shape"]]
    words = []
    if mention.get("size"):
        words.append(pick(_SIZE_WORDS[SIZES[attrs["size"]]]))
    if mention.get("color"):
        words.append(ATTRIBUTES["color"][attrs["color"]])
    words.append(shape)
    np_ = f"{_article(words[0])} {' '.join(words)}"
    pos = ""
    if mention.get("position"):
        p = POSITIONS[attrs["position"]]
        if p == "center":
            pos = pick(_POS_PHRASES[wording]["center"])
        else:
            pos = pick(_POS_PHRASES[wording]["corner"]).format(p=pick(_CORNER_WORDS[p]))
    bg = ""
    if mention.get("background"):
        bg = pick(_BG_PHRASES[wording]).format(b=ATTRIBUTES["background"][attrs["background"]])
    templates = [t for t in _TEMPLATES[wording] if (bg or "{bgcap}" not in t) and (t != "{np}" or not (pos or bg))]
    text = pick(templates).format(np=np_, pos=pos, bg=bg, bgcap=bg[:1].upper() + bg[1:])
    text = re.sub(r"\s+", " ", text).strip()
    stated = {"shape": int(attrs["shape"])}
    for k in ("color", "size", "position", "background"):
        if mention.get(k):
            stated[k] = int(attrs[k])
    return Caption(text, stated)


_MENTION_P = {"color": 0.95, "size": 0.7, "position": 0.7, "background": 0.7}


def training_captions(n: int, seed: int) -> tuple[list[Caption], dict[str, np.ndarray]]:
    """``n`` training captions with the full attribute sets their images are drawn from."""
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(n, rng, "train")
    caps = []
    for i in range(n):
        a = {k: int(v[i]) for k, v in attrs.items()}
        mention = {k: bool(rng.random() < p) for k, p in _MENTION_P.items()}
        caps.append(make_caption(a, mention, rng, "train"))
    return caps, attrs


def build_prompt_set(name: str, n: int = 32, seed: int = 0) -> list[Caption]:
    """The built-in prompt sets (written to ``prompts/*.txt`` by ``train``).

    ``calibration``: training combinations and wordings, all five attributes stated (the search
    scores schedules on these).  ``heldout``: only held-out triples and held-out wordings; colour,
    shape and background always stated, position and size in most prompts.
    """
    rng = np.random.default_rng({"calibration": 1000, "heldout": 2000}[name] + seed)
    split, wording = ("train", "train") if name == "calibration" else ("heldout", "heldout")
    attrs = sample_attributes(n, rng, split)
    out: list[Caption] = []
    for i in range(n):
        a = {k: int(v[i]) for k, v in attrs.items()}
        full = name == "calibration" or i % 4 != 3
        mention = {"color": True, "background": True, "size": full or i % 8 == 3, "position": full or i % 8 == 7}
        out.append(make_caption(a, mention, rng, wording))
    return out


# ------------------------------------------------------------------------------------------- parsing

_COLOR_RE = "|".join(COLORS)
_BG_RE = "|".join(BACKGROUNDS)


def parse_prompt(text: str) -> dict[str, int]:
    """Read back the attributes a prompt states (attribute -> class index); unstated ones are absent.

    The background colour is the colour word right before "background"; the object colour is the
    colour word right before the shape noun (optionally after a size word).
    """
    t = text.lower()
    out: dict[str, int] = {}
    m = re.search(r"\b(" + "|".join(SHAPES) + r")\b", t)
    if m:
        out["shape"] = SHAPES.index(m.group(1))
        before = t[: m.start()].split()
        for w in reversed(before[-2:]):
            if w in COLORS:
                out["color"] = ATTRIBUTES["color"].index(w)
                break
    m = re.search(r"\b(" + _BG_RE + r")\s+background\b", t)
    if m:
        out["background"] = ATTRIBUTES["background"].index(m.group(1))
    for name, syns in _CORNER_WORDS.items():
        if any(re.search(r"\b" + s + r"\b", t) for s in syns):
            out["position"] = POSITIONS.index(name)
    if "position" not in out and re.search(r"\b(center|centre|middle|centered)\b", t):
        out["position"] = POSITIONS.index("center")
    for name, syns in _SIZE_WORDS.items():
        if any(re.search(r"\b" + s + r"\b", t) for s in syns):
            out["size"] = SIZES.index(name)
    return out


def attributes_to_tensor(stated: Sequence[Mapping[str, int]]) -> dict[str, torch.Tensor]:
    """Stack per-prompt attribute dicts into attr -> LongTensor, -1 where an attribute is unstated."""
    return {k: torch.tensor([s.get(k, -1) for s in stated], dtype=torch.long) for k in ATTRIBUTES}
