"""JSON for the store's JSON columns: exact round trip of non-finite floats, and a clear error for
values that are not JSON (searcher state must never need pickle).

PSNR of an unchanged image is +inf and a broken metric may be NaN; plain `json.dumps` writes the
non-standard tokens `Infinity`/`NaN`, which PostgreSQL rejects, and `allow_nan=False` would refuse
them. So non-finite floats are written as ``{"$float": "inf"}`` objects and turned back on read.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import StoreError

_TAG = "$float"
_NAMES = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StoreError(f"{where}: key {k!r} is {type(k).__name__}; JSON object keys must be strings")
            out[k] = _encode(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # numpy scalars are common in metrics; accept them as the Python number they hold
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _encode(item(), where)
    raise StoreError(f"{where} is a {type(value).__module__}.{type(value).__name__}, which is not JSON "
                     "(the store keeps JSON only, never pickle: convert it to numbers, strings, lists, dicts)")


def dumps(value: Any) -> str:
    """Serialise for a JSON column. Fast path for plain finite data; tagged floats otherwise."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError):
        return json.dumps(_encode(value, "value"), allow_nan=False, separators=(",", ":"))


def check(value: Any, where: str) -> Any:
    """Validate (and normalise numpy scalars in) a value before it is written, naming the bad path."""
    return _encode(value, where) if value is not None else None


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _TAG in obj and obj[_TAG] in _NAMES:
        return _NAMES[obj[_TAG]]
    return obj


_DECODER = json.JSONDecoder(object_hook=_hook)


def loads(text: str | bytes) -> Any:
    """Inverse of `dumps`. Untagged text (the common case) takes json's plain C path."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if _TAG not in text:
        return json.loads(text)
    return _DECODER.decode(text)


def decode(value: Any) -> Any:
    """Undo the float tagging on an already-parsed value (values `check` normalised in memory)."""
    if isinstance(value, dict):
        if len(value) == 1 and _TAG in value and value[_TAG] in _NAMES:
            return _NAMES[value[_TAG]]
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
