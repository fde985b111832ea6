"""The study config: one YAML file, validated by pydantic with field-level errors before any work.

    study: embedded-ecad                 # name in the store (default: file name + time)
    db: sqlite:///cachesearch.db         # any SQLAlchemy URL
    evaluation: {model: embedded, num_prompts: 8, seeds: [0, 1]}   # evaluators.EvaluationConfig
    space: {kinds: [cache]}
    objectives:                          # roles explicit (or from the name); reference = hypervolume corner
      - {name: psnr, role: quality, reference: 15}
      - {name: mac_speedup, role: cost, reference: 1}
    searcher: {name: ecad, seed: 0, settings: {population: 24}}
    budget: {evaluations: 200, wall_time_s: 1800}

`evaluation` is the evaluators' own model, embedded as is, so its checks (missing weights, unknown
metric, missing prompt file) report as `evaluation.<field>`. `synthetic` replaces it with the analytic
test pool (mechanics only). Objectives become `schedules.objectives.Objective`s, their roles checked
here: a cost listed as quality (or a metric as cost) is an error naming both. The `searcher:` section
is one model per entry of `search.registry.SEARCHERS`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from evaluators.config import EvaluationConfig
from schedules.objectives import COST_NAMES, QUALITY, Objective, ObjectiveError, Objectives
from store import STUDY_NAME_RULE, StudyNameError, check_study_name
from store.records import STALE_AFTER_INTERVALS

from .registry import SEARCHERS
from .space import KINDS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectiveConfig(_Strict):
    name: str = Field(description=f"a metric of the evaluation (psnr, ssim, latent_mse, ...) or a cost: "
                                  f"{', '.join(COST_NAMES)}")
    role: Literal["quality", "cost"] | None = Field(None, description=(
        "quality or cost; default from the name (the cost names are costs, any metric is quality); given, "
        "it must agree with the name"))
    maximize: bool | None = Field(None, description="default: the metric's own direction (latent_mse, judge_fd: "
                                                    "lower is better), true for speedups")
    reference: float | None = Field(None, description="hypervolume reference: the worst value that still counts "
                                                      "(required for a quality objective; costs default to 1.0)")

    @model_validator(mode="after")
    def _role(self) -> "ObjectiveConfig":
        try:
            objective = self.resolved()
        except ObjectiveError as exc:
            raise ValueError(str(exc)) from None
        if objective.role == QUALITY and objective.reference is None:
            raise ValueError(f"reference: the quality objective '{self.name}' needs a hypervolume reference, the "
                             "worst value that still counts (e.g. 15 for psnr)")
        return self

    def resolved(self) -> Objective:
        """The objective: direction and unit from the evaluators' metric registry unless given."""
        maximize, unit = self.maximize, ""
        if self.name not in COST_NAMES:
            from evaluators.metrics import REGISTRY, higher_is_better, metric_unit
            if maximize is None and self.name in REGISTRY:
                maximize = higher_is_better(self.name)
            unit = metric_unit(self.name)
        return Objective(self.name, True if maximize is None else maximize, self.role, self.reference, unit)


class SpaceConfig(_Strict):
    kinds: list[Literal["cache", "timesteps", "architecture"]] = Field(
        default_factory=lambda: ["cache"], min_length=1, description=f"any of {KINDS}")
    min_changes: int = Field(1, ge=1, description="slots that must differ from all-compute (excludes it)")
    modes: list[str] = Field(default_factory=lambda: ["1", "0"], description=(
        "cache space: the plan characters a cell may take (schedules.MODE_TABLE: '1' compute, '0' reuse, "
        "'F' forecast, 'D' damped forecast, '-' skip); default reuse-only, ECAD's language"))
    fine_steps: int | None = Field(None, ge=2, description="timesteps space: size M of the fine grid, the "
                                   "scheduler's own M-step timesteps (or sigmas); M = the study's steps makes "
                                   "the fine trajectory the reference run itself")
    num_train_timesteps: int = Field(1000, ge=2, description="synthetic pool only: the grid's timestep range")
    grid: list[float] | None = Field(None, description="timesteps space: an explicit descending fine grid, in "
                                     "the scheduler's kind (timesteps, or sigmas for flow matching)")
    min_steps: int | None = Field(None, ge=2, description="timesteps space: fewest steps a schedule samples "
                                                          "(default: a quarter of the study's steps, at least 2)")
    max_steps: int | None = Field(None, ge=2, description="timesteps space: most steps (default: the study's)")

    @model_validator(mode="after")
    def _grid(self) -> "SpaceConfig":
        if "timesteps" in self.kinds and self.fine_steps is None and self.grid is None:
            raise ValueError("the timesteps space needs fine_steps (or an explicit grid)")
        if self.grid is not None and any(a <= b for a, b in zip(self.grid, self.grid[1:])):
            raise ValueError("grid must be strictly descending")
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        return self


