"""`EvaluationConfig`: everything a study fixes about how schedules are scored.

A self-contained pydantic v2 model so the search engineer can embed it in the study YAML as one
section. Every check that can fail before work starts is done here, at validation time, with a
field-level message: a missing local model path or prompt file, an unknown metric, a plug-in metric
whose local weights or package is missing. Nothing is skipped silently.

Two hashes pin what results mean:
- `model_signature()`: the model (id or a content fingerprint of a local folder) + dtype +
  sampling settings. A changed setting gives a new signature, so references never go stale.
- `prompt_set_hash()`: the signature + prompts + seeds. Results are comparable iff it is equal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

EMBEDDED = "embedded"
DTYPES = ("float32", "float16", "bfloat16")
EMBEDDED_DEFAULT_METRICS = ("latent_mse", "psnr", "ssim", "judge_adherence", "judge_fd")
DEFAULT_METRICS = ("latent_mse", "psnr", "ssim")


class MetricSpec(BaseModel):
    """One metric: a registry name, plus a local weights path for plug-ins and free options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str | None = Field(default=None, description="local weights (plug-in metrics only; never downloaded)")
    options: dict[str, Any] = Field(default_factory=dict)


class LatencyConfig(BaseModel):
    """Latency is timed on the scoring calls themselves, so it costs no extra images.

    `warmup` untimed calls and `repeats` timed calls give each worker its all-compute reference
    latency; a schedule gets extra timed calls only when its scoring made fewer than
    `min_timed_calls` pipeline calls.  Why re-time: a search runs for hours on machines whose load
    changes (other jobs, thermal limits); a reference timed once at start-up would turn a change of
    load into a change of "speedup".  Every `reference_every` evaluations the worker times one more
    all-compute call, and the reference is the median of the last `reference_window` such timings.
    """

    model_config = ConfigDict(extra="forbid")

    warmup: int = Field(default=1, ge=0)
    repeats: int = Field(default=3, ge=1)
    min_timed_calls: int = Field(default=1, ge=1)
    reference_every: int = Field(default=8, ge=0, description="re-time the all-compute reference after every N "
                                                              "evaluations (0 = only at start-up)")
    reference_window: int = Field(default=3, ge=1, description="recent reference timings whose median is used")
    model: bool = Field(default=False, description=(
        "fit a latency cost model (schedules.latency) at start-up from timed calibration runs and store its "
        "predicted speedup with every result (latency_speedup_model): a cost objective a searcher can "
        "predict before any image, with none of the timing noise"))
    model_repeats: int = Field(default=2, ge=1, description="timed runs per calibration schedule (interleaved)")


