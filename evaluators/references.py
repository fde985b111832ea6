"""All-compute reference outputs per (prompt, seed), computed once and cached on disk.

One safetensors file per pair under `<cache_dir>/references/<key[:2]>/<key>.safetensors`, holding the
image (3 x H x W, [0, 1]) and the final latents. The key hashes the model signature (model identity
by content, dtype, every sampling setting, pipeline kwargs), the device type (CPU and CUDA kernels
differ in the last bits), the prompt and the seed, so a changed setting can only miss, never hit a
stale file. The file's metadata repeats what it was made from and is checked on load; a corrupt or
foreign file is recomputed. Writes go to a temporary file and are renamed, so concurrent workers
sharing a cache folder never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .config import EvaluationConfig

FORMAT = "cachesearch.reference/1"


@dataclass
class Reference:
    image: torch.Tensor             # 3 x H x W float32 in [0, 1], CPU
    latents: torch.Tensor | None    # final latents of this pair, CPU


class ReferenceStore:
    def __init__(self, config: EvaluationConfig, device_type: str) -> None:
        self.root = Path(config.cache_dir).expanduser() / "references"
        self.signature = config.model_signature()
        self.device_type = device_type
        self.hits = 0
        self.misses = 0

    def key(self, prompt: str, seed: int) -> str:
        doc = {"signature": self.signature, "device": self.device_type, "prompt": prompt, "seed": int(seed)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def path(self, prompt: str, seed: int) -> Path:
        k = self.key(prompt, seed)
        return self.root / k[:2] / f"{k}.safetensors"

    def has(self, prompt: str, seed: int) -> bool:
        return self.path(prompt, seed).is_file()

    def load(self, prompt: str, seed: int) -> Reference | None:
        path = self.path(prompt, seed)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            if (meta.get("format") != FORMAT or meta.get("signature") != self.signature
                    or meta.get("prompt") != prompt or meta.get("seed") != str(int(seed))):
                return None
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            return None
        return Reference(tensors["image"], tensors.get("latents"))

    def save(self, prompt: str, seed: int, ref: Reference) -> None:
        path = self.path(prompt, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"image": ref.image.detach().float().cpu().contiguous()}
        if ref.latents is not None:
            tensors["latents"] = ref.latents.detach().cpu().contiguous()
        meta = {"format": FORMAT, "signature": self.signature, "device": self.device_type, "prompt": prompt,
                "seed": str(int(seed))}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_or_compute(self, batches: list[list[tuple[str, int]]],
                       compute: Callable[[list[str], list[int]], list[Reference]],
                       progress: Callable[[int, int], None] | None = None) -> list[Reference]:
        """References for every pair of every batch (flattened, request order). Missing pairs are
        computed batch by batch (each batch keeps its shape, as in evaluation) and saved.
        `progress(pairs done, pairs in all)` is called after each batch."""
        out: list[Reference] = []
        total = sum(len(b) for b in batches)
        for batch in batches:
            found = [self.load(p, s) for p, s in batch]
            if all(r is not None for r in found):
                self.hits += len(batch)
                out.extend(found)  # type: ignore[arg-type]
                if progress is not None:
                    progress(len(out), total)
                continue
            self.hits += sum(r is not None for r in found)
            self.misses += sum(r is None for r in found)
            computed = compute([p for p, _ in batch], [s for _, s in batch])
            for (p, s), old, new in zip(batch, found, computed):
                if old is None:
                    self.save(p, s, new)
                out.append(old if old is not None else new)
            if progress is not None:
                progress(len(out), total)
        return out
