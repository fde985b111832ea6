"""Load the study's pipeline: the embedded model, a diffusers hub id, or a local folder.

Hub ids and local folders go through diffusers' own `DiffusionPipeline.from_pretrained` (or the
class the config names), so any family diffusers can load (PixArt-alpha/Sigma, FLUX, SD3, DiT, UNet
pipelines) loads here; the pipeline class comes from the folder's `model_index.json` unless named.
A local folder is read with `local_files_only=True`: a study never reaches the network by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import EvaluationConfig


class ModelLoadError(RuntimeError):
    """The configured model could not be loaded; the message says which and why."""


def load_model(config: EvaluationConfig | str) -> Any:
    """The ready pipeline on `config.device` in `config.dtype`, progress bars off, scheduler swapped
    if the config names one. A string is a model (`"embedded"`, a hub id or a local folder) with the
    default evaluation settings: `load_model("embedded")`."""
    import diffusers
    import torch

    config = as_config(config)
    device = torch.device(config.resolved_device())
    dtype = config.torch_dtype()
    if config.is_embedded:
        try:
            from .embedded import load_embedded_pipeline
        except ImportError as exc:
            raise ModelLoadError(f"the embedded model is not available in this install ({exc})") from exc
        pipe = load_embedded_pipeline(device=device, dtype=dtype)
    else:
        cls = getattr(diffusers, config.pipeline_class) if config.pipeline_class else diffusers.DiffusionPipeline
        local = Path(config.model).expanduser()
        kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
        if local.exists():
            source = str(local)
            kwargs["local_files_only"] = True
        else:
            source = config.model
            if config.revision:
                kwargs["revision"] = config.revision
        try:
            pipe = cls.from_pretrained(source, **kwargs)
        except Exception as exc:  # diffusers raises many types; the user needs which model and why
            raise ModelLoadError(f"could not load {config.model!r} with {cls.__name__}.from_pretrained: "
                                 f"{_one_line(exc)}") from exc
        pipe = pipe.to(device)
    if config.scheduler:
        scheduler_cls = getattr(diffusers, config.scheduler)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def as_config(config: EvaluationConfig | str) -> EvaluationConfig:
    """An `EvaluationConfig` as is; a model string becomes one with default settings."""
    if isinstance(config, EvaluationConfig):
        return config
    if isinstance(config, (str, Path)):
        from pydantic import ValidationError
        try:
            return EvaluationConfig(model=str(config))
        except ValidationError as exc:
            raise ModelLoadError(f"model {str(config)!r}: {exc.errors()[0]['msg']}") from None
    raise TypeError(f"load_model takes an EvaluationConfig or a model string ('embedded', a hub id or a local "
                    f"folder), not {type(config).__name__}")


def locate_model(config: EvaluationConfig) -> None:
    """Make sure the model's files are here before a study writes anything: the embedded model and
    local folders are; a hub id is fetched into the Hugging Face cache (or, offline, must be there).
    Raises `ModelLoadError` in one line naming the model and the problem."""
    local = Path(config.model).expanduser()
    if config.is_embedded or local.exists():
        return
    import diffusers
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE)
    try:   # diffusers' own choice of files (only what from_pretrained reads), into the usual cache
        diffusers.DiffusionPipeline.download(config.model, revision=config.revision, local_files_only=offline)
    except Exception as exc:  # hub, network and cache errors come in many types; all mean "not here"
        where = "is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE)" if offline \
            else f"could not be fetched from the hub ({_one_line(exc)})"
        raise ModelLoadError(f"model {config.model!r} {where}; give a local folder, 'embedded', or a "
                             "cached hub id") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _dtype_keyword() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (the old name now warns); older releases only know
    `torch_dtype` and would silently ignore `dtype`."""
    from diffusers.utils import deprecation_utils
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