class SharingConfig(BaseModel):
    """Prefix-shared evaluation (`evaluators.trajectory`): a schedule whose first k steps equal an
    earlier one's starts from that run's step-k snapshot instead of step 0 — bit-identical results,
    fewer denoising steps. Snapshots are kept per batch of (prompt, seed) pairs, least recently used
    dropped beyond `memory_mb`; a run saves one where another schedule of the same request branches
    off its path, and every `save_every` steps (0: only those branch points) for later requests."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    memory_mb: float = Field(default=512.0, gt=0, description="snapshot memory per worker (on its device)")
    save_every: int = Field(default=2, ge=0, description="also snapshot every N steps (0 = branch points only)")


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray cluster address ('auto', 'ray://host:10001'); "
                                                          "None starts a local cluster unless one is initialised")
    num_actors: int | None = Field(default=None, ge=1, description="default: as many as the cluster holds when each "
                                   "reserves a GPU share or a custom resource (one per GPU), else one")
    cpus_per_actor: float = Field(default=1.0, gt=0)
    gpus_per_actor: float | None = Field(default=None, ge=0, description="GPU share per actor: 1 = one actor per GPU, "
                                         "0.5 = two per GPU (default: 1 when the cluster has GPUs, else 0)")
    resources_per_actor: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="Ray custom resources each actor reserves, which places the actors on the "
        "nodes offering them (e.g. {evaluator: 1} with `ray start --resources='{\"evaluator\": 2}'`)")
    task_timeout_s: float | None = Field(default=1800.0, gt=0)
    max_retries: int = Field(default=2, ge=0, description="resubmissions after an actor dies mid-task")
    worker_niceness: int = Field(default=0, ge=0, le=19, description="niceness of the Ray workers of a cluster "
                                 "this pool starts (Ray's own default, 15, starves evaluation on a busy machine)")
    start_attempts: int = Field(default=2, ge=1, description="tries to start a local Ray cluster (Ray gives a "
                                "node 30 s to come up, which a loaded machine can miss)")
    startup_timeout_s: float | None = Field(default=3600.0, gt=0, description="how long to wait for the evaluator "
                                            "actors to load the model and compute references")

    @field_validator("resources_per_actor")
    @classmethod
    def _custom_only(cls, v: dict[str, float]) -> dict[str, float]:
        for name in v:
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name!r} is not a custom resource: use cpus_per_actor / gpus_per_actor")
        return v


class EvaluationConfig(BaseModel):
    """How a study scores schedules: model, sampling, prompts x seeds, metrics, pool."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    model: str = Field(default=EMBEDDED, description="'embedded', a diffusers hub id, or a local folder")
    pipeline_class: str | None = Field(default=None,
                                       description="diffusers pipeline class; default: from model_index.json")
    revision: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = Field(default="auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    num_threads: int | None = Field(default=None, ge=1, description="torch intra-op CPU threads per worker (None: "
                                    "torch's default; Ray CPU actors: cpus_per_actor). 1 is much faster on a busy CPU")
    height: int | None = Field(default=None, ge=8)
    width: int | None = Field(default=None, ge=8)
    num_inference_steps: int = Field(default=20, ge=1)
    guidance_scale: float = Field(default=4.0, ge=0)
    scheduler: str | None = Field(default=None, description="diffusers scheduler class replacing the pipeline's")
    pipeline_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of every "
                                            "pipeline call (e.g. use_resolution_binning: false); part of the signature")
    prompts: str = Field(default="calibration",
                         description="built-in set name or a file (one per line, or a JSON list)")
    num_prompts: int | None = Field(default=None, ge=1, description="use only the first n prompts")
    seeds: list[int] | None = Field(default=None, description="default: the embedded model's seeds, else [0, 1]")
    batch_size: int | None = Field(default=32, ge=1, description="(prompt, seed) pairs per pipeline call (None: all "
                                   "in one call); every batch is also one latency sample")
    metrics: list[MetricSpec] | None = Field(default=None, description="registry names or {name, path, options}")
    n_thumbnails: int = Field(default=4, ge=0)
    thumbnail_size: int = Field(default=128, ge=8)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    sharing: SharingConfig = Field(default_factory=SharingConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    cache_dir: str = Field(default=".cache/cachesearch", description="reference outputs (safetensors)")
    profile_pairs: int = Field(default=4, ge=1, description="(prompt, seed) pairs used by profile()")

    # ------------------------------------------------------------------ validation
    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str) -> str:
        if v == EMBEDDED:
            return v
        if _looks_like_path(v) and not Path(v).expanduser().exists():
            raise ValueError(f"local model folder {v!r} does not exist")
        return v

    @field_validator("pipeline_class")
    @classmethod
    def _known_pipeline(cls, v: str | None) -> str | None:
        if v is not None:
            import diffusers
            if not hasattr(diffusers, v):
                raise ValueError(f"diffusers has no pipeline class {v!r}")
        return v

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str | None) -> str | None:
        if v is not None:
            import diffusers
            if not hasattr(diffusers, v) or not v.endswith("Scheduler"):
                raise ValueError(f"diffusers has no scheduler class {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        import torch
        if v == "auto":
            return v
        try:
            torch.device(v)
        except RuntimeError as exc:
            raise ValueError(f"not a torch device: {v!r}") from exc
        return v

    @field_validator("prompts")
    @classmethod
    def _prompts_exist(cls, v: str) -> str:
        from .prompts import BUILTIN_SETS
        if v in BUILTIN_SETS:
            return v
        if not Path(v).expanduser().is_file():
            raise ValueError(f"{v!r} is neither a built-in prompt set ({', '.join(BUILTIN_SETS)}) nor a file")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_ok(cls, v: list[int] | None, info: ValidationInfo) -> list[int]:
        if v is None:
            return _default_seeds(info.data.get("model") == EMBEDDED)
        if not v:
            raise ValueError("needs at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list):
            raise ValueError("must be a list of metric names or {name, path, options} objects")
        return [{"name": m} if isinstance(m, str) else m for m in v]

    @field_validator("metrics")
    @classmethod
    def _metrics_usable(cls, v: list[MetricSpec] | None, info: ValidationInfo) -> list[MetricSpec]:
        """Defaults by model, then every metric checks its weights/package now, before any work."""
        from .metrics import validate_metric
        model = info.data.get("model", EMBEDDED)
        if v is None:
            v = [MetricSpec(name=n) for n in default_metrics(model)]
        if not v:
            raise ValueError("needs at least one metric")
        seen: set[str] = set()
        for i, spec in enumerate(v):
            if spec.name in seen:
                raise ValueError(f"metrics[{i}]: {spec.name!r} is listed twice")
            seen.add(spec.name)
            try:
                validate_metric(spec, model)
            except ValueError as exc:
                raise ValueError(f"metrics[{i}] ({spec.name}): {exc}") from None
        return v

    @model_validator(mode="after")
    def _resolution_pair(self) -> "EvaluationConfig":
        if (self.height is None) != (self.width is None):
            raise ValueError("height and width must be given together")
        return self

    @model_validator(mode="after")
    def _ray_device(self) -> "EvaluationConfig":
        """Ray gives each GPU actor its own GPU (it sees only that one, as cuda:0): an index is meaningless."""
        if self.pool.kind == "ray" and self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} names one GPU, but a Ray actor sees only the GPU Ray gives it "
                             "(pool.gpus_per_actor): use device: cuda (or auto)")
        return self

    @model_validator(mode="after")
    def _cuda_here(self) -> "EvaluationConfig":
        """A local pool needs CUDA on this machine; Ray workers may have GPUs the driver lacks."""
        import torch
        if self.pool.kind == "local" and self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested for the local pool but CUDA is not available "
                             "(use device: auto, or pool.kind: ray for GPU workers)")
        return self

    # ------------------------------------------------------------------ views
    @property
    def is_embedded(self) -> bool:
        return self.model == EMBEDDED

    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics or []]

    def resolved_device(self) -> str:
        import torch
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def torch_dtype(self) -> Any:
        import torch
        return getattr(torch, self.dtype)

    def sampling_dict(self) -> dict[str, Any]:
        """The sampling settings that change what the pipeline outputs."""
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "height": self.height, "width": self.width, "scheduler": self.scheduler,
                "pipeline_kwargs": self.pipeline_kwargs}

    def model_signature(self) -> str:
        """Stable hash of model identity (content fingerprint for local folders) + dtype + sampling.

        Recomputed on every call (cheap: configs by content, weights by size + 2 MiB) so a mutated
        config or a rewritten model folder can never be answered with a stale signature."""
        doc = {"model": _model_identity(self.model, self.revision), "pipeline_class": self.pipeline_class,
               "dtype": self.dtype, "sampling": self.sampling_dict()}
        return _sha(doc)

    def prompt_set_hash(self) -> str:
        """Stable hash of the prompts and seeds the schedules are scored on, under this signature."""
        from .prompts import load_prompts
        return _sha({"signature": self.model_signature(), "prompts": load_prompts(self),
                     "seeds": list(self.seeds or [])})


