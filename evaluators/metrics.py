"""The metric registry: named scorers a study picks in its config.

Every metric sees the evaluation batch by batch (`update`, returning one value per (prompt, seed) or
None for set-level metrics) and gives one aggregate at the end (`result`). An instance is created
once per worker (plug-in weights load once) and reused for every schedule: `begin()` resets it.

Built in:
- `latent_mse`   mean squared error of the final latents vs the same-seed all-compute reference (lower better)
- `psnr`         PSNR of the decoded images vs the reference, data range 1, capped at 100 dB (the
                 all-compute schedule would otherwise be +inf, which no objective can use)
- `ssim`         SSIM of the images vs the reference (torchmetrics, Gaussian 11 px window or smaller)
- `judge_adherence`  embedded model only: fraction of the attributes each prompt states that the
                 embedded judge reads back from the image (higher better)
- `judge_fd`     embedded model only: Frechet distance between the judge features of the scheduled
                 images and those of the all-compute *reference* images of the same prompts and seeds
                 (lower better; 0 for all compute). Against the reference rather than real generator
                 images because the search asks "how far did caching move the distribution", and the
                 reference is exactly the distribution the uncached model draws; set-level, no
                 per-prompt values.
Plug-ins (weights only from a configured local `path`, checked at config validation; never downloaded):
- `clip_score`   100 * max(cos(image, text), 0) with a local transformers CLIP folder (higher better)
- `imagereward`  ImageReward score; needs the `image-reward` package and a local checkpoint
- `lpips`        LPIPS vs the reference (torchmetrics' LPIPS head, shipped inside torchmetrics, on a
                 torchvision backbone loaded from a local state-dict file; needs torchvision)
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from .config import EvaluationConfig, MetricSpec

PSNR_CAP_DB = 100.0


class MetricError(RuntimeError):
    """A metric cannot be computed for this evaluation (e.g. the pipeline exposes no latents)."""


@dataclass
class Batch:
    """One pipeline call's outputs next to the same pairs' references (all on the metric device)."""

    prompts: list[str]
    seeds: list[int]
    images: torch.Tensor                  # B x 3 x H x W float32 in [0, 1]
    latents: torch.Tensor | None          # B x ... final latents (before decoding)
    ref_images: torch.Tensor
    ref_latents: torch.Tensor | None
    offset: int = 0                       # position of the first pair in the study's pair list; the
                                          # references never change, so metrics may cache their work by it


class Metric:
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    per_sample: ClassVar[bool] = True
    unit: ClassVar[str] = ""          # for axis titles and tables ('dB'); empty for unitless scores

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        self.spec = spec
        self.device = device

    @classmethod
    def validate(cls, spec: "MetricSpec", model: str) -> None:
        """Raise ValueError (a clear, user-facing message) if the metric cannot run for `model`
        (the config's model field). Runs at config validation, before any work."""

    def begin(self) -> None:
        """Reset per-evaluation state."""

    def update(self, batch: Batch) -> list[float] | None:
        raise NotImplementedError

    def result(self, values: list[float]) -> float:
        return float(sum(values) / len(values)) if values else math.nan


# ------------------------------------------------------------------------------ fidelity
class LatentMSE(Metric):
    name = "latent_mse"
    higher_is_better = False

    def update(self, batch: Batch) -> list[float]:
        if batch.latents is None or batch.ref_latents is None:
            raise MetricError("latent_mse: the pipeline exposes no final latents")
        diff = (batch.latents.float() - batch.ref_latents.float()).flatten(1)
        return diff.pow(2).mean(1).tolist()


class PSNR(Metric):
    name = "psnr"
    higher_is_better = True
    unit = "dB"

    def update(self, batch: Batch) -> list[float]:
        from torchmetrics.functional.image import peak_signal_noise_ratio
        psnr = peak_signal_noise_ratio(batch.images.float(), batch.ref_images.float(), data_range=1.0,
                                       reduction="none", dim=(1, 2, 3))
        return psnr.clamp(max=PSNR_CAP_DB).nan_to_num(PSNR_CAP_DB).tolist()


class SSIM(Metric):
    name = "ssim"
    higher_is_better = True

    def update(self, batch: Batch) -> list[float]:
        from torchmetrics.functional.image import structural_similarity_index_measure
        side = min(batch.images.shape[-2:])
        kernel = min(11, side - (1 - side % 2))  # odd and no larger than the image
        ssim = structural_similarity_index_measure(batch.images.float(), batch.ref_images.float(),
                                                   data_range=1.0, kernel_size=kernel, reduction="none")
        return ssim.reshape(-1).tolist()


# ------------------------------------------------------------------------------ embedded judge
class _JudgeMetric(Metric):
    _judges: ClassVar[dict[str, Any]] = {}   # one judge per device per process, shared by both metrics

    @classmethod
    def validate(cls, spec: "MetricSpec", model: str) -> None:
        if model != "embedded":
            raise ValueError("the embedded judge only scores the embedded model's images (model: embedded)")
        from .embedded.judge import JUDGE_WEIGHTS
        if not JUDGE_WEIGHTS.exists():
            raise ValueError(f"the embedded judge's weights {JUDGE_WEIGHTS} are missing from this install")

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        super().__init__(spec, device)
        key = str(device)
        if key not in _JudgeMetric._judges:   # loaded when the worker starts: a broken judge stops it there
            from .embedded import load_judge
            _JudgeMetric._judges[key] = load_judge(device)
        self._judge = _JudgeMetric._judges[key]

    def judge(self) -> Any:
        return self._judge


class JudgeAdherence(_JudgeMetric):
    name = "judge_adherence"
    higher_is_better = True

    def update(self, batch: Batch) -> list[float]:
        with torch.no_grad():
            return self.judge().adherence(batch.images.float(), batch.prompts).float().reshape(-1).tolist()


class JudgeFD(_JudgeMetric):
    name = "judge_fd"
    higher_is_better = False
    per_sample = False

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        super().__init__(spec, device)
        self._ref_cache: dict[tuple[int, int], torch.Tensor] = {}   # reference features, once per worker

    def begin(self) -> None:
        self._feats: list[torch.Tensor] = []
        self._ref_feats: list[torch.Tensor] = []

    def update(self, batch: Batch) -> None:
        judge = self.judge()
        key = (batch.offset, batch.images.shape[0])
        with torch.no_grad():
            self._feats.append(judge.features(batch.images.float()).double().cpu())
            if key not in self._ref_cache:
                self._ref_cache[key] = judge.features(batch.ref_images.float()).double().cpu()
        self._ref_feats.append(self._ref_cache[key])
        return None

    def result(self, values: list[float]) -> float:
        import warnings

        from .embedded import frechet_distance
        # 128 x 128 float64 linear algebra is too small for threads, and a multi-threaded OpenBLAS
        # woken right after torch's kernels took 0.2-0.3 s here instead of 10 ms: one BLAS thread.
        with warnings.catch_warnings(), _one_blas_thread():
            warnings.simplefilter("ignore")   # fewer images than feature dims: singular covariances, expected
            return float(frechet_distance(torch.cat(self._feats), torch.cat(self._ref_feats)))


def _one_blas_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ------------------------------------------------------------------------------ plug-ins
def _require_path(spec: "MetricSpec", what: str, directory: bool = False) -> Path:
    if not spec.path:
        raise ValueError(f"needs `path`: {what} (weights are never downloaded)")
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise ValueError(f"weights path {spec.path!r} does not exist ({what})")
    if directory and not path.is_dir():
        raise ValueError(f"weights path {spec.path!r} must be a folder ({what})")
    return path


def _require_package(module: str, pip_name: str, metric: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{metric} needs the package '{pip_name}' (pip install {pip_name}), which is not installed")


def _to_pil(images: torch.Tensor) -> list[Any]:
    from PIL import Image
    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class CLIPScore(Metric):
    name = "clip_score"
    higher_is_better = True

    @classmethod
    def validate(cls, spec: "MetricSpec", model: str) -> None:
        path = _require_path(spec, "a local transformers CLIP folder (config.json + weights + tokenizer)",
                             directory=True)
        if not (path / "config.json").is_file():
            raise ValueError(f"{spec.path!r} has no config.json: not a transformers CLIP folder")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise ValueError(f"{spec.path!r} has no weights (*.safetensors or *.bin)")

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        super().__init__(spec, device)
        from transformers import CLIPModel, CLIPProcessor
        self.model = CLIPModel.from_pretrained(spec.path, local_files_only=True).eval().to(device)
        self.processor = CLIPProcessor.from_pretrained(spec.path, local_files_only=True)

    def update(self, batch: Batch) -> list[float]:
        inputs = self.processor(text=batch.prompts, images=_to_pil(batch.images), return_tensors="pt",
                                padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (100 * (img * txt).sum(-1).clamp(min=0)).tolist()


class ImageRewardMetric(Metric):
    name = "imagereward"
    higher_is_better = True

    @classmethod
    def validate(cls, spec: "MetricSpec", model: str) -> None:
        _require_package("ImageReward", "image-reward", "imagereward")
        _require_path(spec, "a local ImageReward checkpoint (ImageReward.pt)")
        med = spec.options.get("med_config")
        if med is None or not Path(med).expanduser().is_file():
            raise ValueError("needs options.med_config: the local med_config.json that ships with ImageReward")

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        super().__init__(spec, device)
        import ImageReward as RM
        self.model = RM.load(spec.path, device=str(device), med_config=spec.options["med_config"])

    def update(self, batch: Batch) -> list[float]:
        out = []
        with torch.no_grad():
            for prompt, image in zip(batch.prompts, _to_pil(batch.images)):
                out.append(float(self.model.score(prompt, [image])))
        return out


_LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


class LPIPS(Metric):
    name = "lpips"
    higher_is_better = False

    @classmethod
    def validate(cls, spec: "MetricSpec", model: str) -> None:
        net = spec.options.get("net", "alex")
        if net not in _LPIPS_BACKBONES:
            raise ValueError(f"options.net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
        _require_package("torchvision", "torchvision", "lpips (its backbone network)")
        _require_path(spec, f"a local torchvision {_LPIPS_BACKBONES[net]} state-dict file (*.pth)")

    def __init__(self, spec: "MetricSpec", device: torch.device) -> None:
        super().__init__(spec, device)
        import torchvision
        from torchmetrics.functional.image.lpips import _LPIPS
        net = spec.options.get("net", "alex")
        # LPIPS linear heads ship inside torchmetrics; the backbone starts random (pnet_rand) and is
        # filled from the local torchvision state dict, so nothing is downloaded.
        self.model = _LPIPS(pretrained=True, net=net, pnet_rand=True)
        backbone = getattr(torchvision.models, _LPIPS_BACKBONES[net])(weights=None)
        backbone.load_state_dict(torch.load(spec.path, map_location="cpu", weights_only=True))
        for slice_ in self.model.net.children():
            for idx, layer in slice_.named_children():
                layer.load_state_dict(backbone.features[int(idx)].state_dict())
        self.model = self.model.eval().to(device)

    def update(self, batch: Batch) -> list[float]:
        with torch.no_grad():
            d = self.model(batch.images.float() * 2 - 1, batch.ref_images.float() * 2 - 1)
        return d.reshape(-1).tolist()


REGISTRY: dict[str, type[Metric]] = {
    m.name: m for m in (LatentMSE, PSNR, SSIM, JudgeAdherence, JudgeFD, CLIPScore, ImageRewardMetric, LPIPS)
}


def validate_metric(spec: "MetricSpec", model: str) -> None:
    if spec.name not in REGISTRY:
        raise ValueError(f"unknown metric (available: {', '.join(REGISTRY)})")
    REGISTRY[spec.name].validate(spec, model)


def build_metrics(config: "EvaluationConfig", device: torch.device) -> list[Metric]:
    return [REGISTRY[spec.name](spec, device) for spec in config.metrics or []]


def higher_is_better(name: str) -> bool:
    """Direction of a metric, for searchers building objectives."""
    return REGISTRY[name].higher_is_better


def metric_unit(name: str) -> str:
    """Display unit of a metric ('dB'), '' when unitless or not a registered metric."""
    return REGISTRY[name].unit if name in REGISTRY else ""