class BudgetConfig(_Strict):
    evaluations: int | None = Field(200, ge=1, description="finished evaluations in the study")
    wall_time_s: float | None = Field(None, gt=0, description="wall time over all runs of the study")
    evaluator_seconds: float | None = Field(None, gt=0, description="worker time incl. profiling runs")
    images: float | None = Field(None, gt=0, description="image-equivalents generated (steps run / N, summed)")


class SyntheticConfig(_Strict):
    """The analytic pool of `search.synthetic` (tests and demos of mechanics; not a model)."""

    num_blocks: int = Field(4, ge=1)
    num_steps: int = Field(8, ge=2)
    seed: int = 0
    delay: float = Field(0.0, ge=0)


class _SearcherBase(_Strict):
    seed: int = 0


def _searcher_config(name: str, settings: type[BaseModel]) -> type[_SearcherBase]:
    """`{name, seed, settings}` of one registered searcher, its settings checked by its own model."""
    return create_model(f"{name.capitalize()}SearcherConfig", __base__=_SearcherBase,
                        name=(Literal[name], ...), settings=(settings, Field(default_factory=settings)))


SEARCHER_CONFIGS = tuple(_searcher_config(n, cls.Settings) for n, cls in SEARCHERS.items())
SearcherConfig = Annotated[Union[SEARCHER_CONFIGS], Field(discriminator="name")]   # type: ignore[valid-type]


class RacingConfig(_Strict):
    """Multi-fidelity racing (evaluators.racing): a candidate is scored batch by batch and stopped once
    it is dominated, beyond `z` paired standard errors, by the front member at least as fast; needs a
    per-sample quality metric, MAC speedup as the cost, and several batches (`evaluation.batch_size`
    below the number of prompt x seed pairs). Stopped candidates are stored as partial ('raced')."""

    enabled: bool = False
    z: float = Field(2.0, gt=0, description="standard errors of the paired difference the candidate must lose by")
    min_pairs: int = Field(2, ge=2, description="pairs scored before a candidate can be stopped")


class BaselineConfig(_Strict):
    """A peer method scored beside the search (one entry of `evaluators.baselines.BASELINES`). A list
    value in `settings` is a sweep: every combination is scored."""

    method: str = Field(description="a registered peer (`cachesearch peers` lists them; unknown ones are "
                                    "refused before the study starts)")
    settings: dict[str, Any] = Field(default_factory=dict, description="the method's settings; lists sweep")

    def expanded(self) -> list[tuple[str, dict[str, Any]]]:
        from evaluators.baselines import BASELINES, expand_settings
        entry = BASELINES.get(self.method)
        return [(self.method, s) for s in expand_settings(self.settings, entry.defaults if entry else None)]