def default_metrics(model: str) -> tuple[str, ...]:
    """Fidelity metrics always; the judge's too for the embedded model when its weights ship (asking
    for a judge metric explicitly without them is a config error)."""
    if model == EMBEDDED and (Path(__file__).parent / "embedded" / "weights" / "judge.safetensors").is_file():
        return EMBEDDED_DEFAULT_METRICS
    return DEFAULT_METRICS


def _looks_like_path(v: str) -> bool:
    return v.startswith(("/", ".", "~")) or "\\" in v or v.count("/") != 1 or Path(v).exists()


def _default_seeds(embedded: bool) -> list[int]:
    if embedded:
        try:
            from .embedded import default_seeds
            return list(default_seeds())
        except ImportError:
            pass
        seeds_file = Path(__file__).parent / "embedded" / "prompts" / "seeds.json"
        if seeds_file.is_file():
            return list(json.loads(seeds_file.read_text())["seeds"])
    return [0, 1]


def _sha(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_SMALL_FILE = 1 << 20


def _model_identity(model: str, revision: str | None) -> dict[str, Any]:
    """A hub id is its name + revision; a local folder (and the embedded model's weights folder) is a
    fingerprint of its contents, stable across machines: small files (configs) by content, large
    weight files by size + hashes of their first and last MiB."""
    if model == EMBEDDED:
        folder = Path(__file__).parent / "embedded" / "weights"
        return {"embedded": _folder_fingerprint(folder) if folder.is_dir() else None}
    path = Path(model).expanduser()
    if path.exists():
        return {"local": _folder_fingerprint(path) if path.is_dir() else _file_fingerprint(path)}
    return {"hub": model, "revision": revision}


def _folder_fingerprint(folder: Path) -> str:
    entries = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        entries.append([f.relative_to(folder).as_posix(), _file_fingerprint(f)])
    return _sha(entries)


def _file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size <= _SMALL_FILE:
            h.update(fh.read())
        else:
            h.update(fh.read(_SMALL_FILE))
            fh.seek(size - _SMALL_FILE)
            h.update(fh.read(_SMALL_FILE))
    return h.hexdigest()
