"""Evaluation experiments as YAML: drafters, the runs to compare, benchmarks, temperatures and size profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, PositiveInt, field_validator, model_validator

from ..configfile import Strict, read_yaml, validate
from ..eval_sets import BENCHMARKS
from ..head import head_method
from ..policies import POLICIES, policy_spec
from ..settings import numerics_dtype
from ..target import DEFAULT_TARGET
from ..tree import CPU_TREE, TreeSettings

AVERAGE = "average"   # not an engine policy: a weight-averaged head decoded with `single`
BASELINES = ("generate", "prompt-lookup")


class DrafterSpec(Strict):
    """A trained head on disk; `method` defaults to what its config.json says (eagle2 when absent)."""

    path: Optional[Path] = None          # None: an untrained random head (for smoke runs and tests)
    method: Optional[Literal["eagle2", "hass"]] = None
    seed: int = 0                        # random heads only

    @field_validator("path")
    @classmethod
    def _expand(cls, v: Optional[Path]) -> Optional[Path]:
        return v.expanduser() if v is not None else None

    def resolved_method(self) -> str:
        return self.method or head_method(self.path)


class RunSpec(Strict):
    """One row of the tables: a policy over named drafters (`average` sweeps `alphas` between two heads)."""

    policy: str
    drafters: list[str] = Field(default_factory=list)
    alphas: list[float] = Field(default_factory=list)
    tree: Optional[TreeSettings] = None               # overrides the experiment's tree (e.g. a budget merge at 2x nodes)
    temperatures: Optional[list[float]] = None  # a subset of the experiment's temperatures
    label: Optional[str] = None

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v != AVERAGE and v not in POLICIES:
            raise ValueError(f"unknown policy {v!r}; choose one of {', '.join((*POLICIES, AVERAGE))}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> "RunSpec":
        if self.policy != AVERAGE:
            spec = policy_spec(self.policy)
            if spec.needs_drafters and not self.drafters:
                raise ValueError(f"policy {self.policy!r} needs drafters")
            if spec.max_drafters is not None and len(self.drafters) > spec.max_drafters:
                raise ValueError(f"policy {self.policy} takes at most {spec.max_drafters} drafter(s), got "
                                 f"{len(self.drafters)}")
        if self.policy == AVERAGE:
            if len(self.drafters) != 2 or not self.alphas:
                raise ValueError("policy average takes two drafters and a list of alphas")
            if any(not 0.0 < a < 1.0 for a in self.alphas):
                raise ValueError("alphas must lie strictly between 0 and 1 (the endpoints are the single drafters)")
        elif self.alphas:
            raise ValueError("alphas are for policy average only")
        return self


class EvalConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    target: str = DEFAULT_TARGET
    dtype: str = "auto"
    numerics: Literal["fast", "exact"] = "fast"   # exact: fp32 (taps_engine.settings.numerics_dtype)
    # T=0 engine runs replayed against the plain greedy answer (taps_engine/replay.py): exact τ at a fraction of
    # the cost, no speed figures; exact step for step with numerics exact (fp32)
    replay: bool = False
    # prompts replayed in lock step, each head drafting all of their trees in one forward per tree level
    replay_lanes: int = Field(16, ge=1)
    # live prompts decoded in lock step (taps_engine/lockstep.py): their drafting and verification batched. A
    # record's seconds are then its share of the batch's time (throughput, not one request's latency), so speed
    # comparisons with the one-at-a-time transformers baselines keep the default 1
    live_lanes: int = Field(1, ge=1)
    # live engine runs verify along the accepted paths only (lockstep.py's `walk_batch`): the steps tree
    # verification takes (equal in fp32 up to rounding ties), for accepted + 1 target tokens per step instead of the
    # whole tree; for acceptance studies at T>0 (records have no time)
    path_verification: bool = False
    seed: int = 0
    threads: Optional[int] = Field(None, ge=1)
    tree: TreeSettings = CPU_TREE
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS), min_length=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 1.0], min_length=1)
    # per benchmark (one number for all, or per benchmark name); None = the full set
    n_prompts: Optional[Union[PositiveInt, dict[str, PositiveInt]]] = None
    prompt_seed: Optional[int] = None   # draw the prompts at random with this seed instead of taking the first ones
    seeds: int = Field(1, ge=1)         # at T>0: samples per prompt, each with its own sampling seed
    max_new_tokens: int = Field(128, ge=1)
    baselines: list[Literal["generate", "prompt-lookup"]] = Field(default_factory=lambda: list(BASELINES))
    drafters: dict[str, DrafterSpec] = Field(default_factory=dict)
    runs: list[RunSpec] = Field(min_length=1)
    # pairs of run ids (A, B): the report gives τ(B) − τ(A) with a paired bootstrap interval
    comparisons: list[tuple[str, str]] = Field(default_factory=list)

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, v: list[str]) -> list[str]:
        unknown = [b for b in v if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
        return v

    def only(self, benchmarks: list[str]) -> "EvalConfig":
        """This experiment on some of its benchmarks: a report of those whose records are complete while the others
        are still running, or a run of one benchmark first."""
        unknown = [b for b in benchmarks if b not in self.benchmarks]
        if unknown:
            raise ValueError(f"benchmark(s) {unknown} are not in this experiment ({', '.join(self.benchmarks)})")
        return self.model_copy(update={"benchmarks": [b for b in self.benchmarks if b in benchmarks]})

    def prompts_for(self, benchmark: str) -> int | None:
        n = self.n_prompts
        return n.get(benchmark) if isinstance(n, dict) else n

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, v: list[float]) -> list[float]:
        if any(t < 0 for t in v):
            raise ValueError("temperatures must be >= 0")
        return v

    @model_validator(mode="after")
    def _references(self) -> "EvalConfig":
        numerics_dtype(self.dtype, self.numerics)
        if isinstance(self.n_prompts, dict) and set(self.n_prompts) - set(self.benchmarks):
            raise ValueError(f"n_prompts names benchmarks not run: {sorted(set(self.n_prompts) - set(self.benchmarks))}")
        for run in self.runs:
            missing = [d for d in run.drafters if d not in self.drafters]
            if missing:
                raise ValueError(f"run {run.policy} uses undeclared drafter(s) {missing}")
            if run.temperatures and any(t not in self.temperatures for t in run.temperatures):
                raise ValueError(f"run {run.policy}: temperatures {run.temperatures} not in {self.temperatures}")
        return self


def load_eval_config(path: str | Path, profile: str | None = None) -> EvalConfig:
    """The file's top-level settings, overlaid with one entry of its `profiles` mapping (e.g. small, paper);
    a profile's `extra_runs` are appended to the runs."""
    raw = read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise ValueError(f"{path}: profiles must be a mapping of name -> settings")
    if profile is not None:
        if profile not in profiles:
            raise ValueError(f"{path}: no profile {profile!r}; available: {', '.join(profiles) or 'none'}")
        overlay = profiles[profile] or {}
        if not isinstance(overlay, dict):
            raise ValueError(f"{path}: profile {profile!r} must be a mapping")
        extra = overlay.pop("extra_runs", None) or []
        if not isinstance(extra, list):
            raise ValueError(f"{path}: profile {profile!r}: extra_runs must be a list of runs")
        raw = {**raw, **overlay, "name": f"{raw.get('name', 'eval')}-{profile}"}
        raw["runs"] = list(raw.get("runs") or []) + extra
    return validate(EvalConfig, raw, path)