class StudyConfig(_Strict):
    study: str | None = Field(None, description=f"study name in the store (default: config file name + time); "
                                                f"{STUDY_NAME_RULE}")
    db: str | None = Field(None, description="SQLAlchemy URL or SQLite file (`--db` overrides it; without either: "
                                             "$CACHESEARCH_DB, else sqlite:///cachesearch.db)")
    evaluation: EvaluationConfig | None = Field(None, description="how schedules are scored (default: the "
                                                                  "embedded model); see evaluators.EvaluationConfig")
    synthetic: SyntheticConfig | None = None
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: list[ObjectiveConfig] | None = Field(None, min_length=2)
    searcher: SearcherConfig
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    batch_size: int | None = Field(None, ge=1, description="schedules per dispatch (default: pool workers)")
    racing: RacingConfig = Field(default_factory=RacingConfig)
    baselines: list[BaselineConfig] = Field(default_factory=list, description=(
        "peer methods scored on the same prompts, seeds and metrics before the search (stored as baseline "
        "results, shown on the frontier and by `cachesearch compare`; never candidates)"))
    seed_studies: list[str] = Field(default_factory=list, description="fronts of these studies seed the searcher")
    seed_schedules: list[str] = Field(default_factory=list, description="schedule files seeding the searcher")
    heartbeat_s: float = Field(30.0, gt=0, description=f"a running study records a heartbeat this often; one silent "
                                                       f"for {STALE_AFTER_INTERVALS} intervals shows as stale and "
                                                       "--resume takes it over")

    @field_validator("study")
    @classmethod
    def _study_name(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_study_name(v)
            except StudyNameError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _evaluation(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("synthetic") is None and data.get("evaluation") is None:
            data = {**data, "evaluation": {}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "StudyConfig":
        if self.synthetic is not None and self.evaluation is not None:
            raise ValueError("give either `evaluation` or `synthetic`, not both")
        if self.synthetic is not None and self.baselines:
            raise ValueError("baselines: peer methods need a real model (`evaluation`), not the synthetic pool")
        metrics = ["quality"] if self.synthetic is not None else self.evaluation.metric_names()
        for i, o in enumerate(self.objective_configs()):
            if o.name not in COST_NAMES and o.name not in metrics:
                raise ValueError(f"objectives[{i}].name: {o.name!r} is not a metric of this evaluation "
                                 f"(metrics: {', '.join(metrics)}; costs: {', '.join(COST_NAMES)})")
        try:
            self.resolved_objectives()
        except ObjectiveError as exc:       # no quality or no cost objective, or one listed twice
            raise ValueError(f"objectives: {exc}") from None
        for i, o in enumerate(self.objective_configs()):
            if o.name == "latency_speedup_model" and self.evaluation is not None and not self.evaluation.latency.model:
                raise ValueError(f"objectives[{i}].name: latency_speedup_model needs the latency model: set "
                                 "evaluation.latency.model: true")
        return self

    def objective_configs(self) -> list[ObjectiveConfig]:
        if self.objectives is not None:
            return self.objectives
        quality = "quality" if self.synthetic is not None else "psnr"
        return [ObjectiveConfig(name=quality, reference=0.0 if self.synthetic else 15.0),
                ObjectiveConfig(name="mac_speedup", reference=1.0)]

    def resolved_objectives(self) -> Objectives:
        return Objectives(o.resolved() for o in self.objective_configs())

    def to_document(self) -> dict[str, Any]:
        """JSON-able config as stored with the study."""
        doc = self.model_dump(mode="json", exclude={"evaluation"})
        doc["evaluation"] = self.evaluation.model_dump(mode="json") if self.evaluation is not None else None
        return doc


class ConfigError(ValueError):
    """A config that cannot be used; `errors` lists (field path, message)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source, self.errors = source, errors
        if len(errors) == 1:   # the usual case: one line
            loc, msg = errors[0]
            super().__init__(f"{source}: invalid study config: {loc + ': ' if loc else ''}{msg}")
            return
        lines = "\n".join(f"  {loc or '(top level)'}: {msg}" for loc, msg in errors)
        super().__init__(f"{source}: invalid study config\n{lines}")


_PATH = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): ")


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in SEARCHERS and out == "searcher":
            continue   # the discriminator tag pydantic inserts; the user wrote `searcher.<field>`
        else:
            out += f".{p}" if out else str(p)
    return out


def validate_config(doc: Any, source: str = "config") -> StudyConfig:
    if not isinstance(doc, dict):
        raise ConfigError(source, [("", f"must be a mapping of sections, got {type(doc).__name__}")])
    try:
        return StudyConfig.model_validate(doc)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            loc = _loc(tuple(e["loc"]))
            inner = _PATH.match(msg)
            if inner:   # a cross-field check names its own field: "objectives[0].name: ..."
                loc = f"{loc}.{inner.group(1)}" if loc else inner.group(1)
                msg = msg[inner.end():]
            errors.append((loc, msg))
        raise ConfigError(source, errors) from None


def load_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", "file not found")])
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(str(path), [("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")]) from None
    return validate_config(doc, str(path))
